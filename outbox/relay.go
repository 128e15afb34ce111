package outbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/internal/telemetry"
	"github.com/troupehq/troupe/tracing"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// ID names the relay in the rows it leases; random when empty.
	ID string
	// BatchSize is the most rows claimed at once; 256 when 0.
	BatchSize int
	// Lease is how long claimed rows stay the relay's; 30 s when 0. On
	// SQLite a relay that dies hands its rows over when the lease ends; on
	// PostgreSQL the rows are held by the locks of the pass's transaction,
	// which a relay that dies loses at once, and Lease bounds that
	// transaction.
	Lease time.Duration
	// PollInterval is the fallback wake-up when no commit signal came; 1 s
	// when 0.
	PollInterval time.Duration
	// Retention keeps published rows (marked, not deleted) for this long; 0
	// deletes them once published.
	Retention time.Duration
	// RetryInitial and RetryMax bound the backoff of a row the broker
	// refused; 100 ms and 30 s when 0.
	RetryInitial, RetryMax time.Duration
	// Concurrency is how many ordering keys publish at once; 16 when 0.
	Concurrency int
	// Service labels the relay's metrics (outbox lag, pending rows, events
	// published; see docs/metrics.md).
	Service string
	// MeterProvider records the metrics; the global one when nil.
	MeterProvider metric.MeterProvider
}

func (c *RelayConfig) setDefaults() {
	if c.ID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.ID = "relay-" + hex.EncodeToString(b[:])
	}
	c.BatchSize = cmpOr(c.BatchSize, 256)
	c.Lease = cmpOr(c.Lease, 30*time.Second)
	c.PollInterval = cmpOr(c.PollInterval, time.Second)
	c.RetryInitial = cmpOr(c.RetryInitial, 100*time.Millisecond)
	c.RetryMax = cmpOr(c.RetryMax, 30*time.Second)
	c.Concurrency = cmpOr(c.Concurrency, 16)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// RelayStats count a relay's work.
type RelayStats struct {
	Published, Failed, Claims int64
}

// Relay publishes committed outbox rows: in commit order per ordering key,
// with the publisher's confirms, then deletes (or marks) them. It is woken
// at commit — in process by the DB, across processes by PostgreSQL's
// LISTEN/NOTIFY — and polls as a fallback. Several relays may share a
// database: a relay holds the head of an ordering key while it publishes
// the key's rows (PostgreSQL: a row lock taken FOR UPDATE SKIP LOCKED in
// the pass's transaction; SQLite: a lease), so two relays never publish
// one row at the same time, and a relay that dies hands its rows over (at
// once on PostgreSQL, when the lease ends on SQLite). A relay killed between
// publishing and marking publishes those rows again: delivery is
// at-least-once and the consumers' idempotency keys make it harmless.
type Relay struct {
	db     *DB
	pub    message.Publisher
	system string // messaging.system of the publisher, for spans
	cfg    RelayConfig
	logger *slog.Logger
	tel    *telemetry.Instruments
	// byTopic caches each topic's attribute set (metric.MeasurementOption).
	byTopic sync.Map

	published, failed, claims atomic.Int64
}

// NewRelay makes a relay that publishes db's outbox through pub.
func NewRelay(db *DB, pub message.Publisher, cfg RelayConfig, logger *slog.Logger) *Relay {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{db: db, pub: pub, system: tracing.SystemOf(pub), cfg: cfg, logger: logger, tel: telemetry.New(cfg.MeterProvider)}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), Failed: r.failed.Load(), Claims: r.claims.Load()}
}

// Run relays until ctx ends; it returns nil then. Errors of the database
// or the broker are logged and retried. Blocking; call it once per Relay.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer r.tel.ObservePending(r.cfg.Service, r.db.Pending)()
	remote := make(chan struct{}, 1)
	if r.db.dialect == Postgres {
		wg.Go(func() { r.listen(ctx, remote) })
	}
	// On SQLite, commits hand their rows to this relay (handoff.go) while
	// it runs, if no other relay of the process has them; a claim pass
	// then runs only when rows were written for the claims (local), a
	// handed-over row was released, or the poll interval passed.
	h := r.startHandoff(ctx)
	var handed <-chan struct{}
	blocked := map[string]time.Time{}
	if h != nil {
		defer r.stopHandoff(h)
		handed = h.wake
	}
	backoff := r.cfg.RetryInitial
	local := r.db.changed.wait()
	poll := time.NewTimer(0)
	defer poll.Stop()
	claims := true
	for {
		moreClaims, moreHanded := false, false
		if claims {
			local = r.db.changed.wait() // before the pass, so no commit is missed
			select {
			case <-remote: // a commit notified before this pass: the pass sees it
			default:
			}
			n, err := r.Pass(ctx)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				r.logger.LogAttrs(ctx, slog.LevelWarn, "outbox relay pass failed", slog.String("relay", r.cfg.ID), slog.Any("error", err))
				if !sleep(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, r.cfg.RetryMax)
				continue
			}
			backoff = r.cfg.RetryInitial
			moreClaims = n == r.cfg.BatchSize
			poll.Reset(r.cfg.PollInterval)
		}
		if h != nil {
			n, err := r.passHandoff(ctx, h, blocked)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				r.logger.LogAttrs(ctx, slog.LevelWarn, "outbox relay: settling handed-over rows failed; their lease hands them over",
					slog.String("relay", r.cfg.ID), slog.Any("error", err))
			}
			moreHanded = n == r.cfg.BatchSize
		}
		if claims = moreClaims; moreClaims || moreHanded {
			continue // more is waiting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-local:
			claims = true
		case <-remote:
			claims = true
		case <-handed:
		case <-poll.C:
			claims = true
		}
	}
}

// settleTimeout bounds settling a batch once the relay is stopping.
const settleTimeout = 10 * time.Second

// publishUnlessStopped publishes claimed rows; when ctx ended meanwhile,
// the rows it did not publish are not counted as refused (they are
// released).
func (r *Relay) publishUnlessStopped(ctx context.Context, rows []row) ([]int64, []failure) {
	done, failures := r.publish(ctx, rows)
	if ctx.Err() != nil {
		failures = nil
	}
	return done, failures
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// listen turns PostgreSQL notifications into wake-ups, reconnecting as
// needed.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, r.db.dsn)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+notifyChannel)
			for err == nil {
				_, err = conn.WaitForNotification(ctx)
				if err == nil {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
			conn.Close(context.Background())
		}
		if ctx.Err() == nil {
			r.logger.LogAttrs(ctx, slog.LevelWarn, "outbox relay: LISTEN connection lost; polling meanwhile", slog.Any("error", err))
			sleep(ctx, time.Second)
		}
	}
}

// row is a claimed outbox row.
type row struct {
	id                    int64
	messageID, topic, key string
	payload               []byte
	metadata              string
	attempts              int
	createdAt             time.Time
	// md is the metadata itself, of a row handed over at commit; nil for
	// a claimed row, whose metadata is decoded.
	md message.Metadata
}

// Pass claims a batch of rows, publishes them and settles them; it returns
// the number claimed. Run calls it in a loop; tests call it directly. Rows
// the broker confirmed are settled even when ctx ends meanwhile (for at
// most settleTimeout); rows left unpublished because ctx ended are
// released, not counted as refused.
func (r *Relay) Pass(ctx context.Context) (int, error) {
	if r.db.dialect == Postgres {
		return r.passLocked(ctx)
	}
	rows, err := r.claim(ctx)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.claims.Add(1)
	done, failures := r.publishUnlessStopped(ctx, rows)
	stmts, delays := r.settlement(r.cfg.ID, rows, done, failures, leased)
	if err := r.settle(ctx, stmts); err != nil {
		return len(rows), err
	}
	r.settled(ctx, done, failures, delays)
	return len(rows), nil
}

// settle runs a settlement's statements (SQLite), in the DB's group
// commit with the transactions committing meanwhile; even once ctx ended,
// for at most settleTimeout.
func (r *Relay) settle(ctx context.Context, stmts []stmt) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	err := r.db.InTx(sctx, func(tx *Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(sctx, s.q, s.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: settle: %w", err)
	}
	return nil
}

// passLocked is a pass on PostgreSQL. One transaction locks the batch
// (FOR UPDATE SKIP LOCKED), holds the locks while the rows are published,
// then deletes (or marks) them and commits. A relay claiming meanwhile
// skips the locked heads, and with them their keys; a relay that dies
// loses its connection and with it its locks, so its rows are free at
// once, and those it had published are published again.
func (r *Relay) passLocked(ctx context.Context) (int, error) {
	// The transaction outlives ctx, to settle what the broker confirmed.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Lease)
	defer cancel()
	tx, err := r.db.db.BeginTx(tctx, nil)
	if err != nil {
		return 0, fmt.Errorf("outbox: claim: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit: sql.ErrTxDone, ignored
	rows, err := r.lockBatch(ctx, tx)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.claims.Add(1)
	done, failures := r.publishUnlessStopped(ctx, rows)
	sctx, scancel := context.WithTimeout(tctx, settleTimeout)
	defer scancel()
	stmts, delays := r.settlement(r.cfg.ID, rows, done, failures, locked)
	if err := execAll(sctx, tx, r.db, stmts); err != nil {
		return len(rows), fmt.Errorf("outbox: settle: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return len(rows), fmt.Errorf("outbox: settle: %w", err)
	}
	r.settled(ctx, done, failures, delays)
	return len(rows), nil
}

// lockBatch selects and locks, in tx, up to BatchSize rows whose ordering
// keys are free: the key's head (its oldest unpublished row) is due and
// neither locked nor leased by another relay. It walks the unpublished
// rows in id order and stops after BatchSize heads, so its cost follows
// the batch, not the backlog; the rows of each head's key come through
// the (ordering_key, id) index.
func (r *Relay) lockBatch(ctx context.Context, tx *sql.Tx) ([]row, error) {
	if _, err := tx.ExecContext(ctx, batchPlan); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	now := time.Now().UTC()
	id, n := r.cfg.ID, r.cfg.BatchSize
	q := `WITH heads AS (` + headsQuery + ` FOR UPDATE SKIP LOCKED)
		SELECT k.id, k.message_id, k.topic, k.ordering_key, k.payload, k.metadata, k.attempts, k.created_at
		FROM heads, LATERAL (
			SELECT o.* FROM troupe_outbox o
			WHERE o.ordering_key = heads.ordering_key AND ` + freeRow + `
			ORDER BY o.id LIMIT ? FOR UPDATE SKIP LOCKED) k
		ORDER BY k.id LIMIT ?`
	// Planned for its arguments at every pass (the unnamed statement), in
	// one round trip once its result columns are known, which also makes
	// pgx read them in binary (a payload in text comes as hex, twice the
	// bytes).
	rs, err := tx.QueryContext(ctx, r.db.Rebind(q), pgx.QueryExecModeCacheDescribe, now, now, id, n, now, id, n, n)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	return scanRows(rs)
}

// batchPlan pins lockBatch's plan, for the rest of the pass's transaction:
// walk the unpublished rows through their id index in order, look each
// key up through (ordering_key, id), nested loops only. The planner picks
// it by itself only when the table's statistics are right, and an
// outbox's rarely are: it is a queue, filled and emptied between two
// ANALYZEs. Planned on statistics of a nearly empty table (a fresh one,
// or one ANALYZEd when idle), a backlog of 5,000 rows was read whole,
// anti-joined and sorted on every pass: 10-20 ms instead of 1-2 ms. The
// switches only make the other plans look dearer, so the query still runs
// without these indexes; jit is off because those costs would turn it on.
// The pass's other statements (DELETE ... WHERE id = ANY, UPDATE ...
// WHERE id = ?) go through the primary key either way.
const batchPlan = `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off;
	SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off`

// headsQuery selects the ordering keys whose head is due and not leased by
// another relay, oldest first. Arguments: now, now, relay ID, limit.
const headsQuery = `SELECT h.ordering_key FROM troupe_outbox h
	WHERE h.published_at IS NULL
	  AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= ?)
	  AND (h.locked_until IS NULL OR h.locked_until < ? OR h.locked_by = ?)
	  AND NOT EXISTS (SELECT 1 FROM troupe_outbox e
		WHERE e.ordering_key = h.ordering_key AND e.published_at IS NULL AND e.id < h.id)
	ORDER BY h.id LIMIT ?`

// freeRow is an unpublished row of alias o not leased by another relay.
// Arguments: now, relay ID.
const freeRow = `o.published_at IS NULL AND (o.locked_until IS NULL OR o.locked_until < ? OR o.locked_by = ?)`

// claim leases up to BatchSize rows (SQLite) whose ordering keys it can
// take: a key is free when its head is due and not leased by another
// relay. Holding a key's head keeps other relays off the key's later rows,
// which keeps each key in order. It is one statement: an UPDATE that
// leases the rows it selects and returns them; SQLite runs one writer at a
// time, so two relays' claims never overlap.
func (r *Relay) claim(ctx context.Context) (rows []row, err error) {
	now := time.Now().UTC()
	id, n := r.cfg.ID, r.cfg.BatchSize
	// In the DB's group commit, with the transactions committing meanwhile;
	// the statement's text is the same at every pass, so it is prepared once.
	err = r.db.InTx(ctx, func(tx *Tx) error {
		rs, err := tx.Query(ctx, claimQuery, id, now.Add(r.cfg.Lease), now, id, now, now, id, n, n)
		if err != nil {
			return fmt.Errorf("outbox: claim: %w", err)
		}
		rows, err = scanRows(rs)
		return err
	})
	return rows, err
}

// claimQuery leases the rows of free keys and returns them. Arguments:
// relay ID, lease end, now, relay ID, now, now, relay ID, limit, limit.
const claimQuery = `UPDATE troupe_outbox SET locked_by = ?, locked_until = ?
	WHERE id IN (
		SELECT o.id FROM troupe_outbox o
		WHERE ` + freeRow + ` AND o.ordering_key IN (` + headsQuery + `)
		ORDER BY o.id LIMIT ?)
	RETURNING id, message_id, topic, ordering_key, payload, metadata, attempts, created_at`

// scanRows reads claimed rows and closes rs; they come back in id order.
func scanRows(rs *sql.Rows) ([]row, error) {
	defer rs.Close()
	var rows []row
	for rs.Next() {
		var w row
		if err := rs.Scan(&w.id, &w.messageID, &w.topic, &w.key, &w.payload, &w.metadata, &w.attempts, &w.createdAt); err != nil {
			return nil, fmt.Errorf("outbox: claim: %w", err)
		}
		rows = append(rows, w)
	}
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.id, b.id) })
	return rows, nil
}

// failure is a row the broker refused, with the rows of its key after it.
type failure struct {
	row
	err error
}

// publish publishes the claimed rows. The ordering keys are dealt out to
// up to Concurrency workers; each publishes its share in commit order,
// consecutive rows of one topic (whatever their keys) in one Publish call,
// so that many confirms are in flight at once. A worker stops at its first
// refused row: the rows of its share after it are released for the next
// pass, which keeps every key in order; the other workers go on.
func (r *Relay) publish(ctx context.Context, rows []row) (done []int64, failures []failure) {
	var order []string
	byKey := map[string][]row{}
	for _, w := range rows {
		if _, ok := byKey[w.key]; !ok {
			order = append(order, w.key)
		}
		byKey[w.key] = append(byKey[w.key], w)
	}
	shares := make([][]row, min(r.cfg.Concurrency, len(order)))
	for i, k := range order {
		shares[i%len(shares)] = append(shares[i%len(shares)], byKey[k]...)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, share := range shares {
		slices.SortFunc(share, func(a, b row) int { return cmp.Compare(a.id, b.id) })
		wg.Go(func() {
			ok, f := r.publishKey(ctx, share)
			mu.Lock()
			done = append(done, ok...)
			if f != nil {
				failures = append(failures, *f)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return done, failures
}

// publishKey publishes rows in order, runs of one topic per Publish call,
// and stops at the first failure.
func (r *Relay) publishKey(ctx context.Context, rows []row) ([]int64, *failure) {
	var done []int64
	for len(rows) > 0 {
		n := 1
		for n < len(rows) && rows[n].topic == rows[0].topic {
			n++
		}
		msgs := make([]*message.Message, n)
		spans := make([]trace.Span, n)
		for i, w := range rows[:n] {
			msgs[i] = message.NewMessage(w.messageID, w.payload)
			if w.md != nil {
				msgs[i].Metadata = w.md
			} else if err := json.Unmarshal([]byte(w.metadata), &msgs[i].Metadata); err != nil {
				endSpans(spans[:i], err)
				return done, &failure{row: w, err: fmt.Errorf("decode metadata: %w", err)}
			}
			// The trace goes on from the emitter's span stored in the row,
			// through the time the row waited, to this publish.
			var pctx context.Context
			pctx, spans[i] = tracing.StartPublish(tracing.RecordWait(ctx, msgs[i], r.system, w.createdAt), msgs[i], r.system, w.topic)
			msgs[i].SetContext(pctx)
		}
		err := r.pub.Publish(rows[0].topic, msgs...)
		endSpans(spans, err)
		if err != nil {
			// The publisher stops at the first failure; the rows before
			// it may have been published too, and are published again.
			return done, &failure{row: rows[0], err: err}
		}
		now := time.Now()
		attrs := r.topicAttrs(rows[0].topic)
		for _, w := range rows[:n] {
			done = append(done, w.id)
			r.tel.OutboxLag.Record(ctx, now.Sub(w.createdAt).Seconds(), attrs)
		}
		r.tel.EventsPublished.Add(ctx, int64(n), attrs)
		rows = rows[n:]
	}
	return done, nil
}

// topicAttrs returns the metrics' attributes of a topic (an event name).
func (r *Relay) topicAttrs(topic string) metric.MeasurementOption {
	if a, ok := r.byTopic.Load(topic); ok {
		return a.(metric.MeasurementOption)
	}
	a := metric.WithAttributeSet(attribute.NewSet(telemetry.ServiceKey.String(r.cfg.Service),
		telemetry.EventKey.String(topic), telemetry.PathKey.String("outbox")))
	r.byTopic.Store(topic, a)
	return a
}

func endSpans(spans []trace.Span, err error) {
	for _, s := range spans {
		tracing.End(s, err)
	}
}

// hold is how a batch's rows are kept from other relays.
type hold uint8

const (
	leased hold = iota + 1 // locked_by / locked_until (SQLite)
	locked                 // row locks of the pass's transaction (PostgreSQL)
)

// stmt is a statement with ? placeholders and its arguments.
type stmt struct {
	q    string
	args []any
}

// settlement returns the statements that settle a batch: published rows
// are deleted (or, with Retention, marked); refused ones are scheduled
// for a retry with backoff (the delays are returned); leased rows neither
// published nor refused (after a refused row of their key) are released.
// Only rows still leased to leaseholder (the relay's ID, or its handoff's tag)
// are touched (with hold locked, the transaction's locks already
// guarantee it).
func (r *Relay) settlement(leaseholder string, claimed []row, done []int64, failures []failure, h hold) ([]stmt, []time.Duration) {
	now := time.Now().UTC()
	owner, owned := `locked_by = ? AND `, []any{leaseholder}
	if h == locked {
		owner, owned = "", nil
	}
	var stmts []stmt
	if len(done) > 0 {
		var args []any
		in, ids := r.inIDs(done)
		q := `DELETE FROM troupe_outbox WHERE ` + owner + `id ` + in
		if r.cfg.Retention > 0 {
			q = `UPDATE troupe_outbox SET published_at = ?, locked_by = NULL, locked_until = NULL WHERE ` + owner + `id ` + in
			args = append(args, now)
		}
		stmts = append(stmts, stmt{q, slices.Concat(args, owned, ids)})
	}
	delays := make([]time.Duration, len(failures))
	for i, f := range failures {
		delays[i] = min(r.cfg.RetryInitial<<min(f.attempts, 20), r.cfg.RetryMax)
		stmts = append(stmts, stmt{`UPDATE troupe_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, locked_by = NULL, locked_until = NULL
			WHERE ` + owner + `id = ?`, slices.Concat([]any{now.Add(delays[i]), f.err.Error()}, owned, []any{f.id})})
	}
	if h == leased {
		settled := make(map[int64]bool, len(done)+len(failures))
		for _, id := range done {
			settled[id] = true
		}
		for _, f := range failures {
			settled[f.id] = true
		}
		var rest []int64
		for _, w := range claimed {
			if !settled[w.id] {
				rest = append(rest, w.id)
			}
		}
		if len(rest) > 0 {
			in, ids := r.inIDs(rest)
			stmts = append(stmts, stmt{`UPDATE troupe_outbox SET locked_by = NULL, locked_until = NULL
				WHERE locked_by = ? AND id ` + in, append([]any{leaseholder}, ids...)})
		}
	}
	if r.cfg.Retention > 0 {
		stmts = append(stmts, stmt{`DELETE FROM troupe_outbox WHERE published_at IS NOT NULL AND published_at < ?`, []any{now.Add(-r.cfg.Retention)}})
	}
	return stmts, delays
}

// inIDs returns the condition "id is one of ids" and its one argument: on
// PostgreSQL "= ANY(?)" and an array, on SQLite a JSON array read by
// json_each, so that the statement's text, and its cached prepared
// statement, do not change with the number of ids.
func (r *Relay) inIDs(ids []int64) (string, []any) {
	if r.db.dialect == Postgres {
		return "= ANY(?)", []any{ids}
	}
	// SQLite: one JSON array, for the same reason.
	b := []byte{'['}
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return "IN (SELECT value FROM json_each(?))", []any{string(append(b, ']'))}
}

// execAll runs stmts in tx.
func execAll(ctx context.Context, tx *sql.Tx, db *DB, stmts []stmt) error {
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, db.Rebind(s.q), s.args...); err != nil {
			return err
		}
	}
	return nil
}

// settled counts and logs a batch once its settlement committed.
func (r *Relay) settled(ctx context.Context, done []int64, failures []failure, delays []time.Duration) {
	r.published.Add(int64(len(done)))
	for i, f := range failures {
		r.failed.Add(1)
		r.logger.LogAttrs(ctx, slog.LevelWarn, "outbox: broker refused a message; retrying later",
			slog.String("relay", r.cfg.ID), slog.String("message_id", f.messageID), slog.String("topic", f.topic),
			slog.String("ordering_key", f.key), slog.Int("attempts", f.attempts+1),
			slog.Duration("retry_in", delays[i]), slog.Any("error", f.err))
	}
}

// Pending counts the rows not yet published.
func (db *DB) Pending(ctx context.Context) (int, error) {
	var n int
	err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM troupe_outbox WHERE published_at IS NULL`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("outbox: pending: %w", err)
	}
	return n, nil
}
