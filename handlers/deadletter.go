package handlers

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// DeadLettered is the event a router made WithDeadLetterEvents emits each
// time it parks a message in a dead-letter queue. It carries the dead
// letter's saga id, and the dead letter's message id as its causation, so
// that whoever follows the saga (package saga's tracker) learns that a
// step of it is stuck without reading, and so taking, the dead-letter
// queue itself; `troupe dlq` and a replay still find the letter there.
type DeadLettered struct {
	// Service and Handler failed; Queue is the handler's work queue and
	// DeadLetterQueue where the letter is.
	Service         string `json:"service"`
	Handler         string `json:"handler"`
	Queue           string `json:"queue"`
	DeadLetterQueue string `json:"dead_letter_queue"`
	// Event and MessageID identify the dead letter.
	Event     string `json:"event"`
	MessageID string `json:"message_id"`
	// Error is the last error's text, ErrorKind "transient", "permanent"
	// or "decode", Attempts the handler runs.
	Error     string `json:"error"`
	ErrorKind string `json:"error_kind"`
	Attempts  int    `json:"attempts"`
}

// DeadLetteredEvent is DeadLettered's event name.
const DeadLetteredEvent = "troupe.dead_lettered"

// EventName returns DeadLetteredEvent.
func (DeadLettered) EventName() string { return DeadLetteredEvent }

// WithDeadLetterEvents makes the router emit a DeadLettered event on the
// bus each time it dead-letters a message, after the letter is in its
// dead-letter queue. If the announcement cannot be published the message
// is requeued rather than acked, so an announcement is never lost (a
// redelivery may then park a second copy of the letter).
func WithDeadLetterEvents() Option {
	return optionFunc(func(r *Router) { r.deadLetterEvents = true })
}

// announceDeadLetter publishes the DeadLettered event of the letter out,
// caused by it.
func (r *Router) announceDeadLetter(ctx context.Context, reg registration, out *message.Message, attempts int) error {
	md := out.Metadata
	e := DeadLettered{
		Service: r.cfg.Service, Handler: reg.name, Queue: reg.queue, DeadLetterQueue: bus.DeadLetterQueue(reg.queue),
		Event: firstOf(md.Get(envelope.EventKey), reg.event), MessageID: out.UUID,
		Error: md.Get(envelope.ErrorKey), ErrorKind: md.Get(envelope.ErrorKindKey), Attempts: attempts,
	}
	m, err := r.m.build(ctx, e, out, nil)
	if err != nil {
		return err
	}
	if err := r.Emitter().publish(ctx, m); err != nil {
		return fmt.Errorf("announce dead letter %s: %w", out.UUID, err)
	}
	return nil
}
