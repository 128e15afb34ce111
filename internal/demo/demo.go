// Package demo runs the bundled broker through a small checkout
// choreography and prints each step as it happens. It is what `troupe demo`
// shows a newcomer before the e-commerce example exists: the topology of
// DESIGN.md (one topic exchange, one queue per service handler, a TTL retry
// queue that dead-letters back to the work queue, a dead-letter queue)
// working on the broker core.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/troupehq/troupe/broker"
)

const bus = "troupe.events"

// Options configure a run.
type Options struct {
	// Orders is the number of orders placed.
	Orders int
	// RetryDelay is how long a failed payment waits in the retry queue.
	RetryDelay time.Duration
}

// step is one service handler: it consumes Event from its queue and emits
// the events its logic decides.
type step struct {
	service string
	queue   string
	events  []string
	handle  func(order, event string, attempt int) (emit string, err error)
}

// Tally counts how the orders ended.
type Tally struct {
	Confirmed, Cancelled, DeadLettered int
}

// Run places opts.Orders orders and waits until every one has ended
// (notified or dead-lettered), printing a line per event to w.
func Run(ctx context.Context, w io.Writer, opts Options) (Tally, error) {
	b := broker.New()
	defer b.Close()
	conn, err := b.Connect(broker.DefaultVHost)
	if err != nil {
		return Tally{}, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return Tally{}, err
	}
	steps := checkout()
	if err := declare(ch, steps, opts.RetryDelay); err != nil {
		return Tally{}, fmt.Errorf("declare topology: %w", err)
	}
	r := &run{w: w, start: time.Now(), done: make(chan struct{}), want: opts.Orders}
	dlq, err := ch.Consume("payment.charge.dlq", broker.ConsumeOptions{NoAck: true})
	if err != nil {
		return Tally{}, err
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for _, s := range steps {
		sch, err := conn.Channel()
		if err != nil {
			return Tally{}, err
		}
		wg.Go(func() { r.serve(ctx, sch, s) })
	}
	wg.Go(func() { r.watchDeadLetters(ctx, dlq) })
	for i := 1; i <= opts.Orders; i++ {
		order := fmt.Sprintf("order-%d", i)
		r.printf("%-9s emits   %-20s %s", "api", "order.placed", order)
		if err := publish(ch, "order.placed", order); err != nil {
			return Tally{}, err
		}
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return r.tally(), ctx.Err()
	}
	t := r.tally()
	r.printf("done: %d confirmed, %d cancelled, %d dead-lettered", t.Confirmed, t.Cancelled, t.DeadLettered)
	return t, nil
}

// checkout is the demo's choreography. Order 3 is declined; order 2's
// payment gateway fails once (retried after a delay); order 4's gateway is
// down for good (dead-lettered after three attempts); order 5 is out of
// stock and refunded.
func checkout() []step {
	return []step{
		{service: "payment", queue: "payment.charge", events: []string{"order.placed"},
			handle: func(order, _ string, attempt int) (string, error) {
				switch {
				case order == "order-2" && attempt == 1, order == "order-4":
					return "", errors.New("gateway timeout")
				case order == "order-3":
					return "payment.failed", nil
				}
				return "payment.captured", nil
			}},
		{service: "payment", queue: "payment.refund", events: []string{"inventory.failed"},
			handle: func(string, string, int) (string, error) { return "payment.refunded", nil }},
		{service: "inventory", queue: "inventory.reserve", events: []string{"payment.captured"},
			handle: func(order, _ string, _ int) (string, error) {
				if order == "order-5" {
					return "inventory.failed", nil
				}
				return "inventory.reserved", nil
			}},
		{service: "order", queue: "order.status", events: []string{"inventory.reserved", "payment.failed", "payment.refunded"},
			handle: func(_, event string, _ int) (string, error) {
				if event == "inventory.reserved" {
					return "order.confirmed", nil
				}
				return "order.cancelled", nil
			}},
		{service: "notify", queue: "notify.send", events: []string{"order.confirmed", "order.cancelled"},
			handle: func(string, string, int) (string, error) { return "", nil }},
	}
}

// declare builds the topology: the bus, a work queue per step bound to its
// events, and for each a retry queue (TTL, dead-letters back to the work
// queue) and a dead-letter queue.
func declare(ch *broker.Channel, steps []step, retryDelay time.Duration) error {
	if err := ch.ExchangeDeclare(bus, broker.Topic, broker.ExchangeOptions{Durable: true}); err != nil {
		return err
	}
	for _, s := range steps {
		if _, err := ch.QueueDeclare(s.queue, broker.QueueOptions{Durable: true}); err != nil {
			return err
		}
		for _, ev := range s.events {
			if err := ch.QueueBind(s.queue, bus, ev, nil); err != nil {
				return err
			}
		}
		retry := broker.Table{
			"x-message-ttl":             retryDelay.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": s.queue,
		}
		if _, err := ch.QueueDeclare(s.queue+".retry", broker.QueueOptions{Durable: true, Args: retry}); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(s.queue+".dlq", broker.QueueOptions{Durable: true}); err != nil {
			return err
		}
	}
	return nil
}

func publish(ch *broker.Channel, event, order string) error {
	_, err := ch.Publish(bus, event, broker.Publishing{
		Properties: broker.Properties{DeliveryMode: broker.Persistent, CorrelationID: order, Type: event},
		Body:       []byte(order),
	}, broker.PublishOptions{})
	return err
}

const maxAttempts = 3

type run struct {
	w     io.Writer
	start time.Time
	want  int

	mu        sync.Mutex
	t         Tally
	done      chan struct{}
	completed bool
}

func (r *run) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "%7.1fms  %s\n", float64(time.Since(r.start).Microseconds())/1000, fmt.Sprintf(format, args...))
}

func (r *run) tally() Tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.t
}

func (r *run) count(f func(*Tally)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.t)
	if !r.completed && r.t.Confirmed+r.t.Cancelled+r.t.DeadLettered == r.want {
		r.completed = true
		close(r.done)
	}
}

// serve consumes one step's queue until ctx ends.
func (r *run) serve(ctx context.Context, ch *broker.Channel, s step) {
	if err := ch.Qos(broker.QosOptions{PrefetchCount: 10}); err != nil {
		r.printf("%-9s qos: %v", s.service, err)
		return
	}
	c, err := ch.Consume(s.queue, broker.ConsumeOptions{Tag: s.queue})
	if err != nil {
		r.printf("%-9s consume: %v", s.service, err)
		return
	}
	for {
		d, err := c.Receive(ctx)
		if err != nil {
			return
		}
		if err := r.handle(ch, s, d); err != nil {
			r.printf("%-9s error   %v", s.service, err)
			return
		}
	}
}

func (r *run) handle(ch *broker.Channel, s step, d broker.Delivery) error {
	order, event := string(d.Body), d.Properties().Type
	attempt := attempts(d) + 1
	emit, err := s.handle(order, event, attempt)
	if err != nil {
		return r.fail(ch, s, d, attempt, err)
	}
	r.printf("%-9s handles %-20s %s", s.service, event, order)
	if emit != "" {
		r.printf("%-9s emits   %-20s %s", s.service, emit, order)
		if err := publish(ch, emit, order); err != nil {
			return err
		}
	}
	switch {
	case s.service == "notify" && event == "order.confirmed":
		r.count(func(t *Tally) { t.Confirmed++ })
	case s.service == "notify":
		r.count(func(t *Tally) { t.Cancelled++ })
	}
	return ch.Ack(d.DeliveryTag, 0)
}

// fail parks a failed message in the retry queue, or after maxAttempts in
// the dead-letter queue, then acks the original.
func (r *run) fail(ch *broker.Channel, s step, d broker.Delivery, attempt int, cause error) error {
	target := s.queue + ".retry"
	if attempt >= maxAttempts {
		target = s.queue + ".dlq"
	}
	r.printf("%-9s fails   %-20s %s (attempt %d: %v) -> %s", s.service, d.Properties().Type, d.Body, attempt, cause, target)
	props := *d.Properties()
	props.Headers = broker.Table{"x-attempts": int64(attempt), "x-error": cause.Error()}
	if _, err := ch.Publish("", target, broker.Publishing{Properties: props, Body: d.Body}, broker.PublishOptions{}); err != nil {
		return err
	}
	return ch.Ack(d.DeliveryTag, 0)
}

func attempts(d broker.Delivery) int {
	n, _ := d.Properties().Headers["x-attempts"].(int64)
	return int(n)
}

func (r *run) watchDeadLetters(ctx context.Context, c *broker.Consumer) {
	for {
		d, err := c.Receive(ctx)
		if err != nil {
			return
		}
		r.printf("%-9s parks   %-20s %s: %v", "dlq", d.Properties().Type, d.Body, d.Properties().Headers["x-error"])
		r.count(func(t *Tally) { t.DeadLettered++ })
	}
}
