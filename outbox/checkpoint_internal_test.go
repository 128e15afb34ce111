package outbox

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCheckpointOffTheCommitPath: committed pages reach the database file
// soon after the commit, though the WAL is far below the size at which a
// commit checkpoints by itself.
func TestCheckpointOffTheCommitPath(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/ckpt.db"
	db, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE blobs (b BLOB NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	const size = 400 << 10 // 100 pages: a WAL of 8,000 is far
	if err := db.InTx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO blobs (b) VALUES (?)`, []byte(strings.Repeat("x", size)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() >= before.Size()+size {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes 10 s after the commit (%d before it): not checkpointed", st.Size(), before.Size())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
