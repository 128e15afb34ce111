package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"

	"github.com/troupehq/troupe/internal/telemetry"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport/envelope"
)

// EmitOption sets what Emit would otherwise derive.
type EmitOption interface{ apply(*emitOptions) }

type emitOptions struct {
	sagaID         string
	idempotencyKey string
}

type emitOptionFunc func(*emitOptions)

func (f emitOptionFunc) apply(o *emitOptions) { f(o) }

// WithSagaID sets the saga id; by default an event emitted by a handler
// continues the saga of the message handled, and one emitted by plain code
// starts a saga whose id is the event's message id.
func WithSagaID(id string) EmitOption {
	return emitOptionFunc(func(o *emitOptions) { o.sagaID = id })
}

// WithIdempotencyKey sets a business idempotency key (e.g. "charge:<order
// id>"); by default the key is the message id.
func WithIdempotencyKey(key string) EmitOption {
	return emitOptionFunc(func(o *emitOptions) { o.idempotencyKey = key })
}

// ErrNotInHandler is returned by Emit called outside a handler; plain code
// emits through an Emitter.
var ErrNotInHandler = errors.New("handlers: Emit outside a handler: use an Emitter")

// attemptKey carries the current handler attempt in its context.
type attemptKey struct{}

// attempt is one run of a handler on one message: what it emitted is
// published only if the run succeeds.
type attempt struct {
	m       *messages
	cause   *message.Message
	emitted []*message.Message
}

// Emit emits an event from inside a handler: it is published after the
// handler returns nil (and dropped if it fails), with a new message id, the
// saga id of the message handled, and that message as its causation.
// Emitting a failure event and returning nil is how a handler reports a
// business failure without a retry.
func Emit(ctx context.Context, e Event, opts ...EmitOption) error {
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok {
		return ErrNotInHandler
	}
	msg, err := a.m.build(ctx, e, a.cause, opts)
	if err != nil {
		return err
	}
	a.emitted = append(a.emitted, msg)
	return nil
}

// messages builds event messages for one service.
type messages struct {
	service string
	codec   Codec
	now     func() time.Time
}

// build makes the message for e, caused by cause (nil from plain code). The
// trace context of ctx (the handler's span, or the caller's) is stored in
// the message now, so that it survives a wait in the outbox.
func (m *messages) build(ctx context.Context, e Event, cause *message.Message, opts []EmitOption) (*message.Message, error) {
	var o emitOptions
	for _, opt := range opts {
		opt.apply(&o)
	}
	name, err := checkEventName(e.EventName())
	if err != nil {
		return nil, err
	}
	payload, err := m.codec.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("handlers: encode %s: %w", name, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("handlers: message id: %w", err)
	}
	msg := message.NewMessage(id.String(), payload)
	md := msg.Metadata
	md.Set(envelope.EventKey, name)
	md.Set(envelope.ProducerKey, m.service)
	md.Set(envelope.ProducedAtKey, m.now().UTC().Format(time.RFC3339Nano))
	md.Set(envelope.ContentTypeKey, m.codec.ContentType())
	md.Set(envelope.IdempotencyKey, firstOf(o.idempotencyKey, msg.UUID))
	sagaID := o.sagaID
	if cause != nil {
		md.Set(envelope.CausationIDKey, cause.UUID)
		sagaID = firstOf(sagaID, cause.Metadata.Get(envelope.SagaIDKey))
	}
	md.Set(envelope.SagaIDKey, firstOf(sagaID, msg.UUID))
	tracing.Inject(ctx, md)
	return msg, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Emitter emits events from plain code (an HTTP handler placing an order).
// Emit publishes at once and returns when the broker confirmed. Safe for
// concurrent use.
type Emitter struct {
	m        *messages
	pub      message.Publisher
	exchange string
	system   string // messaging.system of its spans
	tel      *telemetry.Instruments
}

// Emit publishes e with its name as routing key.
func (em *Emitter) Emit(ctx context.Context, e Event, opts ...EmitOption) error {
	msg, err := em.m.build(ctx, e, nil, opts)
	if err != nil {
		return err
	}
	return em.publish(ctx, msg)
}

// publish publishes msg in a producer span.
func (em *Emitter) publish(ctx context.Context, msg *message.Message) error {
	event := msg.Metadata.Get(envelope.EventKey)
	ctx, span := tracing.StartPublish(ctx, msg, em.system, em.exchange)
	msg.SetContext(ctx)
	err := em.pub.Publish(event, msg)
	if err != nil {
		err = fmt.Errorf("handlers: emit %s: %w", event, err)
	} else if em.tel != nil {
		em.tel.EventsPublished.Add(ctx, 1, metric.WithAttributes(telemetry.ServiceKey.String(em.m.service),
			telemetry.EventKey.String(event), telemetry.PathKey.String("direct")))
	}
	tracing.End(span, err)
	return err
}

// EmitTx writes e to the outbox in tx (plain code's helper: an HTTP
// handler stores an order and emits order.placed in one transaction). It
// is published by the relay after tx commits, and never if tx rolls back.
func (em *Emitter) EmitTx(ctx context.Context, tx *outbox.Tx, e Event, opts ...EmitOption) error {
	msg, err := em.m.build(ctx, e, nil, opts)
	if err != nil {
		return err
	}
	return tx.Add(ctx, msg.Metadata.Get(envelope.EventKey), msg.Metadata.Get(envelope.SagaIDKey), msg)
}

// Metadata returns the metadata of the message being handled (its saga id,
// causation, idempotency key, retry and replay headers; see package
// transport/envelope), or nil outside a handler. It must not be modified.
func Metadata(ctx context.Context) message.Metadata {
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		return a.cause.Metadata
	}
	return nil
}
