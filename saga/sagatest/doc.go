// Package sagatest is a deterministic test harness for choreographies,
// like net/http/httptest for handlers: it runs a test's services, saga
// tracker and bus in the test's process, lets the test inject the faults
// a real bus produces, and asserts on what the tracker and the traces
// saw.
//
//	h := sagatest.New(t)
//	h.StartTracker(&checkout)                 // or h.Watch(store) for a tracker started elsewhere
//	payment := h.Router("payment")            // SQLite in t.TempDir(), the harness's bus and clock
//	handlers.MustHandleTx(payment, "charge", charge)
//	h.Run(payment)
//	h.CrashAfterCommit(sagatest.Match{Event: "order.placed", Queue: "payment.charge"}, 1)
//	... start a saga ...
//	h.AwaitState(t, orderID, saga.Completed)
//	h.AssertTraceChain(t, orderID, "process order.placed", "outbox wait payment.captured", ...)
//
// # The world of one test
//
// [New] gives each test a bundled broker of its own (mem:// with a name
// unique to the test; package transport), SQLite databases in the test's
// temporary folder ([Harness.DB], [Harness.DBURL]), and a virtual [Clock].
// [Harness.Router] makes a router wired to all three and to a fast retry
// policy; [Harness.Run] and [Harness.StartTracker] run routers and a
// tracker until the test ends. A stack started by an application's own
// code joins the harness through [Harness.Transport] (the transport every
// service must use for faults to apply), [Harness.Now] (for
// handlers.WithClock) and [Harness.TrackerConfig].
//
// # Time
//
// The harness uses an injected clock, not testing/synctest: the services
// wait on SQLite files and on a broker shared through a process-wide
// registry, which synctest's bubbles cannot hold. The virtual clock drives
// what Troupe reads from a clock: the tracker's deadlines
// (saga.TrackerConfig.Clock) and the production times the routers write
// into events (handlers.WithClock), from which deadlines are computed; and
// [Harness.Delay] holds deliveries until it has moved. Nothing moves it
// but [Clock.Advance]. Retry backoff and the broker's redelivery delays
// still wait in real time (milliseconds with [RetryPolicy]), and the
// assertions poll in real time up to [Harness.Wait].
//
// # Faults
//
// Faults act on deliveries: a message handed by the broker to one
// consumer of one queue. Every subscriber made from a harness transport
// hands each message on to its consumer as a copy, and settles the
// broker's message itself according to the first fault whose [Match]
// selects the delivery (event, queue, saga id, or a predicate), for the
// given number of deliveries:
//
//   - [Harness.Duplicate]: the consumer gets the message twice, the
//     second time after acking the first;
//   - [Harness.Drop]: the delivery is lost before the consumer sees it,
//     and the broker redelivers the message (a nack with requeue);
//   - [Harness.Delay]: the delivery is held until the virtual clock has
//     moved on by a duration; the consumer takes nothing else meanwhile;
//   - [Harness.Reorder]: a delivery is held until another has been acked;
//   - [Harness.CrashAfterCommit]: the consumer handles the message — a
//     transactional handler commits its transaction, then acks — and the
//     ack never reaches the broker: the message is nacked and redelivered,
//     as after a crash between commit and ack, and the inbox must make
//     the second delivery harmless.
//
// [Harness.Injected] lists the faults that fired and [Harness.Deliveries]
// every delivery that arrived, so that a test can prove that its fault
// happened. A delivery still held when a test fails is named in the
// failure.
//
// # Assertions
//
// [Harness.AwaitState] polls the tracker until an instance reaches a
// state, and fails with its history otherwise; [Harness.History] returns
// the history. The harness installs an in-memory span recorder (the
// OpenTelemetry SDK's) as the global tracer provider, once per test
// binary; [Harness.Spans] returns the spans of the traces of one saga and
// [Harness.AssertTraceChain] waits for a parent -> child chain of span
// names in them. Spans are told apart by saga id, so harnesses may run in
// parallel tests; a test that installs a tracer provider of its own hides
// the spans made meanwhile.
//
// # Concurrency
//
// A Harness is safe for concurrent use; the methods that report through
// the test given to New (faults with bad arguments, Router, DB) belong to
// the test's goroutine. Everything it starts stops, and is waited for,
// when the test ends.
package sagatest
