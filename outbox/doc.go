// Package outbox is a service's database as Troupe uses it: SQLite (pure
// Go, WAL mode; the embedded default) or PostgreSQL, the same schema
// created and migrated by the framework (versioned migrations, safe when
// several replicas start at once), and the inbox that makes a handler's
// effects happen once: a handler's transaction claims the (consumer,
// idempotency key) of the message it handles together with its own writes,
// so a redelivered duplicate finds its claim and is skipped.
//
// The transactional outbox: [Tx.Add] writes an event in the same
// transaction as the state change that caused it, and a [Relay] publishes
// committed events in commit order per ordering key, at least once, with
// the broker's confirms (docs/outbox.md).
package outbox
