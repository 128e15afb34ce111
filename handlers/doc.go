// Package handlers is the API services touch most: typed event handlers on
// watermill's Router, with the reliability of every step built in.
//
// A service declares its events as Go types (the name is the routing key)
// and registers a function per handler:
//
//	r, _ := handlers.NewRouter(handlers.Config{Service: "payment"}, tr)
//	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
//		...
//		return handlers.Emit(ctx, PaymentCaptured{OrderID: e.OrderID})
//	}))
//	r.Run(ctx)
//
// Each handler consumes its own queue "<service>.<handler>", bound to its
// event's name, with retry and dead-letter queues (package
// transport/bus). Registration errors (a duplicate name, an invalid event
// name) are reported by Handle, not when a message arrives.
//
// # What a message goes through
//
//   - Idempotency: with an IdempotencyStore, a message whose idempotency
//     key (the message id, or a business key set with WithIdempotencyKey)
//     was handled by this handler before is acked without running and
//     counted as a duplicate.
//   - Decode: the payload is decoded with the Codec (JSON by default); a
//     payload that does not decode is a DecodeError, which is permanent.
//   - Immediate retries, in process, with exponential backoff and jitter
//     (RetryPolicy.Immediate, InitialInterval, ...); Troupe's own loop:
//     watermill's Retry middleware waits longer than its settings say.
//     Panics become errors through watermill's Recoverer; WithTimeout adds
//     watermill's Timeout.
//   - Delayed redeliveries (written here: watermill has none): a message
//     still failing is copied into the retry queue of the next delay
//     (RetryPolicy.Delays, e.g. 1 s, 10 s, 60 s) and acked; the broker's TTL
//     brings it back, and the consumer is never blocked meanwhile.
//   - Dead letters (written here): a permanent failure, a decode failure,
//     or a transient one out of delayed redeliveries or out of its retry
//     budget (RetryPolicy.MaxAttempts, across both tiers) is copied into the
//     dead-letter queue with its error, kind, attempt count, first and last
//     failure time, queue and handler in headers (package
//     transport/envelope), and acked.
//   - Outcomes: an error is transient by default; Permanent(err) skips the
//     retries; a business failure is answered by emitting a failure event
//     and returning nil.
//   - Emitting (written here): Emit inside a handler buffers events and
//     publishes them, with confirms, only after the handler succeeded; each
//     gets a new UUIDv7 message id, the saga id of the message handled,
//     that message as causation, the service as producer, and a production
//     time. Plain code emits with Router.Emitter.
//   - Shutdown (written here: watermill closes subscribers before waiting
//     for handlers): when Run's context ends, the router holds new
//     messages, lets runs in flight finish within Config.ShutdownTimeout
//     and acks them, then closes the subscriptions; held messages and runs
//     cancelled at the timeout are requeued, not parked.
//
// # Not yet here
//
// Durable idempotency (SQLite, PostgreSQL) and the transactional handler
// variant that commits the inbox row, the service's writes and its outbox
// rows in one transaction come with package outbox; until then a handler
// that emits is at-least-once (a crash between publishing its events and
// acking may run it again) and MemoryStore is for tests.
package handlers
