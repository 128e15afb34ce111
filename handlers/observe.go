package handlers

import "context"

// Outcome is how a delivery ended.
type Outcome uint8

// Outcomes of a delivery.
const (
	// Handled: the handler succeeded and what it emitted was published
	// (or written to the outbox).
	Handled Outcome = iota + 1
	// Duplicate: the idempotency key was handled before; nothing ran.
	Duplicate
	// Parked: the message went to a retry queue or the dead-letter queue.
	Parked
	// Requeued: the router could not settle it (shutdown, broker error);
	// the broker redelivers it.
	Requeued
)

// Observation describes one settled delivery.
type Observation struct {
	Handler, Queue string
	Event          string
	MessageID      string
	SagaID         string
	Outcome        Outcome
	// Err is the handler's last error for Parked, the cause for Requeued.
	Err error
}

// WithObserver calls fn after every delivery, in the delivery's
// goroutine; fn must be quick and safe for concurrent use. Logs of a
// workflow's progress and metrics hang off it.
func WithObserver(fn func(ctx context.Context, o Observation)) Option {
	return optionFunc(func(r *Router) { r.observers = append(r.observers, fn) })
}

func (r *Router) observe(ctx context.Context, o Observation) {
	for _, fn := range r.observers {
		fn(ctx, o)
	}
}
