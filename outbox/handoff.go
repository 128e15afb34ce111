package outbox

import (
	"context"
	"maps"
	"sync"
	"time"
)

// On SQLite the relay running in the writer's process is handed the rows
// it is to publish instead of reading them back. While a relay runs on a
// DB (the first one of the process), Tx.Add writes each row that heads its
// ordering key (no unpublished row of the key is waiting, except rows
// handed to this relay, which are ahead of it in the handoff) leased at
// birth to the relay's handoff tag, and once the transaction commits the
// rows go to the relay in memory, in commit order. The relay publishes
// them and deletes them, without the claim (an UPDATE that selects the free
// keys' heads and returns the rows): one statement per batch instead of
// two, and no wait for a group commit between a commit and its publish.
//
// The lease keeps the rows from every other relay, in this process or
// another, as a claimed batch's does; a relay that dies hands them over
// when the lease ends (at most maxHandoffLease), and a relay that stops
// (or starts again with the same ID) releases them at once. A row the
// broker refuses is released with a backoff, as a claimed one is, and the
// relay hands the later rows of its key back to the claims too, which keep
// the key in order.

// handoff is a relay's queue of rows handed over at commit. Safe for
// concurrent use.
type handoff struct {
	tag   string // locked_by of the rows: the relay's ID + "/handoff"
	lease time.Duration

	mu     sync.Mutex
	rows   []row
	closed bool
	wake   chan struct{} // one pending signal: rows were pushed
}

// maxHandoff bounds the rows waiting in a handoff; past it, Tx.Add writes
// rows for the claims, as without a handoff.
const maxHandoff = 4096

// maxHandoffLease bounds the lease of a handed-over row (RelayConfig.Lease
// when shorter). The relay publishes such a row within milliseconds, or
// leaves it to the claims when its lease is about to end; the lease
// matters when the process dies, and then every row it was handed waits
// for it: seconds, not the claims' 30.
const maxHandoffLease = 5 * time.Second

func newHandoff(relayID string, lease time.Duration) *handoff {
	return &handoff{tag: relayID + "/handoff", lease: lease, wake: make(chan struct{}, 1)}
}

// room reports whether more rows may be handed over.
func (h *handoff) room() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.closed && len(h.rows) < maxHandoff
}

// push queues committed rows (in commit order) and wakes the relay. Rows
// pushed after close are dropped: the relay released them, or their lease
// hands them over when it ends.
func (h *handoff) push(rows []row) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.rows = append(h.rows, rows...)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// take dequeues up to n rows, oldest first.
func (h *handoff) take(n int) []row {
	h.mu.Lock()
	defer h.mu.Unlock()
	n = min(n, len(h.rows))
	out := h.rows[:n:n]
	h.rows = h.rows[n:]
	if len(h.rows) == 0 {
		h.rows = nil // let the backing array go
	}
	return out
}

// close stops the handoff; rows queued are dropped (see push).
func (h *handoff) close() {
	h.mu.Lock()
	h.closed, h.rows = true, nil
	h.mu.Unlock()
}

// freshInsert writes an outbox row leased at birth to a handoff when it
// heads its key: no unpublished row of the key waits, but rows of the same
// handoff. Arguments: message id, topic, ordering key, payload, metadata,
// created at, tag, lease end, ordering key, tag.
const freshInsert = `INSERT INTO troupe_outbox (message_id, topic, ordering_key, payload, metadata, created_at, locked_by, locked_until)
	SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM troupe_outbox o
		WHERE o.ordering_key = ? AND o.published_at IS NULL AND (o.locked_by IS NULL OR o.locked_by <> ?))`

// releaseQuery hands the rows leased to a tag over to the claims.
const releaseQuery = `UPDATE troupe_outbox SET locked_by = NULL, locked_until = NULL WHERE locked_by = ? AND published_at IS NULL`

// startHandoff makes r the relay that db's commits hand their rows to, if
// db is SQLite and no other relay of the process is; nil otherwise. Rows
// a previous run of a relay with r's ID left leased to its handoff are
// released first.
func (r *Relay) startHandoff(ctx context.Context) *handoff {
	if r.db.dialect != SQLite {
		return nil
	}
	h := newHandoff(r.cfg.ID, min(r.cfg.Lease, maxHandoffLease))
	if err := r.release(ctx, h.tag); err != nil {
		r.logger.Warn("outbox relay: releasing the rows of an earlier run", "relay", r.cfg.ID, "error", err)
	}
	if !r.db.handoff.CompareAndSwap(nil, h) {
		return nil
	}
	return h
}

// stopHandoff ends h: later commits write their rows for the claims, and
// the rows handed over but not published are released for them.
func (r *Relay) stopHandoff(h *handoff) {
	r.db.handoff.CompareAndSwap(h, nil)
	h.close()
	// A transaction that wrote rows for h before the swap commits in a
	// group before the release's, or in its group before it: the release
	// sees every such row.
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := r.release(ctx, h.tag); err != nil {
		r.logger.Warn("outbox relay: releasing handed-over rows at stop; their lease hands them over", "relay", r.cfg.ID, "error", err)
	}
}

// release hands the unpublished rows leased to tag over to the claims and
// wakes the relays of the process.
func (r *Relay) release(ctx context.Context, tag string) error {
	if err := r.settle(ctx, []stmt{{releaseQuery, []any{tag}}}); err != nil {
		return err
	}
	r.db.changed.notify()
	return nil
}

// passHandoff publishes up to BatchSize rows handed over to h and settles
// them; it returns how many it took. Rows whose lease is about to end (a
// quarter of it left: they must be settled before another relay may claim
// them) are left to the claims, and so are the
// later rows of their keys and of keys the broker refused a row of
// (blocked, which it updates): publishing them now could overtake the row
// ahead of them.
func (r *Relay) passHandoff(ctx context.Context, h *handoff, blocked map[string]time.Time) (int, error) {
	rows := h.take(r.cfg.BatchSize)
	if len(rows) == 0 {
		return 0, nil
	}
	now := time.Now()
	margin := h.lease / 4
	maps.DeleteFunc(blocked, func(_ string, until time.Time) bool { return now.After(until) })
	var publish []row
	for _, w := range rows {
		if _, ok := blocked[w.key]; ok || now.Add(margin).After(w.createdAt.Add(h.lease)) {
			// Every row of the key handed over so far was leased before
			// now: their leases have ended by then.
			blocked[w.key] = now.Add(h.lease)
			continue
		}
		publish = append(publish, w)
	}
	done, failures := r.publishUnlessStopped(ctx, publish)
	for _, f := range failures {
		blocked[f.key] = now.Add(h.lease)
	}
	// The rows taken but not published (left to the claims, or after a
	// refused row) are released by the settlement.
	stmts, delays := r.settlement(h.tag, rows, done, failures, leased)
	if err := r.settle(ctx, stmts); err != nil {
		return len(rows), err // the rows stay leased; the lease hands them over when it ends
	}
	if len(rows) > len(done) {
		r.db.changed.notify() // released rows: for the claims
	}
	r.settled(ctx, done, failures, delays)
	return len(rows), nil
}
