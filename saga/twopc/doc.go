// Package twopc is a two-phase commit over Troupe's bus and stores, for
// steps that must commit together or not at all (capture the payment and
// commit the stock), where a saga's compensation is not enough.
//
// # Protocol
//
// A [Coordinator] begins a transaction with a global id (GID) and one
// [Branch] per participant, logs it, and sends PREPARE to every
// participant. Each [Participant] runs its [Resource]'s Prepare in the
// database transaction that records the branch as prepared (so the held
// resource and the prepared state are durable together) and votes YES, or
// votes NO and keeps nothing. The coordinator decides COMMIT only if every
// participant voted YES, ABORT on any NO or when the vote deadline passes;
// it logs the decision before telling anyone, then sends it and re-sends it
// until every participant acknowledged. COMMIT and ABORT are idempotent at
// the participant.
//
// # Failures
//
//   - Presumed abort: a transaction with no logged decision is aborted when
//     the coordinator restarts ([Coordinator.Recover]); a vote or query
//     about a GID the coordinator has no record of is answered ABORT.
//   - A participant restarting with prepared branches asks the coordinator
//     for their outcome ([Participant.Recover], then every resend interval)
//     and never decides alone: it stays prepared, holding the resource,
//     until the coordinator answers. This is the blocking of 2PC.
//   - A participant that never answers is timed out (ABORT); a YES that
//     arrives after the abort is answered with ABORT; an ABORT that arrives
//     before its PREPARE is remembered, so the late PREPARE is answered NO
//     without holding anything.
//   - Lost messages are re-sent, duplicated ones are answered again, in any
//     order.
//
// # Transport and storage
//
// Messages are a [Message] sent by a [Sender]; [Bus] carries them over a
// Troupe transport (the bundled broker or RabbitMQ) with the GID as
// correlation id and the sender's name as reply address: node N consumes
// the durable queue "twopc.N". The coordinator's log and the participants'
// branch states are tables in an outbox.DB (SQLite or PostgreSQL), created
// by [Migrate]; [List] and [Show] read the log (`troupe 2pc list/show`).
// Every message carries the W3C trace context of the transaction, so a
// transaction is one trace: spans "twopc begin", "twopc prepare",
// "twopc vote", "twopc decide", "twopc commit"/"twopc abort".
//
// Time comes from an injectable [Clock]; a [Hook] at each [Step] is the
// fault injector of the crash tests.
package twopc
