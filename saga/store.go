package saga

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

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

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// record adds e to the history of instance (s, id) in tx and derives its
// status again. It reports the status before and after, and false when
// the entry's message id was recorded already (nothing changed).
func (st *Store) record(ctx context.Context, tx *outbox.Tx, s *Saga, id string, e Entry) (before, after Status, added bool, err error) {
	// On PostgreSQL the instance's row is created or locked (a no-op
	// update) first, for the rest of tx, so that two events of one
	// instance recorded at once by two replicas are derived one after the
	// other. SQLite's immediate transaction holds the database's lock
	// already.
	if st.db.Dialect() == outbox.Postgres {
		if _, err := tx.Exec(ctx, `INSERT INTO troupe_sagas (saga, id, state, step, reason, started_at, updated_at, deadline_at, deadline)
			VALUES (?, ?, ?, '', '', ?, ?, NULL, '') ON CONFLICT (saga, id) DO UPDATE SET saga = troupe_sagas.saga`,
			s.Name, id, string(Running), nanos(e.At), nanos(e.RecordedAt)); err != nil {
			return before, after, false, fmt.Errorf("saga: instance %s: %w", id, err)
		}
	}
	history, err := st.readHistory(ctx, tx, s.Name, id, derivableColumns)
	if err != nil {
		return before, after, false, err
	}
	before = Derive(s, history)
	if len(history) == 0 {
		before = Status{}
	}
	seq, added, err := st.insertEntry(ctx, tx, s.Name, id, e)
	if err != nil {
		return before, after, false, fmt.Errorf("saga: history of %s: %w", id, err)
	}
	if !added {
		return before, before, false, nil
	}
	e.Seq = seq
	after = Derive(s, append(history, e))
	var deadline any
	if !after.DeadlineAt.IsZero() {
		deadline = nanos(after.DeadlineAt)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO troupe_sagas (saga, id, state, step, reason, started_at, updated_at, deadline_at, deadline)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (saga, id) DO UPDATE SET state = excluded.state, step = excluded.step,
		reason = excluded.reason, started_at = excluded.started_at, updated_at = excluded.updated_at,
		deadline_at = excluded.deadline_at, deadline = excluded.deadline`,
		s.Name, id, string(after.State), after.Step, after.Reason, nanos(after.StartedAt), nanos(e.RecordedAt),
		deadline, after.Deadline); err != nil {
		return before, after, false, fmt.Errorf("saga: update %s: %w", id, err)
	}
	return before, after, true, nil
}

// insertEntryQuery adds an entry to the history unless its message id is
// there already. Arguments: the columns, in order.
const insertEntryQuery = `INSERT INTO troupe_saga_history (saga, id, at, recorded_at, kind, event, message_id, causation_id, step, meaning, error, actor, queue, trace_id)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (saga, id, message_id) DO NOTHING`

// insertEntry adds e to the history of (saga, id) in tx and returns its
// sequence number; false when its message id was recorded already.
func (st *Store) insertEntry(ctx context.Context, tx *outbox.Tx, saga, id string, e Entry) (int64, bool, error) {
	args := []any{saga, id, nanos(e.At), nanos(e.RecordedAt), string(e.Kind), e.Event, e.MessageID, e.CausationID, e.Step, e.Meaning, e.Error, e.Actor, e.Queue, e.TraceID}
	if st.db.Dialect() == outbox.Postgres {
		var seq int64
		err := tx.QueryRow(ctx, insertEntryQuery+` RETURNING seq`, args...).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil
		}
		return seq, err == nil, err
	}
	// SQLite: seq is the rowid; an Exec reports it without a result set
	// to step through (a third of the statement's cost).
	res, err := tx.Exec(ctx, insertEntryQuery, args...)
	if err != nil {
		return 0, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return 0, false, err
	}
	seq, err := res.LastInsertId()
	return seq, err == nil, err
}

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

// history reads an instance's history through q.
func (st *Store) history(ctx context.Context, q querier, saga, id string) ([]Entry, error) {
	return st.readHistory(ctx, q, saga, id, allColumns)
}

// derivableQuery selects the columns of an instance's history that Derive
// reads. Arguments: saga, id.
const derivableQuery = `SELECT seq, at, kind, event, step, error FROM troupe_saga_history WHERE saga = ? AND id = ? ORDER BY seq`

// historyColumns says which columns of a history to read.
type historyColumns uint8

const (
	allColumns historyColumns = iota
	// derivableColumns are those Derive reads (Seq, At, Kind, Event,
	// Step, Error): what record needs, at half the columns.
	derivableColumns
)

// readHistory reads an instance's history through q, the fields of cols.
func (st *Store) readHistory(ctx context.Context, q querier, saga, id string, cols historyColumns) ([]Entry, error) {
	query := historyQuery
	if cols == derivableColumns {
		query = derivableQuery
	}
	rows, err := q.Query(ctx, query, saga, id)
	if err != nil {
		return nil, fmt.Errorf("saga: history of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var at, rec int64
		var kind string
		dest := []any{&e.Seq, &at, &rec, &kind, &e.Event, &e.MessageID, &e.CausationID, &e.Step, &e.Meaning, &e.Error, &e.Actor, &e.Queue, &e.TraceID}
		if cols == derivableColumns {
			dest = []any{&e.Seq, &at, &kind, &e.Event, &e.Step, &e.Error}
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		e.At, e.Kind = fromNanos(at), EntryKind(kind)
		if cols == allColumns {
			e.RecordedAt = fromNanos(rec)
		}
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
