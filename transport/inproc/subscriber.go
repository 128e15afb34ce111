package inproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Subscriber consumes watermill messages from the bundled broker. Each
// Subscribe call is one consumer on the topic's queue; a message is handed
// out after the previous one of that subscription was acked or nacked
// (watermill's contract), and a nack requeues it. Safe for concurrent use.
type Subscriber struct {
	t   *Transport
	cfg bus.SubscriberConfig

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber makes a subscriber on the transport.
func (t *Transport) NewSubscriber(cfg bus.SubscriberConfig) (*Subscriber, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	s := &Subscriber{t: t, cfg: cfg, closing: make(chan struct{})}
	t.onClose(s.Close)
	return s, nil
}

// SubscribeInitialize declares the topic's queue and binding, so that
// messages published before Subscribe are kept.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	return s.t.Declare(context.Background(), s.cfg.Topology(topic))
}

// Subscribe starts a consumer on the topic's queue (declared first). The
// channel closes when ctx is done or the subscriber is closed; messages
// not acked by then are requeued.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	sub := &subscription{s: s, topic: topic, queue: s.cfg.Queue(topic), prefetch: s.cfg.Prefetch, out: out}
	if err := s.start(ctx, sub, sub.consume, func() { close(out) }); err != nil {
		return nil, err
	}
	return out, nil
}

// start declares sub's topic and starts its consumer, then runs consume
// on it in a goroutine until ctx is done or s closes, and calls done
// after.
func (s *Subscriber) start(ctx context.Context, sub *subscription, consume consumeFunc, done func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.SubscribeInitialize(sub.topic); err != nil {
		return fmt.Errorf("inproc: subscribe %s: %w", sub.topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	sub.base = context.WithoutCancel(ctx)
	// The consumer is registered before Subscribe returns, so that a
	// subscription is live (and competes fairly) as soon as it exists.
	ch, c, err := sub.open()
	if err != nil {
		cancel()
		return fmt.Errorf("inproc: subscribe %s: %w", sub.topic, err)
	}
	s.wg.Go(func() {
		defer done()
		defer cancel()
		sub.run(ctx, ch, c, consume)
	})
	s.wg.Go(func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	})
	return nil
}

// consumeFunc consumes from c until c or ctx ends, and closes ch.
type consumeFunc func(ctx context.Context, ch *broker.Channel, c *broker.Consumer) error

// Close stops every subscription and waits for them. Idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

type subscription struct {
	s        *Subscriber
	base     context.Context // values of the Subscribe ctx, no cancellation
	topic    string
	queue    string
	prefetch int
	out      chan<- *message.Message // unused by a batch subscription
}

// run consumes until ctx is done. When the broker cancels the consumer
// (its queue was deleted, its channel closed on an error) it declares the
// queue again and resumes after a short pause.
func (sub *subscription) run(ctx context.Context, ch *broker.Channel, c *broker.Consumer, consume consumeFunc) {
	for {
		err := consume(ctx, ch, c) // closes ch
		if ctx.Err() != nil {
			return
		}
		sub.s.t.logger.LogAttrs(ctx, slog.LevelWarn, "inproc: consumer stopped; resuming",
			slog.String("queue", sub.queue), slog.Any("error", err))
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return
		}
		ch, c, err = nil, nil, sub.s.SubscribeInitialize(sub.topic)
		if err == nil {
			ch, c, _ = sub.open()
		}
	}
}

// open starts a consumer on the queue.
func (sub *subscription) open() (*broker.Channel, *broker.Consumer, error) {
	ch, err := sub.s.t.channel()
	if err != nil {
		return nil, nil, err
	}
	if err := ch.Qos(broker.QosOptions{PrefetchCount: sub.prefetch}); err != nil {
		ch.Close()
		return nil, nil, err
	}
	c, err := ch.Consume(sub.queue, broker.ConsumeOptions{})
	if err != nil {
		ch.Close()
		return nil, nil, err
	}
	return ch, c, nil
}

// consume delivers until the consumer or ctx ends; nil ch (a failed
// reopen) returns at once.
//
// Two goroutines share the work, so that on a multi-core machine the one
// that waits for the handler does as little as possible between two
// messages: a preparer turns broker deliveries into watermill messages
// ahead of time (bounded by the prefetch window, since every delivery
// counts against it), and this one hands them out one at a time, waiting
// for each ack or nack as watermill requires. Acks go to the broker in
// batches (one Ack with Multiple) when no prepared message is waiting,
// every ackBatchSize acks, before a nack, and before the channel closes,
// so that a message acked by the handler is never requeued by the close.
func (sub *subscription) consume(ctx context.Context, ch *broker.Channel, c *broker.Consumer) (err error) {
	if ch == nil {
		return errors.New("no consumer")
	}
	acks := ackBatcher{ch: ch, max: ackBatchSize(sub.prefetch)}
	ctx, stop := context.WithCancel(ctx)
	ready := make(chan prepared, readyBuffer(sub.prefetch))
	var prepErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		prepErr = sub.prepare(ctx, c, ready)
		close(ready) // after prepErr is set
	})
	defer func() {
		stop()
		// Prepared messages never handed out: the close requeues them.
		for range ready {
		}
		wg.Wait()
		err = errors.Join(err, acks.flush())
		ch.Close() // requeues whatever was not acked
	}()
	for {
		var p prepared
		var ok bool
		select {
		case p, ok = <-ready:
		default:
			// Nothing prepared: settle what was acked, which also gives the
			// broker the prefetch credit to push more, then wait.
			if err := acks.flush(); err != nil {
				return err
			}
			p, ok = <-ready
		}
		if !ok {
			return prepErr
		}
		if err := sub.deliver(ctx, &acks, p); err != nil {
			return err
		}
	}
}

// readyBuffer bounds the messages prepared ahead of the handler.
func readyBuffer(prefetch int) int {
	return min(max(prefetch/2, 1), 32)
}

// prepared is a delivery turned into a watermill message.
type prepared struct {
	msg *message.Message
	tag uint64
}

// prepare turns deliveries into messages until the consumer or ctx ends.
func (sub *subscription) prepare(ctx context.Context, c *broker.Consumer, ready chan<- prepared) error {
	for {
		d, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		msg := toMessage(d)
		select {
		case ready <- prepared{msg: msg, tag: d.DeliveryTag}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// toMessage turns a delivery into a watermill message.
func toMessage(d broker.Delivery) *message.Message {
	props := d.Properties()
	msg := envelope.Message(props.Headers, props.MessageID, d.Body)
	if d.Redelivered {
		msg.Metadata.Set(bus.RedeliveredKey, strconv.FormatBool(true))
	}
	return msg
}

// deliver hands one message out and waits until it is settled.
func (sub *subscription) deliver(ctx context.Context, acks *ackBatcher, p prepared) error {
	// The message's context carries the subscription's values and is
	// cancelled when the message is settled or the subscription ends. It
	// does not hang off ctx's cancellation: that would register and
	// unregister a child of ctx for every message. It is made here rather
	// than by the preparer, which is the busier of the two goroutines.
	msgCtx, cancel := context.WithCancel(sub.base)
	defer cancel()
	p.msg.SetContext(msgCtx)
	select {
	case sub.out <- p.msg:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-p.msg.Acked():
		return acks.ack(p.tag)
	case <-p.msg.Nacked():
		return settleNack(acks, p.tag)
	case <-ctx.Done():
		// A handler that settles its message and then closes the
		// subscription (a graceful shutdown) makes both cases ready at
		// once, and select picks at random: the settlement wins, so that
		// an acked message is not requeued by the close.
		select {
		case <-p.msg.Acked():
			return errors.Join(ctx.Err(), acks.ack(p.tag))
		case <-p.msg.Nacked():
			return errors.Join(ctx.Err(), settleNack(acks, p.tag))
		default:
			return ctx.Err()
		}
	}
}

// settleNack flushes the acks before tag, then requeues tag.
func settleNack(acks *ackBatcher, tag uint64) error {
	if err := acks.flush(); err != nil {
		return err
	}
	return acks.ch.Nack(tag, broker.Requeue)
}

// ackBatcher collects the acks of one subscription's channel and settles
// them with one Ack(tag, Multiple). Deliveries of a subscription are
// handed out one at a time in tag order, and the channel has no other
// consumer, so every tag up to the last acked one is acked. Not safe for
// concurrent use: the subscription's goroutine owns it.
type ackBatcher struct {
	ch   *broker.Channel
	max  int
	last uint64
	n    int
}

// ackBatchSize is how many acks wait for a flush at most: a quarter of the
// prefetch window, so that the broker gets credit back well before the
// consumer's buffer runs dry, and at most 64.
func ackBatchSize(prefetch int) int {
	return min(max(prefetch/4, 1), 64)
}

func (a *ackBatcher) ack(tag uint64) error {
	a.last = tag
	a.n++
	if a.n >= a.max {
		return a.flush()
	}
	return nil
}

func (a *ackBatcher) flush() error {
	if a.n == 0 {
		return nil
	}
	a.n = 0
	if err := a.ch.Ack(a.last, broker.Multiple); err != nil {
		return fmt.Errorf("ack up to %d: %w", a.last, err)
	}
	return nil
}
