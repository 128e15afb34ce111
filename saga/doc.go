// Package saga declares choreographed workflows, checks them against the
// handlers really registered, and draws them.
//
// Under choreography no controller sends commands: each service consumes
// events and emits others (package handlers), and the workflow exists only
// as the sum of those handlers. A [Saga] writes it down: the event that
// starts it, its steps, how each step is undone, and the events that end
// it. The declaration is then checked at start-up ([Check]), drawn
// ([WriteMermaid], [WriteDOT], `troupe graph`), and read by the tracker,
// which asks [Saga.Transitions] what each event of an instance means.
//
// # Declaring
//
// A saga is a plain struct literal. Events are named by their routing
// keys, best written from their Go types so that they follow a rename:
//
//	var Checkout = saga.Saga{
//		Name:  "checkout",
//		Start: OrderPlaced{}.EventName(),
//		Steps: []saga.Step{
//			{Name: "charge", Service: "payment",
//				Trigger: OrderPlaced{}.EventName(),
//				Success: PaymentCaptured{}.EventName(), Failure: PaymentFailed{}.EventName(),
//				Compensation: &saga.Compensation{On: []string{InventoryFailed{}.EventName()}, Done: PaymentRefunded{}.EventName()}},
//			...
//		},
//		Completed:   []string{OrderConfirmed{}.EventName()},
//		Compensated: []string{OrderCancelled{}.EventName()},
//	}
//
// A [Step] is a handler of its Service: it consumes Trigger and emits
// Success or Failure. Its [Compensation] is another handler of the same
// service, which consumes one of the On events (in choreography, the next
// step's failure, or the event proving that the next step was undone) and
// emits Done. A step that needs no compensation must say why in
// NoCompensation: the pivot step (after it the saga only goes forward), the
// last step, a step with nothing to undo. The first step may have no
// Trigger: it is then the initiating step, run by plain code such as an
// HTTP handler, and its Success is the saga's Start; this lets the
// initiator have a compensation too (the order service cancels the order).
// Listeners ([Listener]) consume the saga's events without changing its outcome (a
// notifier). The same declaration loads from JSON ([ParseJSON],
// [ReadFile]), the form `troupe graph` reads.
//
// # Checks
//
// [Saga.Validate] checks the declaration alone and [Check] also checks it
// against a [Registry] of the handlers the services really registered:
// from the routers of this process ([RegistryOf]) or, with one process per
// service, from the registry file each writes at start-up
// ([WriteRegistry], [ReadRegistryFiles]). Each problem is a [*DefectError]
// naming the saga, the step (or listener) and the event, classed by
// [Defect]; all of them come back joined with errors.Join:
//
//   - Malformed: a missing or malformed name, a duplicate step, an event
//     with two meanings, an ending no step emits;
//   - Unconsumed: a trigger, compensation event or listened event that no
//     handler of the declared service consumes;
//   - Undeclared: a handler of a saga service consumes a saga event that
//     the declaration does not give it (the declaration misses a path);
//   - Uncompensated: a step with no compensation and no reason, or a
//     failure that never starts the compensation of a step completed
//     before it;
//   - DeadEnd: a success, failure or compensation-done event from which no
//     path reaches an ending ("a failure with no path to an end");
//   - Cycle: events that lead back to themselves;
//   - Unreachable: a trigger that no path from Start reaches, or a
//     compensation event that no step emits.
//
// # Tracking
//
// A [Tracker] consumes every event of a saga (and the dead-letter
// announcements of handlers.WithDeadLetterEvents) from its own queue,
// "saga-tracker.<saga>", and keeps each instance's state, current step and
// history in a [Store] (SQLite or PostgreSQL, tables of its own). Each
// message is claimed in the tracker's inbox, so a redelivery changes
// nothing; the state is derived from the set of entries ([Derive]), so
// the order in which events arrive does not matter. The tracker times out
// instances that miss a deadline ([Saga.Deadline], [Step.Deadline]),
// emitting [TimedOutEvent] for the services to compensate, and parks an
// instance whose compensation is dead-lettered in state [Failed],
// emitting [FailedEvent]; an operator then resumes, skips or resolves it
// ([Store.Act]; `troupe saga resume|skip|resolve`; [HTTPHandler]).
//
// [Saga.Transitions] maps an event name to its meanings, in a fixed order:
// what it ends (step succeeded or failed, compensation done), the
// saga-level kinds (started, completed, compensated, failed), what it
// starts (step started, compensation started), then Observed (a
// listener's event). "inventory.failed" in the checkout is both "step
// reserve failed" and "compensation of step charge started".
//
// # Concurrency
//
// A Saga is a value that this package only reads: share it freely once
// declared. A Registry is a value too. Tracker, Store and HTTPHandler are
// safe for concurrent use.
package saga
