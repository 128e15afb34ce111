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
	"strings"
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
	// Lease is how long claimed rows stay the relay's; a relay that dies
	// hands its rows over when the lease ends. 30 s when 0.
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
// database: a relay leases the head of an ordering key before publishing
// it, so two relays never publish one row at the same time, and a relay
// that dies hands its rows over when its lease ends. A relay killed between
// publishing and marking publishes those rows again: delivery is
// at-least-once and the consumers' idempotency keys make it harmless.
type Relay struct {
	db     *DB
	pub    message.Publisher
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
	return &Relay{db: db, pub: pub, cfg: cfg, logger: logger, tel: telemetry.New(cfg.MeterProvider)}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), Failed: r.failed.Load(), Claims: r.claims.Load()}
}

// Run relays until ctx ends; it returns nil then. Errors of the database
// or the broker are logged and retried.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer r.tel.ObservePending(r.cfg.Service, r.db.Pending)()
	remote := make(chan struct{}, 1)
	if r.db.dialect == Postgres {
		wg.Go(func() { r.listen(ctx, remote) })
	}
	backoff := r.cfg.RetryInitial
	for {
		local := r.db.changed.wait() // before the pass, so no commit is missed
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
		case n == r.cfg.BatchSize:
			backoff = r.cfg.RetryInitial
			continue // more is waiting
		}
		backoff = r.cfg.RetryInitial
		select {
		case <-ctx.Done():
			return nil
		case <-local:
		case <-remote:
		case <-time.After(r.cfg.PollInterval):
		}
	}
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
}

// Pass claims a batch of rows, publishes them and settles them; it returns
// the number claimed. Run calls it in a loop; tests call it directly.
func (r *Relay) Pass(ctx context.Context) (int, error) {
	if r.db.writer != nil {
		// SQLite: look before taking the writer's turn, which the
		// service's handlers are queueing for. A relay is woken at every
		// commit, and the pass before often took those rows already.
		if found, err := r.anyClaimable(ctx); err != nil || !found {
			return 0, err
		}
	}
	rows, err := r.claim(ctx)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.claims.Add(1)
	done, failures := r.publish(ctx, rows)
	return len(rows), r.settle(ctx, done, failures)
}

// anyClaimable reports whether an unpublished row may be claimable now,
// reading outside a transaction. A row committed after it looked wakes the
// relay again.
func (r *Relay) anyClaimable(ctx context.Context) (bool, error) {
	now := time.Now().UTC()
	var one int
	err := r.db.db.QueryRowContext(ctx, `SELECT 1 FROM troupe_outbox
		WHERE published_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
		  AND (locked_until IS NULL OR locked_until < ? OR locked_by = ?) LIMIT 1`, now, now, r.cfg.ID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("outbox: look for rows: %w", err)
	}
	return true, nil
}

// claim leases up to BatchSize rows whose ordering keys it can take: a key
// is free when its oldest unpublished row (its head) is due and not leased
// by another relay. Holding a key's head keeps other relays off the key's
// later rows, which keeps each key in order.
func (r *Relay) claim(ctx context.Context) ([]row, error) {
	now := time.Now().UTC()
	lock := ""
	if r.db.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	q := `SELECT o.id, o.message_id, o.topic, o.ordering_key, o.payload, o.metadata, o.attempts, o.created_at
		FROM troupe_outbox o
		WHERE o.published_at IS NULL
		  AND (o.locked_until IS NULL OR o.locked_until < ? OR o.locked_by = ?)
		  AND o.ordering_key IN (
			SELECT h.ordering_key FROM troupe_outbox h
			WHERE h.published_at IS NULL
			  AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= ?)
			  AND (h.locked_until IS NULL OR h.locked_until < ? OR h.locked_by = ?)
			  AND NOT EXISTS (SELECT 1 FROM troupe_outbox e
				WHERE e.ordering_key = h.ordering_key AND e.published_at IS NULL AND e.id < h.id)
			ORDER BY h.id LIMIT ?` + lock + `)
		ORDER BY o.id LIMIT ?`
	var rows []row
	err := r.db.InTx(ctx, func(tx *Tx) error {
		args := []any{now, r.cfg.ID, now, now, r.cfg.ID, r.cfg.BatchSize, r.cfg.BatchSize}
		var rs *sql.Rows
		var err error
		if st := tx.stmt(ctx, q); st != nil {
			rs, err = st.QueryContext(ctx, args...)
		} else {
			rs, err = tx.QueryContext(ctx, r.db.Rebind(q), args...)
		}
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var w row
			if err := rs.Scan(&w.id, &w.messageID, &w.topic, &w.key, &w.payload, &w.metadata, &w.attempts, &w.createdAt); err != nil {
				return err
			}
			rows = append(rows, w)
		}
		if err := rs.Err(); err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]any, 0, len(rows)+2)
		ids = append(ids, r.cfg.ID, now.Add(r.cfg.Lease))
		for _, w := range rows {
			ids = append(ids, w.id)
		}
		// Not tx.Exec: a statement per batch size is not worth caching.
		_, err = tx.ExecContext(ctx, r.db.Rebind(`UPDATE troupe_outbox SET locked_by = ?, locked_until = ? WHERE id IN (`+placeholders(len(rows))+`)`), ids...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	return rows, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
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
			if err := json.Unmarshal([]byte(w.metadata), &msgs[i].Metadata); err != nil {
				endSpans(spans[:i], err)
				return done, &failure{row: w, err: fmt.Errorf("decode metadata: %w", err)}
			}
			// The trace goes on from the emitter's span stored in the row,
			// through the time the row waited, to this publish.
			var pctx context.Context
			pctx, spans[i] = tracing.StartPublish(tracing.RecordWait(ctx, msgs[i], w.createdAt), msgs[i], w.topic)
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

// settle marks published rows (deleting them without retention) and
// schedules refused ones for a retry with backoff; every lease is
// released. Only rows still leased by this relay are touched.
func (r *Relay) settle(ctx context.Context, done []int64, failures []failure) error {
	now := time.Now().UTC()
	return r.db.InTx(ctx, func(tx *Tx) error {
		if len(done) > 0 {
			args := make([]any, 0, len(done)+2)
			q := `DELETE FROM troupe_outbox WHERE locked_by = ? AND id IN (` + placeholders(len(done)) + `)`
			if r.cfg.Retention > 0 {
				q = `UPDATE troupe_outbox SET published_at = ?, locked_by = NULL, locked_until = NULL WHERE locked_by = ? AND id IN (` + placeholders(len(done)) + `)`
				args = append(args, now)
			}
			args = append(args, r.cfg.ID)
			for _, id := range done {
				args = append(args, id)
			}
			if _, err := tx.ExecContext(ctx, r.db.Rebind(q), args...); err != nil {
				return err
			}
			r.published.Add(int64(len(done)))
		}
		for _, f := range failures {
			delay := min(r.cfg.RetryInitial<<min(f.attempts, 20), r.cfg.RetryMax)
			if _, err := tx.Exec(ctx, `UPDATE troupe_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
				WHERE id = ? AND locked_by = ?`, now.Add(delay), f.err.Error(), f.id, r.cfg.ID); err != nil {
				return err
			}
			r.failed.Add(1)
			r.logger.LogAttrs(ctx, slog.LevelWarn, "outbox: broker refused a message; retrying later",
				slog.String("message_id", f.messageID), slog.String("topic", f.topic),
				slog.Int("attempts", f.attempts+1), slog.Duration("retry_in", delay), slog.Any("error", f.err))
		}
		// Release what this relay still holds (the rest of refused keys).
		if _, err := tx.Exec(ctx, `UPDATE troupe_outbox SET locked_by = NULL, locked_until = NULL
			WHERE locked_by = ? AND published_at IS NULL`, r.cfg.ID); err != nil {
			return err
		}
		if r.cfg.Retention > 0 {
			_, err := tx.Exec(ctx, `DELETE FROM troupe_outbox WHERE published_at IS NOT NULL AND published_at < ?`, now.Add(-r.cfg.Retention))
			return err
		}
		return nil
	})
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
