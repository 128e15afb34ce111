package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport/envelope"
)

// TxHandler handles events of one type inside a database transaction: the
// inbox claim of the message, the handler's writes (through tx) and, with
// the outbox, the events it emits commit together, or not at all. A
// redelivered duplicate finds its claim and does not run: the handler's
// effect happens exactly once.
type TxHandler[E Event] interface {
	Handle(ctx context.Context, tx *outbox.Tx, e E) error
}

// TxHandlerFunc adapts a function to a TxHandler.
type TxHandlerFunc[E Event] func(ctx context.Context, tx *outbox.Tx, e E) error

// Handle calls f.
func (f TxHandlerFunc[E]) Handle(ctx context.Context, tx *outbox.Tx, e E) error { return f(ctx, tx, e) }

// WithDB gives the router the service's database: HandleTx handlers run in
// its transactions, and it is the idempotency store of plain handlers unless
// WithIdempotencyStore sets another.
func WithDB(db *outbox.DB) Option {
	return optionFunc(func(r *Router) { r.db = db })
}

// errDuplicate ends a transactional run whose message was already handled.
var errDuplicate = errors.New("handlers: duplicate message")

// HandleTx registers a transactional handler; the router needs WithDB.
func HandleTx[E Event](r *Router, name string, h TxHandler[E], opts ...HandlerOption) error {
	if r.db == nil {
		return fmt.Errorf("handlers: HandleTx(%q) needs a router made WithDB", name)
	}
	var queue string
	run := HandlerFunc[E](func(ctx context.Context, e E) error {
		a, _ := ctx.Value(attemptKey{}).(*attempt)
		key := firstOf(a.cause.Metadata.Get(envelope.IdempotencyKey), a.cause.UUID)
		return r.db.InTx(ctx, func(tx *outbox.Tx) error {
			claimed, err := tx.Claim(ctx, queue, key)
			if err != nil {
				return err
			}
			if !claimed {
				return errDuplicate
			}
			if err := h.Handle(ctx, tx, e); err != nil {
				return err
			}
			// What the handler emitted commits with its writes; the relay
			// publishes it.
			for _, m := range a.emitted {
				if err := tx.Add(ctx, m.Metadata.Get(envelope.EventKey), m.Metadata.Get(envelope.SagaIDKey), m); err != nil {
					return err
				}
			}
			a.emitted = nil
			return nil
		})
	})
	reg, err := register(r, name, run, true, opts)
	if err != nil {
		return err
	}
	queue = reg.queue
	return nil
}

// MustHandleTx is HandleTx that panics on error, for wiring in main.
func MustHandleTx[E Event](r *Router, name string, h TxHandler[E], opts ...HandlerOption) {
	if err := HandleTx(r, name, h, opts...); err != nil {
		panic(err)
	}
}
