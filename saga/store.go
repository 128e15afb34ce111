package saga

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/troupehq/troupe/internal/storetext"
	"github.com/troupehq/troupe/outbox"
)

// Store keeps the instances of sagas and their histories in the tracker's
// database (SQLite or PostgreSQL, an outbox.DB), in tables of its own
// (troupe_sagas, troupe_saga_history) that OpenStore migrates. Several
// trackers (replicas) may share one: an instance's row is locked while
// its history grows and its state is derived again. Safe for concurrent
// use.
type Store struct {
	db    *outbox.DB
	sagas []*Saga
}

// ErrNotFound is returned for an unknown instance.
var ErrNotFound = errors.New("saga: no such instance")

// OpenStore migrates the tracker's tables in db and returns a store of
// the instances of sagas (each validated). Several processes may open one
// database at once.
func OpenStore(ctx context.Context, db *outbox.DB, sagas ...*Saga) (*Store, error) {
	if len(sagas) == 0 {
		return nil, errors.New("saga: store: no saga declared")
	}
	for _, s := range sagas {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	return &Store{db: db, sagas: sagas}, nil
}

// DB returns the store's database.
func (st *Store) DB() *outbox.DB { return st.db }

func (st *Store) saga(name string) (*Saga, error) {
	i := slices.IndexFunc(st.sagas, func(s *Saga) bool { return s.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("saga: no saga %q declared in this store", name)
	}
	return st.sagas[i], nil
}

// Instance is a saga instance as the tracker knows it.
type Instance struct {
	Saga   string `json:"saga"`
	ID     string `json:"id"`
	State  State  `json:"state"`
	Step   string `json:"step,omitempty"`
	Reason string `json:"reason,omitempty"`
	// StartedAt is the Start event's production time (or the earliest
	// event's, before the Start event is recorded).
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// DeadlineAt and Deadline: the next deadline of a running instance.
	DeadlineAt *time.Time `json:"deadline_at,omitempty"`
	Deadline   string     `json:"deadline,omitempty"`
	// History is filled by Get, in time order.
	History []Entry `json:"history,omitempty"`
}

// nanos is t as the store keeps times: Unix nanoseconds. A time beyond
// their range (years 1677 to 2262), such as a deadline far ahead, is kept
// as the nearest end of it, where UnixNano would overflow.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanos):
		return math.MinInt64
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// minNanos and maxNanos bound the times the store keeps.
var minNanos, maxNanos = fromNanos(math.MinInt64), fromNanos(math.MaxInt64)

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// record adds e to the history of instance (s, id) in tx and derives its
// status again. It reports the status before and after, and false when
// the entry's message id was recorded already (nothing changed).
func (st *Store) record(ctx context.Context, tx *outbox.Tx, s *Saga, id string, e Entry) (before, after Status, added bool, err error) {
	rs, err := st.recordAll(ctx, tx, s, []pending{{id, e}})
	if err != nil {
		return before, after, false, err
	}
	return rs[0].before, rs[0].after, rs[0].added, nil
}

// pending is an entry to add to the history of instance id.
type pending struct {
	id string
	e  Entry
}

// recorded is what adding a pending entry did: the instance's status
// before and after, and false when the entry's message id was recorded
// already (nothing changed).
type recorded struct {
	before, after Status
	added         bool
}

// recordAll adds the entries of items to their instances' histories in
// tx, in the order of items, and derives the instances' statuses again.
// Whatever the number of items and instances, it reads the histories in
// one statement and writes the new entries and the instances' rows in a
// few multi-row statements; the statuses are derived in memory, each
// entry's from its instance's history and the entries before it in items.
// An entry whose message id is in its instance's history (or earlier in
// items) is not added. The histories read are exact: on PostgreSQL the
// instances' rows are created or locked (a no-op update) first, in id
// order, for the rest of tx, so that two replicas recording events of one
// instance at once derive one after the other (and do not deadlock);
// SQLite's immediate transaction holds the database's lock already.
func (st *Store) recordAll(ctx context.Context, tx *outbox.Tx, s *Saga, items []pending) ([]recorded, error) {
	type instance struct {
		id      string
		history []Entry
		first   *Entry // the first of items' entries of the instance
		status  Status // derived from history; zero while empty
		last    *Entry // the newest entry added, when changed
		changed bool
	}
	insts := make([]instance, 0, len(items))
	byID := make(map[string]int, len(items)) // index in insts
	for i := range items {
		if _, ok := byID[items[i].id]; !ok {
			byID[items[i].id] = len(insts)
			insts = append(insts, instance{id: items[i].id, first: &items[i].e})
		}
	}
	slices.SortFunc(insts, func(a, b instance) int { return strings.Compare(a.id, b.id) })
	ids := make([]string, len(insts))
	for i := range insts {
		ids[i] = insts[i].id
		byID[insts[i].id] = i
	}
	if st.db.Dialect() == outbox.Postgres {
		rows := make([]any, 0, len(insts)*lockInstances.width)
		for _, in := range insts {
			rows = append(rows, s.Name, in.id, string(Running), "", "", nanos(in.first.At), nanos(in.first.RecordedAt), nil, "")
		}
		if err := execRows(ctx, tx, lockInstances, rows); err != nil {
			return nil, fmt.Errorf("saga: lock instances: %w", err)
		}
	}
	histories, err := st.readHistories(ctx, tx, s.Name, ids)
	if err != nil {
		return nil, err
	}
	for id, h := range histories {
		in := &insts[byID[id]]
		in.history, in.status = h, Derive(s, h)
	}
	out := make([]recorded, len(items))
	added := make([]pending, 0, len(items))
	for i := range items {
		it := &items[i]
		in := &insts[byID[it.id]]
		if slices.ContainsFunc(in.history, func(e Entry) bool { return e.MessageID == it.e.MessageID }) {
			out[i] = recorded{before: in.status, after: in.status}
			continue
		}
		// Seq orders the history in Derive; the entries of one instance
		// are inserted in this order, so their rows' seq keep it.
		e := it.e
		e.Seq = 1
		if n := len(in.history); n > 0 {
			e.Seq = in.history[n-1].Seq + 1
		}
		before := in.status
		in.history = append(in.history, e)
		in.status, in.last, in.changed = Derive(s, in.history), &it.e, true
		out[i] = recorded{before: before, after: in.status, added: true}
		added = append(added, *it)
	}
	if err := st.insertEntries(ctx, tx, s.Name, added); err != nil {
		return nil, err
	}
	rows := make([]any, 0, len(insts)*upsertInstances.width)
	for _, in := range insts {
		if !in.changed {
			continue
		}
		var deadline any
		if !in.status.DeadlineAt.IsZero() {
			deadline = nanos(in.status.DeadlineAt)
		}
		rows = append(rows, s.Name, in.id, string(in.status.State), in.status.Step, in.status.Reason,
			nanos(in.status.StartedAt), nanos(in.last.RecordedAt), deadline, in.status.Deadline)
	}
	if err := execRows(ctx, tx, upsertInstances, rows); err != nil {
		return nil, fmt.Errorf("saga: update instances: %w", err)
	}
	return out, nil
}

// insertEntries adds the entries of items to the history, in order.
func (st *Store) insertEntries(ctx context.Context, tx *outbox.Tx, saga string, items []pending) error {
	rows := make([]any, 0, len(items)*insertHistory.width)
	for _, it := range items {
		e := &it.e
		rows = append(rows, saga, it.id, nanos(e.At), nanos(e.RecordedAt), string(e.Kind), e.Event, e.MessageID,
			e.CausationID, e.Step, e.Meaning, e.Error, e.Actor, e.Queue, e.TraceID)
	}
	if err := execRows(ctx, tx, insertHistory, rows); err != nil {
		return fmt.Errorf("saga: history: %w", err)
	}
	return nil
}

// rowsStatement is a multi-row INSERT of rows of width values, its texts
// built by newRowsStatement: head, a parenthesized tuple of placeholders
// per row, then tail.
type rowsStatement struct {
	width int
	// texts[k] is the statement for 1<<k rows.
	texts [maxRowsShift + 1]string
}

// maxRowsShift: a statement writes at most 1<<maxRowsShift rows (448
// placeholders for the history's 14 columns).
const maxRowsShift = 5

func newRowsStatement(head string, width int, tail string) *rowsStatement {
	rs := &rowsStatement{width: width}
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", width), ", ") + ")"
	for k := range rs.texts {
		rs.texts[k] = head + " VALUES " + strings.TrimSuffix(strings.Repeat(tuple+", ", 1<<k), ", ") + tail
	}
	return rs
}

// execRows writes rows with statement rs, in order: rows holds the
// values of each row after the other's (rs.width each). It writes them in
// runs of a power of two rows, so that a few statement texts (each
// prepared once) cover every count.
func execRows(ctx context.Context, tx *outbox.Tx, rs *rowsStatement, rows []any) error {
	for len(rows) > 0 {
		n := len(rows) / rs.width
		k := min(bits.Len(uint(n))-1, maxRowsShift)
		end := (1 << k) * rs.width
		if _, err := tx.Exec(ctx, rs.texts[k], rows[:end]...); err != nil {
			return err
		}
		rows = rows[end:]
	}
	return nil
}

// insertHistory adds entries to histories. A message id recorded already
// is a conflict (an error): recordAll reads the histories first and adds
// only new ones.
var insertHistory = newRowsStatement(`INSERT INTO troupe_saga_history (saga, id, at, recorded_at, kind, event, message_id, causation_id, step, meaning, error, actor, queue, trace_id)`, 14, "")

// upsertInstances writes instances' rows.
var upsertInstances = newRowsStatement(`INSERT INTO troupe_sagas (saga, id, state, step, reason, started_at, updated_at, deadline_at, deadline)`, 9,
	` ON CONFLICT (saga, id) DO UPDATE SET state = excluded.state, step = excluded.step,
		reason = excluded.reason, started_at = excluded.started_at, updated_at = excluded.updated_at,
		deadline_at = excluded.deadline_at, deadline = excluded.deadline`)

// lockInstances creates instances' rows, or locks them with a no-op
// update, on PostgreSQL: a few statements per batch of any size instead of
// one per instance. PostgreSQL takes the rows' locks in the order of the
// VALUES, which recordAll sorts by id, as every replica does.
var lockInstances = newRowsStatement(`INSERT INTO troupe_sagas (saga, id, state, step, reason, started_at, updated_at, deadline_at, deadline)`, 9,
	` ON CONFLICT (saga, id) DO UPDATE SET saga = troupe_sagas.saga`)

// lock takes the instance's row lock for the rest of tx (PostgreSQL; on
// SQLite the immediate transaction already holds the database's).
func (st *Store) lock(ctx context.Context, tx *outbox.Tx, saga, id string) error {
	if st.db.Dialect() != outbox.Postgres {
		return nil
	}
	var one int
	if err := tx.QueryRow(ctx, `SELECT 1 FROM troupe_sagas WHERE saga = ? AND id = ? FOR UPDATE`, saga, id).Scan(&one); err != nil {
		return fmt.Errorf("saga: lock %s: %w", id, err)
	}
	return nil
}

// querier runs a query written with ? placeholders: an *outbox.DB, or an
// *outbox.Tx to read within a transaction.
type querier interface {
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// historyQuery selects an instance's history. Arguments: saga, id.
const historyQuery = `SELECT seq, at, recorded_at, kind, event, message_id, causation_id, step, meaning, error, actor, queue, trace_id
	FROM troupe_saga_history WHERE saga = ? AND id = ? ORDER BY seq`

// derivableQuery selects, for the instances of a saga whose ids are in a
// list, the columns of their histories that Derive reads, and the message
// ids. Arguments: saga, the ids (a JSON array on SQLite, an array on
// PostgreSQL, so that the statement's text is the same for any count).
const (
	derivableQuery         = `SELECT id, seq, at, kind, event, step, error, message_id FROM troupe_saga_history WHERE saga = ? AND id `
	derivableQuerySQLite   = derivableQuery + `IN (SELECT value FROM json_each(?))`
	derivableQueryPostgres = derivableQuery + `= ANY(?)`
)

// readHistories reads the histories of instances ids of saga through q,
// the fields Derive reads and the message ids, each history in seq order.
func (st *Store) readHistories(ctx context.Context, q querier, saga string, ids []string) (map[string][]Entry, error) {
	query, list := derivableQueryPostgres, any(ids)
	if st.db.Dialect() == outbox.SQLite {
		b, err := json.Marshal(ids)
		if err != nil {
			return nil, err
		}
		query, list = derivableQuerySQLite, string(b)
	}
	rows, err := q.Query(ctx, query, saga, list)
	if err != nil {
		return nil, fmt.Errorf("saga: histories: %w", err)
	}
	defer rows.Close()
	out := map[string][]Entry{}
	for rows.Next() {
		var e Entry
		var id, kind string
		var at int64
		if err := rows.Scan(&id, &e.Seq, &at, &kind, &e.Event, &e.Step, &e.Error, &e.MessageID); err != nil {
			return nil, fmt.Errorf("saga: histories: %w", err)
		}
		e.At, e.Kind = fromNanos(at), EntryKind(kind)
		out[id] = append(out[id], e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("saga: histories: %w", err)
	}
	for _, h := range out {
		slices.SortFunc(h, func(a, b Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	}
	return out, nil
}

// history reads an instance's history through q, in seq order.
func (st *Store) history(ctx context.Context, q querier, saga, id string) ([]Entry, error) {
	rows, err := q.Query(ctx, historyQuery, saga, id)
	if err != nil {
		return nil, fmt.Errorf("saga: history of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var at, rec int64
		var kind string
		if err := rows.Scan(&e.Seq, &at, &rec, &kind, &e.Event, &e.MessageID, &e.CausationID, &e.Step, &e.Meaning, &e.Error, &e.Actor, &e.Queue, &e.TraceID); err != nil {
			return nil, err
		}
		e.At, e.Kind, e.RecordedAt = fromNanos(at), EntryKind(kind), fromNanos(rec)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Query selects instances for List.
type Query struct {
	// Saga and State filter when set.
	Saga  string
	State State
	// Limit bounds the answer; 100 when 0.
	Limit int
}

// List returns the instances that q selects, most recently updated
// first, without their histories. Safe for concurrent use.
func (st *Store) List(ctx context.Context, q Query) ([]Instance, error) {
	if q.State != "" && !slices.Contains(States, q.State) {
		return nil, fmt.Errorf("saga: unknown state %q (want one of %v)", q.State, States)
	}
	if !storetext.Keepable(q.Saga) {
		return nil, nil // no saga has that name
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	where, args := "1 = 1", []any{}
	if q.Saga != "" {
		where += " AND saga = ?"
		args = append(args, q.Saga)
	}
	if q.State != "" {
		where += " AND state = ?"
		args = append(args, string(q.State))
	}
	args = append(args, q.Limit)
	return st.instances(ctx, st.db, `WHERE `+where+` ORDER BY updated_at DESC, id LIMIT ?`, args...)
}

func (st *Store) instances(ctx context.Context, q querier, tail string, args ...any) ([]Instance, error) {
	rows, err := q.Query(ctx, `SELECT saga, id, state, step, reason, started_at, updated_at, deadline_at, deadline
		FROM troupe_sagas `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	defer rows.Close()
	var out []Instance
	for rows.Next() {
		var in Instance
		var state string
		var started, updated int64
		var deadline sql.NullInt64
		if err := rows.Scan(&in.Saga, &in.ID, &state, &in.Step, &in.Reason, &started, &updated, &deadline, &in.Deadline); err != nil {
			return nil, err
		}
		in.State, in.StartedAt, in.UpdatedAt = State(state), fromNanos(started), fromNanos(updated)
		if deadline.Valid {
			t := fromNanos(deadline.Int64)
			in.DeadlineAt = &t
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// Get returns instance id of saga with its history in time order
// (production times; the order of recording breaks ties). An empty saga
// name finds the instance in whichever saga has it; two is an error.
// ErrNotFound when there is none. Safe for concurrent use.
func (st *Store) Get(ctx context.Context, saga, id string) (Instance, error) {
	if !storetext.Keepable(id) || !storetext.Keepable(saga) { // no store holds it (PostgreSQL would refuse the query)
		return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, storetext.Storable(id))
	}
	tail, args := `WHERE id = ?`, []any{id}
	if saga != "" {
		tail, args = tail+` AND saga = ?`, append(args, saga)
	}
	ins, err := st.instances(ctx, st.db, tail, args...)
	switch {
	case err != nil:
		return Instance{}, err
	case len(ins) == 0:
		return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	case len(ins) > 1:
		return Instance{}, fmt.Errorf("saga: instance %s exists in several sagas; name one", id)
	}
	in := ins[0]
	if in.History, err = st.history(ctx, st.db, in.Saga, id); err != nil {
		return Instance{}, err
	}
	// The status is derived from the history read, not taken from the
	// row read before it, so that the two agree even while the tracker
	// records more.
	if s, err := st.saga(in.Saga); err == nil && len(in.History) > 0 {
		d := Derive(s, in.History)
		in.State, in.Step, in.Reason, in.StartedAt, in.Deadline, in.DeadlineAt = d.State, d.Step, d.Reason, d.StartedAt, d.Deadline, nil
		if !d.DeadlineAt.IsZero() {
			in.DeadlineAt = &d.DeadlineAt
		}
	}
	slices.SortStableFunc(in.History, func(a, b Entry) int { return a.At.Compare(b.At) })
	return in, nil
}
