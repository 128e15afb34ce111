package twopc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Deliverer takes protocol messages: a Coordinator or a Participant.
type Deliverer interface {
	Deliver(ctx context.Context, m Message) error
}

var (
	_ Deliverer = (*Coordinator)(nil)
	_ Deliverer = (*Participant[struct{}])(nil)
	_ Sender    = (*Bus)(nil)
)

// Topic is the routing key of the messages for node, and the name of its
// durable queue: "twopc.<node>".
func Topic(node string) string { return "twopc." + node }

// Bus carries protocol messages over a Troupe transport (the bundled
// broker or RabbitMQ): a message for node N is published on the bus
// exchange with routing key "twopc.N" and consumed from N's durable queue
// of that name, so replies reach the coordinator's queue and requests each
// participant's. The global id is the correlation id (envelope.SagaIDKey);
// From is the reply address. Safe for concurrent use.
type Bus struct {
	t        transport.Transport
	exchange string
	pub      message.Publisher
	queues   message.Publisher // to a queue by name: the dead-letter queues
	logger   *slog.Logger
}

// NewBus returns a bus on t using exchange (bus.DefaultExchange when
// empty). logger may be nil.
func NewBus(t transport.Transport, exchange string, logger *slog.Logger) (*Bus, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pub, err := t.NewPublisher(bus.PublisherConfig{Exchange: exchange})
	if err != nil {
		return nil, fmt.Errorf("twopc: publisher: %w", err)
	}
	queues, err := t.NewPublisher(bus.PublisherConfig{ToQueue: true, Mandatory: true})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("twopc: publisher: %w", err), pub.Close())
	}
	return &Bus{t: t, exchange: exchange, pub: pub, queues: queues, logger: logger}, nil
}

// Declare declares the queues of nodes, so that messages sent to them
// before they serve are kept. Idempotent.
func (b *Bus) Declare(ctx context.Context, nodes ...string) error {
	top := bus.Topology{Exchange: b.exchange}
	for _, n := range nodes {
		top.Queues = append(top.Queues, bus.Queue{Name: Topic(n), Events: []string{Topic(n)}})
	}
	return b.t.Declare(ctx, top)
}

// Send publishes m to m.To's queue; it returns once the broker confirmed
// it.
func (b *Bus) Send(ctx context.Context, m Message) error {
	if m.To == "" {
		return errors.New("twopc: message without a recipient")
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("twopc: encode %s: %w", m, err)
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.Metadata.Set(envelope.EventKey, "twopc."+m.Kind.String())
	msg.Metadata.Set(envelope.SagaIDKey, m.GID)
	msg.Metadata.Set(envelope.ProducerKey, m.From)
	msg.Metadata.Set(envelope.ContentTypeKey, "application/json")
	for k, v := range m.Trace {
		msg.Metadata.Set(k, v)
	}
	msg.SetContext(ctx)
	if err := b.pub.Publish(Topic(m.To), msg); err != nil {
		return fmt.Errorf("twopc: send %s: %w", m, err)
	}
	return nil
}

// Serve consumes node's queue with consumers concurrent consumers (1 when
// below 1) and hands each message to d, until ctx ends. Nothing that
// arrives is dropped: a message that is not a protocol message (its
// payload does not decode) goes to the dead-letter queue of node's queue
// with the decoder's error (envelope.ErrorKey, kind "decode"), and one d
// rejects (an error wrapping ErrRejected) goes there with d's reason (kind
// "rejected"), where `troupe dlq` lists them; if that publish fails the
// message is requeued, after a pause. A message d fails on otherwise is
// logged and acknowledged: the protocol re-sends what was lost (the
// coordinator PREPARE and the decision, a participant its query), so a
// failing message cannot loop. It returns ctx's error, or the error of
// subscribing.
func (b *Bus) Serve(ctx context.Context, node string, d Deliverer, consumers int) error {
	sub, err := b.t.NewSubscriber(bus.SubscriberConfig{
		Exchange:  b.exchange,
		QueueName: func(topic string) string { return topic },
		Prefetch:  8,
	})
	if err != nil {
		return fmt.Errorf("twopc: subscriber %s: %w", node, err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range max(consumers, 1) {
		msgs, err := sub.Subscribe(ctx, Topic(node))
		if err != nil {
			return fmt.Errorf("twopc: subscribe %s: %w", node, err)
		}
		wg.Go(func() { b.consume(ctx, node, d, msgs) })
	}
	<-ctx.Done()
	return ctx.Err()
}

func (b *Bus) consume(ctx context.Context, node string, d Deliverer, msgs <-chan *message.Message) {
	for msg := range msgs {
		var m Message
		if err := json.Unmarshal(msg.Payload, &m); err != nil {
			if !b.deadLetter(ctx, node, msg, kindDecode, err) {
				msg.Nack()
				continue
			}
		} else if err := d.Deliver(ctx, m); errors.Is(err, ErrRejected) {
			if !b.deadLetter(ctx, node, msg, kindRejected, err) {
				msg.Nack()
				continue
			}
		} else if err != nil {
			b.logger.LogAttrs(ctx, slog.LevelWarn, "twopc: deliver", slog.String(logNode, node),
				slog.String(logGID, m.GID), slog.String("kind", m.Kind.String()), slog.Any("error", err))
		}
		msg.Ack()
	}
}

// Kinds of the messages Serve dead-letters (envelope.ErrorKindKey), and
// what it logs when it does.
const (
	kindDecode   = "decode"   // not a protocol message
	kindRejected = "rejected" // a protocol message its node rejected
)

var deadLetterLogs = map[string]string{
	kindDecode:   "twopc: undecodable message",
	kindRejected: "twopc: rejected message",
}

// deadLetterPause is how long a message that could not be dead-lettered
// waits before it is requeued, so that a broker refusing the dead-letter
// queue does not make the consumer spin.
const deadLetterPause = time.Second

// deadLetter parks msg, which the bus could not decode or node rejected
// (kind, and cause, why), in the dead-letter queue of node's queue, with
// the reason. It reports false when the publish failed (after
// deadLetterPause, or ctx's end): the caller requeues msg.
func (b *Bus) deadLetter(ctx context.Context, node string, msg *message.Message, kind string, cause error) bool {
	queue := Topic(node)
	target := bus.DeadLetterQueue(queue)
	out := bus.FailedCopy(ctx, msg, queue, kind, cause, time.Now())
	if err := b.queues.Publish(target, out); err != nil {
		b.logger.LogAttrs(ctx, slog.LevelWarn, deadLetterLogs[kind]+" not dead-lettered; requeued", slog.String(logNode, node),
			slog.String("message_id", msg.UUID), slog.Any("error", err))
		select {
		case <-ctx.Done():
		case <-time.After(deadLetterPause):
		}
		return false
	}
	b.logger.LogAttrs(ctx, slog.LevelWarn, deadLetterLogs[kind], slog.String(logNode, node),
		slog.String("message_id", msg.UUID), slog.Any("error", cause), slog.String("dead_letter_queue", target))
	return true
}
