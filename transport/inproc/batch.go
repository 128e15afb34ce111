package inproc

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
)

var _ bus.BatchSubscriber = (*Subscriber)(nil)

// SubscribeBatches starts one consumer on the topic's queue (declared
// first) and hands out its messages in batches: the first one ready, then
// those that arrive within cfg.Linger, up to cfg.Max. Every message of a
// batch must be acked or nacked; the next batch comes once all are, and
// the consumer's prefetch window (twice cfg.Max, or the subscriber's
// Prefetch when larger) lets the broker fill it meanwhile. Acks go to the
// broker as one Ack with Multiple when the whole batch was acked; a nack
// requeues its message. A message's context carries the values of ctx,
// not its cancellation, and unlike Subscribe's it is not cancelled at
// settlement. The channel closes when ctx is done or the subscriber is
// closed; messages not settled by then are requeued.
func (s *Subscriber) SubscribeBatches(ctx context.Context, topic string, cfg bus.BatchConfig) (<-chan []*message.Message, error) {
	if cfg.Max < 1 {
		return nil, fmt.Errorf("inproc: subscribe %s: batch Max %d, want at least 1", topic, cfg.Max)
	}
	if cfg.Linger < 0 {
		return nil, fmt.Errorf("inproc: subscribe %s: negative linger %v", topic, cfg.Linger)
	}
	out := make(chan []*message.Message)
	sub := &subscription{s: s, topic: topic, queue: s.cfg.Queue(topic), prefetch: max(s.cfg.Prefetch, 2*cfg.Max)}
	consume := func(ctx context.Context, ch *broker.Channel, c *broker.Consumer) error {
		return sub.consumeBatches(ctx, ch, c, cfg, out)
	}
	if err := s.start(ctx, sub, consume, func() { close(out) }); err != nil {
		return nil, err
	}
	return out, nil
}

// consumeBatches hands out batches until the consumer or ctx ends, then
// closes ch, which requeues what was not settled; nil ch (a failed reopen)
// returns at once.
func (sub *subscription) consumeBatches(ctx context.Context, ch *broker.Channel, c *broker.Consumer, cfg bus.BatchConfig, out chan<- []*message.Message) error {
	if ch == nil {
		return errors.New("no consumer")
	}
	defer ch.Close()
	for {
		batch, tags, err := sub.gather(ctx, c, cfg)
		if err != nil {
			return err
		}
		select {
		case out <- batch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := settleBatch(ctx, ch, batch, tags); err != nil {
			return err
		}
	}
}

// gather receives a batch: waits for a first delivery, then takes those
// buffered and those that arrive within cfg.Linger, up to cfg.Max. An
// error drops the batch (the channel's close requeues it).
func (sub *subscription) gather(ctx context.Context, c *broker.Consumer, cfg bus.BatchConfig) ([]*message.Message, []uint64, error) {
	d, err := c.Receive(ctx)
	if err != nil {
		return nil, nil, err
	}
	batch, tags := []*message.Message{sub.message(d)}, []uint64{d.DeliveryTag}
	var lingerCtx context.Context
	for len(batch) < cfg.Max {
		d, ok := c.TryReceive()
		if !ok {
			if cfg.Linger == 0 {
				break
			}
			if lingerCtx == nil {
				var cancel context.CancelFunc
				lingerCtx, cancel = context.WithTimeout(ctx, cfg.Linger)
				defer cancel()
			}
			if d, err = c.Receive(lingerCtx); err != nil {
				if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
					return nil, nil, err
				}
				break // lingered long enough
			}
		}
		batch, tags = append(batch, sub.message(d)), append(tags, d.DeliveryTag)
	}
	return batch, tags, nil
}

// message turns a delivery into a watermill message with the
// subscription's context.
func (sub *subscription) message(d broker.Delivery) *message.Message {
	msg := toMessage(d)
	msg.SetContext(sub.base)
	return msg
}

// settleBatch waits until every message of batch is acked or nacked and
// settles them with the broker: one Ack with Multiple when all were acked,
// else each in turn. When ctx ends first it settles those settled by then
// and leaves the others to the channel's close, which requeues them.
func settleBatch(ctx context.Context, ch *broker.Channel, batch []*message.Message, tags []uint64) error {
	const acked, nacked = 1, 2
	state := make([]uint8, len(batch)) // 0 while unsettled
	ended := false
	for i, msg := range batch {
		if !ended {
			select {
			case <-msg.Acked():
				state[i] = acked
				continue
			case <-msg.Nacked():
				state[i] = nacked
				continue
			case <-ctx.Done():
				ended = true
			}
		}
		// As in deliver: a settlement that came with the end wins.
		select {
		case <-msg.Acked():
			state[i] = acked
		case <-msg.Nacked():
			state[i] = nacked
		default:
		}
	}
	if !slices.ContainsFunc(state, func(s uint8) bool { return s != acked }) {
		last := tags[len(tags)-1]
		if err := ch.Ack(last, broker.Multiple); err != nil {
			return fmt.Errorf("ack up to %d: %w", last, err)
		}
		return ctx.Err()
	}
	for i, s := range state {
		var err error
		switch s {
		case acked:
			err = ch.Ack(tags[i], 0)
		case nacked:
			err = ch.Nack(tags[i], broker.Requeue)
		}
		if err != nil {
			return fmt.Errorf("settle %d: %w", tags[i], err)
		}
	}
	return ctx.Err()
}
