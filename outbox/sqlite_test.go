package outbox_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/outbox/outboxtest"
)

func TestConformanceSQLite(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/troupe.db" })
}

// TestSQLitePathWithURICharacters: a path with '?', '#' and '%' names the
// file it says, not a shorter one with the rest read as parameters.
func TestSQLitePathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a?b#c%20d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x?y.db")
	db, err := outbox.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
		_, err := tx.Exec(context.Background(), `CREATE TABLE t (x INTEGER)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database is not at the path given: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "x?y.db") {
			t.Errorf("unexpected file %q next to the database", e.Name())
		}
	}
}
