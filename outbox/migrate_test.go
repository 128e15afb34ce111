package outbox_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupehq/troupe/outbox"
)

// A component's schema upgrades version by version, is idempotent, and
// refuses a database newer than the binary.
func TestMigrateSchema(t *testing.T) {
	ctx := context.Background()
	db, err := outbox.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v1 := outbox.Migration{Version: 1, SQLite: []string{`CREATE TABLE widgets (id TEXT PRIMARY KEY)`}}
	v2 := outbox.Migration{Version: 2, SQLite: []string{`ALTER TABLE widgets ADD COLUMN colour TEXT NOT NULL DEFAULT ''`}}
	schema := func(ms ...outbox.Migration) outbox.Schema {
		return outbox.Schema{Name: "widgets", Table: "widgets_schema", Lock: 1, Migrations: ms}
	}
	tests := []struct {
		name    string
		give    outbox.Schema
		wantErr string
	}{
		{"first version", schema(v1), ""},
		{"again: idempotent", schema(v1), ""},
		{"upgrade", schema(v1, v2), ""},
		{"again after the upgrade", schema(v1, v2), ""},
		{"an older binary", schema(v1), "widgets: database schema version 2 is newer than this binary's 1"},
		{"no migrations", schema(), "widgets: no migrations"},
	}
	for _, tt := range tests {
		err := db.Migrate(ctx, tt.give)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Fatalf("%s: got %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := db.SQL().ExecContext(ctx, `INSERT INTO widgets (id, colour) VALUES ('w1', 'red')`); err != nil {
		t.Fatalf("the upgraded table: %v", err)
	}
}
