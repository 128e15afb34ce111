package outbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/troupehq/troupe/outbox"
)

func TestAfterCommit(t *testing.T) {
	errRollback := errors.New("roll back")
	tests := []struct {
		name    string
		give    error // what the transaction's function returns
		wantRan bool
	}{
		{name: "commit", give: nil, wantRan: true},
		{name: "rollback", give: errRollback, wantRan: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := outbox.Open(ctx, "sqlite:"+t.TempDir()+"/t.db")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE t (v INTEGER)`); err != nil {
				t.Fatal(err)
			}
			ran, sawRow := false, false
			err = db.InTx(ctx, func(tx *outbox.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (1)`); err != nil {
					return err
				}
				tx.AfterCommit(func() {
					ran = true
					// Another connection sees the writes: the commit is done.
					var n int
					_ = db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n)
					sawRow = n == 1
				})
				return tt.give
			})
			if !errors.Is(err, tt.give) {
				t.Fatalf("InTx: %v, want %v", err, tt.give)
			}
			if ran != tt.wantRan || sawRow != tt.wantRan {
				t.Fatalf("after commit ran %v (saw the row %v), want %v", ran, sawRow, tt.wantRan)
			}
		})
	}
}
