package twopc

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/troupehq/troupe/outbox"
)

// Status is a transaction as the coordinator's log has it.
type Status struct {
	GID         string
	Coordinator string
	// State is "preparing", "committed" or "aborted".
	State string
	// Outcome is zero while the transaction is undecided.
	Outcome  Outcome
	Reason   string
	Created  time.Time
	Deadline time.Time
	Decided  time.Time // zero while undecided
	Finished time.Time // zero until every participant acknowledged
	// TraceParent is the W3C traceparent of the transaction's trace.
	TraceParent string
	Branches    []BranchStatus
}

// Show returns transaction gid from the log; ErrUnknown if it has no
// record.
func (c *Coordinator) Show(ctx context.Context, gid string) (Status, error) {
	return Show(ctx, c.db, gid)
}

// Show reads transaction gid from the coordinator log in db (any
// coordinator); ErrUnknown if it has no record. Safe for concurrent use.
func Show(ctx context.Context, db *outbox.DB, gid string) (Status, error) {
	row := db.QueryRow(ctx, selectStatus+` WHERE gid = ?`, gid)
	s, err := scanStatus(row)
	if err != nil {
		return Status{}, errNoRows(err, gid)
	}
	if s.Branches, err = loadBranches(ctx, db, gid); err != nil {
		return Status{}, err
	}
	return s, nil
}

// ListFilter selects transactions for List.
type ListFilter struct {
	// State keeps only "preparing", "committed" or "aborted" ones; all
	// when empty.
	State string
	// Unfinished keeps only the transactions some participant has not
	// acknowledged.
	Unfinished bool
	// Limit bounds the result (newest first); 100 when 0.
	Limit int
}

// List returns the transactions of the coordinator log in db, newest
// first, without their branches. Safe for concurrent use.
func List(ctx context.Context, db *outbox.DB, f ListFilter) ([]Status, error) {
	switch f.State {
	case "", statePreparing, stateCommitted, stateAborted:
	default:
		return nil, fmt.Errorf("twopc: unknown state %q: want preparing, committed or aborted", f.State)
	}
	if f.Limit < 0 {
		return nil, fmt.Errorf("twopc: negative limit %d", f.Limit)
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	q, args := selectStatus+` WHERE 1 = 1`, []any{}
	if f.State != "" {
		q, args = q+` AND state = ?`, append(args, f.State)
	}
	if f.Unfinished {
		q += ` AND finished_at IS NULL`
	}
	q, args = q+` ORDER BY created_at DESC, gid LIMIT ?`, append(args, f.Limit)
	rows, err := db.SQL().QueryContext(ctx, db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("twopc: list: %w", err)
	}
	defer rows.Close()
	var out []Status
	for rows.Next() {
		s, err := scanStatus(rows)
		if err != nil {
			return nil, fmt.Errorf("twopc: list: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("twopc: list: %w", err)
	}
	return out, nil
}

const selectStatus = `SELECT gid, coordinator, state, reason, trace, created_at, deadline, decided_at, finished_at FROM troupe_twopc_tx`

func scanStatus(r interface{ Scan(...any) error }) (Status, error) {
	var s Status
	var trace string
	var created, deadline int64
	var decided, finished sql.NullInt64
	if err := r.Scan(&s.GID, &s.Coordinator, &s.State, &s.Reason, &trace, &created, &deadline, &decided, &finished); err != nil {
		return Status{}, err
	}
	s.Outcome = outcomeOf(s.State)
	s.Created, s.Deadline = time.Unix(0, created), time.Unix(0, deadline)
	if decided.Valid {
		s.Decided = time.Unix(0, decided.Int64)
	}
	if finished.Valid {
		s.Finished = time.Unix(0, finished.Int64)
	}
	s.TraceParent = decodeTrace(trace)["traceparent"]
	return s, nil
}
