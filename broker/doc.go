// Package broker is Troupe's bundled routing broker: RabbitMQ's model of
// AMQP 0-9-1, in process and in memory.
//
// The API mirrors AMQP's methods so that the AMQP wire server (a later
// package) maps frames onto it one to one: a [Broker] holds virtual hosts; a
// [Conn] is opened on one vhost and owns [Channel]s and exclusive queues; a
// Channel declares, binds, publishes, consumes, gets and acknowledges. A
// protocol failure is an [*Error] carrying the AMQP reply code and
// RabbitMQ's reply text; as in AMQP, a soft error (403, 404, 405, 406)
// closes the channel and a hard one (5xx) the connection.
//
// # Exchanges
//
// Direct, fanout, topic ("*" one word, "#" zero or more, matched with a
// trie so that cost does not grow with the number of bindings) and headers
// (x-match all, any, all-with-x, any-with-x) exchanges; the default
// exchange, which routes to the queue named by the routing key; the
// predeclared amq.* exchanges; exchange-to-exchange bindings; alternate
// exchanges ("alternate-exchange" argument) for unroutable messages;
// internal and auto-delete exchanges.
//
// # Queues
//
// Durable, exclusive and auto-delete queues with RabbitMQ's equivalence
// rules on redeclaration; server-named queues; passive declare; purge;
// delete if-unused / if-empty. Arguments: x-message-ttl and the
// per-message expiration property (a message expires when it reaches the
// head of its queue past its deadline, as in RabbitMQ), x-expires,
// x-max-length and x-max-length-bytes with x-overflow drop-head,
// reject-publish or reject-publish-dlx, x-dead-letter-exchange and
// x-dead-letter-routing-key (on reject or nack without requeue, expiry and
// overflow, with RabbitMQ's x-death header), x-single-active-consumer;
// x-queue-mode (default, lazy) and x-queue-type (classic, quorum) are
// accepted as hints. Message priorities (x-max-priority) are not
// implemented; unknown arguments are ignored, as RabbitMQ does.
//
// # Consumers
//
// Prefetch per consumer and per channel ([QosOptions]), manual and
// automatic acknowledgement, multiple ack, nack and reject with or without
// requeue (a requeued message goes back to its place, redelivered),
// exclusive consumers, round-robin among competing consumers, basic.get.
// Deliveries are pushed into a [Consumer]'s buffer, bounded by its prefetch
// and a flow-control window, and taken with [Consumer.Receive]; the broker
// never blocks on a slow consumer.
//
// # Publishing
//
// Mandatory messages that reach no queue come back through
// [Channel.NotifyReturn]; [Channel.Confirm] turns on publisher confirms. A
// message body is never copied: one [Message] is shared by every queue of
// a fan-out, and it is immutable once published.
//
// # Concurrency
//
// Everything is safe for concurrent use. Publishing takes a read lock on
// the vhost and one lock per destination queue; delivery happens in the
// goroutine that made it possible (publish, ack, receive), with no
// goroutine per queue or per message. See the lock order in broker.go.
package broker
