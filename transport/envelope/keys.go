package envelope

// Metadata keys Troupe sets on every message, in one place. They travel as
// AMQP headers.
const (
	// EventKey is the event name, which is also the routing key.
	EventKey = "troupe-event"
	// SagaIDKey is the correlation id of the workflow the message belongs to.
	SagaIDKey = "troupe-saga-id"
	// CausationIDKey is the id of the message whose handling emitted this one.
	CausationIDKey = "troupe-causation-id"
	// IdempotencyKey deduplicates the message at its consumers; the message
	// id unless the producer set a business key (e.g. "charge:<order id>").
	IdempotencyKey = "troupe-idempotency-key"
	// ProducerKey is the service that emitted the message.
	ProducerKey = "troupe-producer"
	// ProducedAtKey is when it was emitted, RFC 3339 with nanoseconds.
	ProducedAtKey = "troupe-produced-at"
	// ContentTypeKey is the payload codec's content type.
	ContentTypeKey = "troupe-content-type"
	// TraceParentKey and TraceStateKey carry the W3C trace context.
	TraceParentKey = "traceparent"
	TraceStateKey  = "tracestate"
)

// Keys of a message that failed, set when it is parked in a retry queue or
// a dead-letter queue.
const (
	// AttemptsKey counts the handler runs so far, across both retry tiers.
	AttemptsKey = "troupe-attempts"
	// DelayedKey counts the delayed redeliveries so far.
	DelayedKey = "troupe-delayed"
	// ErrorKey is the last error's text.
	ErrorKey = "troupe-error"
	// ErrorKindKey is "transient", "permanent" or "decode".
	ErrorKindKey = "troupe-error-kind"
	// FirstFailureKey and LastFailureKey are RFC 3339 times.
	FirstFailureKey = "troupe-first-failure"
	LastFailureKey  = "troupe-last-failure"
	// QueueKey is the work queue the message failed in, where a replay
	// sends it back.
	QueueKey = "troupe-queue"
	// HandlerKey is the handler that failed.
	HandlerKey = "troupe-handler"
	// ReplayedByKey, ReplayedAtKey and ReplaysKey record replays of dead
	// letters: who, when, how many times.
	ReplayedByKey = "troupe-replayed-by"
	ReplayedAtKey = "troupe-replayed-at"
	ReplaysKey    = "troupe-replays"
)
