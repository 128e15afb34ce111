//go:build integration

package pglazy

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/troupehq/troupe/internal/testutil"
)

// trips counts what a connection sends: each Exec or Query and each
// batch is one round trip to the server; ops lists them in order.
type trips struct {
	mu  sync.Mutex
	ops []string
}

func (tr *trips) add(op string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.ops = append(tr.ops, op)
}

func (tr *trips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	tr.add(firstWord(d.SQL))
	return ctx
}

func (tr *trips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (tr *trips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var words []string
	for _, q := range d.Batch.QueuedQueries {
		words = append(words, firstWord(q.SQL))
	}
	tr.add("[" + strings.Join(words, " ") + "]")
	return ctx
}

func (tr *trips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (tr *trips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// take returns the operations since the last take.
func (tr *trips) take() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	s := strings.Join(tr.ops, " ")
	tr.ops = nil
	return s
}

// firstWord returns the first word of each statement of q, joined by
// "+" when q holds several (pgx's simple protocol).
func firstWord(q string) string {
	var words []string
	for part := range strings.SplitSeq(strings.TrimPrefix(q, Deferred), ";") {
		if f := strings.Fields(part); len(f) > 0 {
			words = append(words, strings.ToLower(f[0]))
		}
	}
	return strings.Join(words, "+")
}

// open returns a pool of one connection to a fresh database, with a table
// t (k TEXT PRIMARY KEY), and the connection's trips.
func open(t *testing.T) (*sql.DB, *trips) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testutil.FreshPostgres(t))
	if err != nil {
		t.Fatal(err)
	}
	tr := &trips{}
	cfg.Tracer = tr
	db := sql.OpenDB(newConnector(cfg))
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	tr.take()
	return db, tr
}

func keys(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT k FROM t ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ks []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(ks, ",")
}

// TestRoundTrips: BEGIN goes with the first statement, deferred statements
// with the COMMIT; what the transaction does is the same.
func TestRoundTrips(t *testing.T) {
	db, tr := open(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "a"); err != nil {
		t.Fatal(err)
	}
	res, err := tx.Exec(Deferred+`INSERT INTO t VALUES ($1)`, "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.RowsAffected(); err == nil {
		t.Error("a deferred statement reported rows affected before it ran")
	}
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows seen in the transaction before its commit: %d (%v), want 1 (the deferred one not yet)", n, err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "b"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.take(), "[begin insert] select insert [insert commit]"; got != want {
		t.Errorf("round trips %q, want %q", got, want)
	}
	if got := keys(t, db); got != "a,b,c" {
		t.Errorf("committed %q, want a,b,c", got)
	}
}

// TestWithoutArguments: a first statement without arguments (pgx's simple
// protocol, several statements allowed) carries BEGIN in its text, and
// SET LOCAL stays local to the transaction.
func TestWithoutArguments(t *testing.T) {
	db, tr := open(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SET LOCAL statement_timeout = 1234; SET LOCAL lock_timeout = 567`); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := tx.QueryRow(`SHOW statement_timeout`).Scan(&v); err != nil || v != "1234ms" {
		t.Errorf("statement_timeout in the transaction %q (%v), want 1234ms", v, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.take(), "begin+set+set show commit"; got != want {
		t.Errorf("round trips %q, want %q", got, want)
	}
	if err := db.QueryRow(`SHOW statement_timeout`).Scan(&v); err != nil || v != "0" {
		t.Errorf("statement_timeout after the transaction %q (%v), want 0", v, err)
	}
}

// TestNothingSent: a transaction that ran nothing sends nothing; one that
// only queries begins before its query.
func TestNothingSent(t *testing.T) {
	db, tr := open(t)
	for _, end := range []func(*sql.Tx) error{(*sql.Tx).Commit, (*sql.Tx).Rollback} {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := end(tx); err != nil {
			t.Fatal(err)
		}
	}
	if got := tr.take(); got != "" {
		t.Errorf("round trips of empty transactions %q, want none", got)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.take(), "begin select rollback"; got != want {
		t.Errorf("round trips %q, want %q", got, want)
	}
}

// TestRollback: a rollback undoes the first statement, which carried the
// BEGIN, and drops the deferred ones.
func TestRollback(t *testing.T) {
	db, _ := open(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(Deferred+`INSERT INTO t VALUES ($1)`, "b"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, db); got != "" {
		t.Errorf("after the rollback %q, want nothing", got)
	}
}

// TestFailures: a first statement that fails leaves a transaction to roll
// back; a deferred statement that fails fails the commit, which keeps
// nothing of the transaction; the connection serves the next one.
func TestFailures(t *testing.T) {
	db, _ := open(t)
	if _, err := db.Exec(`INSERT INTO t VALUES ('taken')`); err != nil {
		t.Fatal(err)
	}

	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "taken"); err == nil {
		t.Fatal("a duplicate key inserted")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("rollback after a failed first statement: %v", err)
	}

	for _, first := range []bool{true, false} {
		tx, err = db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if first {
			if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "x"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(Deferred+`INSERT INTO t VALUES ($1)`, "y"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(Deferred+`INSERT INTO t VALUES ($1)`, "taken"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err == nil || !strings.Contains(err.Error(), "deferred to the commit") {
			t.Fatalf("commit with a failing deferred statement (begun %v): %v, want its error", first, err)
		}
		if got := keys(t, db); got != "taken" {
			t.Errorf("after the failed commit (begun %v): %q, want taken alone", first, got)
		}
	}

	// A statement failing in the transaction makes the COMMIT a rollback.
	tx, err = db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "z"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, "taken"); err == nil {
		t.Fatal("a duplicate key inserted")
	}
	if err := tx.Commit(); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Errorf("commit of a failed transaction: %v, want pgx.ErrTxCommitRollback", err)
	}
	if got := keys(t, db); got != "taken" {
		t.Errorf("after the failed transaction: %q, want taken alone", got)
	}
}

// TestOptionsBeginAtOnce: a transaction with options begins as pgx's
// driver does, and a deferred statement in it runs at once.
func TestOptionsBeginAtOnce(t *testing.T) {
	db, tr := open(t)
	tx, err := db.BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		t.Fatal(err)
	}
	var level string
	if err := tx.QueryRow(`SHOW transaction_isolation`).Scan(&level); err != nil || level != "serializable" {
		t.Errorf("isolation %q (%v), want serializable", level, err)
	}
	if _, err := tx.Exec(Deferred+`INSERT INTO t VALUES ($1)`, "a"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.take(), "begin show insert commit"; got != want {
		t.Errorf("round trips %q, want %q", got, want)
	}
	if got := keys(t, db); got != "a" {
		t.Errorf("committed %q, want a", got)
	}
}

// TestPgxOptions: a statement whose first argument is one of pgx's
// options (here a query mode) is not batched, since pgx reads them only
// outside a batch: BEGIN goes alone before it, and it runs at once even
// when marked Deferred.
func TestPgxOptions(t *testing.T) {
	db, tr := open(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, pgx.QueryExecModeExec, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(Deferred+`INSERT INTO t VALUES ($1)`, pgx.QueryExecModeExec, "b"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.take(), "begin insert insert commit"; got != want {
		t.Errorf("round trips %q, want %q", got, want)
	}
	if got := keys(t, db); got != "a,b" {
		t.Errorf("committed %q, want a,b", got)
	}
}
