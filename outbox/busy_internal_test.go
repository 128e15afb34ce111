package outbox

import (
	"context"
	"database/sql"
	"errors"
	"testing"
)

// TestIsBusy: the error SQLite gives a writer that finds the file locked
// (what concurrent migrations meet, and retry) is busy; others are not.
func TestIsBusy(t *testing.T) {
	ctx := context.Background()
	dsn := "file:" + uriPath(t.TempDir()+"/busy.db") + "?_pragma=busy_timeout(0)&_pragma=journal_mode(WAL)&_txlock=immediate"
	a, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.ExecContext(ctx, `CREATE TABLE t (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	holder, err := a.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	_, err = b.BeginTx(ctx, nil)
	if err == nil {
		t.Fatal("a second writer began while the first held the lock")
	}
	if !isBusy(err) {
		t.Fatalf("isBusy(%v) = false for a writer that found the file locked", err)
	}
	for _, other := range []error{nil, errors.New("database is locked"), sql.ErrNoRows} {
		if isBusy(other) {
			t.Errorf("isBusy(%v) = true", other)
		}
	}
	if _, err := b.ExecContext(ctx, `SELECT * FROM missing`); err == nil || isBusy(err) {
		t.Errorf("a query of a missing table: %v, busy %v", err, isBusy(err))
	}
}
