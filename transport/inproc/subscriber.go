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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if err := s.SubscribeInitialize(topic); err != nil {
		return nil, fmt.Errorf("inproc: subscribe %s: %w", topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *message.Message)
	sub := &subscription{s: s, base: context.WithoutCancel(ctx), topic: topic, queue: s.cfg.Queue(topic), out: out}
	// The consumer is registered before Subscribe returns, so that a
	// subscription is live (and competes fairly) as soon as it exists.
	ch, c, err := sub.open()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("inproc: subscribe %s: %w", topic, err)
	}
	s.wg.Go(func() {
		defer close(out)
		defer cancel()
		sub.run(ctx, ch, c)
	})
	s.wg.Go(func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	})
	return out, nil
}

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
	s     *Subscriber
	base  context.Context // values of the Subscribe ctx, no cancellation
	topic string
	queue string
	out   chan<- *message.Message
}

// run consumes until ctx is done. When the broker cancels the consumer
// (its queue was deleted, its channel closed on an error) it declares the
// queue again and resumes after a short pause.
func (sub *subscription) run(ctx context.Context, ch *broker.Channel, c *broker.Consumer) {
	for {
		err := sub.consume(ctx, ch, c) // closes ch
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
	if err := ch.Qos(broker.QosOptions{PrefetchCount: sub.s.cfg.Prefetch}); err != nil {
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
func (sub *subscription) consume(ctx context.Context, ch *broker.Channel, c *broker.Consumer) error {
	if ch == nil {
		return errors.New("no consumer")
	}
	defer ch.Close() // requeues whatever was not acked
	for {
		d, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if err := sub.deliver(ctx, ch, d); err != nil {
			return err
		}
	}
}

// deliver hands one message out and settles it with the broker.
func (sub *subscription) deliver(ctx context.Context, ch *broker.Channel, d broker.Delivery) error {
	props := d.Properties()
	msg := envelope.Message(props.Headers, props.MessageID, d.Body)
	if d.Redelivered {
		msg.Metadata.Set(bus.RedeliveredKey, strconv.FormatBool(true))
	}
	// The message's context carries the subscription's values and is
	// cancelled when the message is settled or the subscription ends (the
	// deferred cancel). It does not hang off ctx's cancellation: that would
	// register and unregister a child of ctx for every message.
	msgCtx, cancel := context.WithCancel(sub.base)
	defer cancel()
	msg.SetContext(msgCtx)
	select {
	case sub.out <- msg:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-msg.Acked():
		return ch.Ack(d.DeliveryTag, 0)
	case <-msg.Nacked():
		return ch.Nack(d.DeliveryTag, broker.Requeue)
	case <-ctx.Done():
		return ctx.Err()
	}
}
