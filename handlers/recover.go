package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// errBudget stops the immediate tier when the message's retry budget is
// spent.
var errBudget = errors.New("handlers: retry budget spent")

// delivery is the state of one delivery of one message, in its context.
type delivery struct {
	prior int // handler runs in earlier deliveries
	runs  int // handler runs in this one
}

type deliveryKey struct{}

// typed adapts a typed handler to watermill: decode (a failure is
// permanent), run with an attempt in the context for Emit, and return the
// emitted events as produced messages.
func typed[E Event](r *Router, reg registration, h Handler[E]) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		d, _ := msg.Context().Value(deliveryKey{}).(*delivery)
		if d == nil {
			d = &delivery{}
		}
		d.runs++
		var e E
		if err := r.m.codec.Unmarshal(msg.Payload, &e); err != nil {
			return nil, Permanent(&DecodeError{Event: reg.event, Err: err})
		}
		a := &attempt{m: r.m, cause: msg}
		if err := h.Handle(context.WithValue(msg.Context(), attemptKey{}, a), e); err != nil {
			if !IsPermanent(err) && d.prior+d.runs >= r.retry.maxAttempts() {
				return nil, fmt.Errorf("%w after %d runs: %w", errBudget, d.prior+d.runs, err)
			}
			return nil, err
		}
		return a.emitted, nil
	}
}

// recoverability is the outermost layer: it skips duplicates, publishes
// what a successful run emitted, and parks a failed message in a retry
// queue or the dead-letter queue. It returns an error (the message is
// nacked and redelivered) only when it could do none of that: the broker
// refused, or the router is shutting down.
func (r *Router) recoverability(reg registration, h message.HandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := msg.Context()
		if !r.enter() {
			// Shutting down: hold the message, without a run, until its
			// subscription closes and requeues it (a nack now would only
			// bring it straight back).
			<-ctx.Done()
			return ctx.Err()
		}
		defer r.leave(msg)
		ctx, span := tracing.StartProcess(ctx, msg, r.system, reg.queue)
		start := time.Now()
		outcome, cause, err := r.handle(ctx, reg, h, msg)
		tracing.End(span, err)
		if err != nil {
			outcome, cause = Requeued, err
		}
		r.recordDelivery(ctx, reg, outcome, time.Since(start))
		if len(r.observers) > 0 {
			r.observe(ctx, Observation{
				Handler: reg.name, Queue: reg.queue, Event: reg.event, MessageID: msg.UUID,
				SagaID: msg.Metadata.Get(envelope.SagaIDKey), Outcome: outcome, Err: cause,
			})
		}
		return err
	}
}

// handle runs one delivery of msg; see recoverability.
// It reports the outcome and, when parked, the handler's error; a non-nil
// error means the message must be requeued.
func (r *Router) handle(ctx context.Context, reg registration, h message.HandlerFunc, msg *message.Message) (Outcome, error, error) {
	key := firstOf(msg.Metadata.Get(envelope.IdempotencyKey), msg.UUID)
	if r.idem != nil && !reg.tx {
		seen, err := r.idem.Seen(ctx, reg.queue, key)
		if err != nil {
			return 0, nil, fmt.Errorf("idempotency check: %w", err)
		}
		if seen {
			r.duplicates.Add(1)
			return Duplicate, nil, nil
		}
	}
	d := &delivery{prior: headerCount(msg.Metadata, envelope.AttemptsKey)}
	msg.SetContext(context.WithValue(ctx, deliveryKey{}, d))
	emitted, err := h(msg)
	if errors.Is(err, errDuplicate) {
		r.duplicates.Add(1)
		return Duplicate, nil, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, err // shutting down: requeue
		}
		return Parked, err, r.park(ctx, reg, msg, d, err)
	}
	em := r.Emitter()
	for _, e := range emitted {
		if err := em.publish(ctx, e); err != nil {
			return 0, nil, err
		}
	}
	if r.idem != nil && !reg.tx {
		if err := r.idem.Record(ctx, reg.queue, key); err != nil {
			return 0, nil, fmt.Errorf("idempotency record: %w", err)
		}
	}
	r.handled.Add(1)
	return Handled, nil, nil
}

// maxHeaderCount caps the counts read from headers, far enough from the
// largest int that adding runs to one cannot overflow.
const maxHeaderCount = 1 << 30

// headerCount reads a count header (attempts, delayed redeliveries), which
// a message from the bus may carry with any text: missing, malformed or
// negative is 0, and it is at most maxHeaderCount.
func headerCount(md message.Metadata, key string) int {
	n, _ := strconv.Atoi(md.Get(key)) // out of range: the nearest int
	return min(max(n, 0), maxHeaderCount)
}

// errorKind classifies a failure for the ErrorKindKey header.
func errorKind(err error) string {
	if _, ok := errors.AsType[*DecodeError](err); ok {
		return "decode"
	}
	if IsPermanent(err) {
		return "permanent"
	}
	return "transient"
}

// park sends a failed message to its next retry queue, or to the
// dead-letter queue when it is permanent, out of delayed redeliveries, or
// out of budget; then the original is acked.
func (r *Router) park(ctx context.Context, reg registration, msg *message.Message, d *delivery, cause error) error {
	attempts := d.prior + d.runs
	delayed := headerCount(msg.Metadata, envelope.DelayedKey)
	kind := errorKind(cause)
	out := bus.FailedCopy(ctx, msg, reg.queue, kind, cause, r.m.now())
	md := out.Metadata
	md.Set(envelope.AttemptsKey, strconv.Itoa(attempts))
	md.Set(envelope.HandlerKey, reg.name)
	target := bus.DeadLetterQueue(reg.queue)
	retry := kind == "transient" && !errors.Is(cause, errBudget) &&
		delayed < len(r.retry.Delays) && attempts < r.retry.maxAttempts()
	if retry {
		md.Set(envelope.DelayedKey, strconv.Itoa(delayed+1))
		target = bus.RetryQueue(reg.queue, r.retry.Delays[delayed])
	}
	if err := r.queues.Publish(target, out); err != nil {
		return fmt.Errorf("park %s in %s: %w", msg.UUID, target, err)
	}
	if !retry && r.deadLetterEvents {
		if err := r.announceDeadLetter(ctx, reg, out, attempts); err != nil {
			return err
		}
	}
	level := slog.LevelWarn
	if retry {
		r.delayed.Add(1)
		r.tel.Retries.Add(ctx, 1, reg.met.delayed)
		level = slog.LevelInfo
	} else {
		r.deadLettered.Add(1)
		r.tel.DeadLetters.Add(ctx, 1, reg.met.handler)
	}
	r.logger.LogAttrs(ctx, level, "handler failed",
		slog.String("handler_name", reg.name), slog.String("message_id", msg.UUID),
		slog.String("saga_id", msg.Metadata.Get(envelope.SagaIDKey)),
		slog.Int("attempts", attempts), slog.String("error_kind", kind),
		slog.String("parked_in", target), slog.Any("error", cause))
	return nil
}
