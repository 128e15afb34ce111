package saga

import (
	"context"

	"github.com/troupehq/troupe/outbox"
)

// trackerTablesV1 is version 1 of the tracker's tables; the dialects
// differ only in the history's sequence column (seq).
func trackerTablesV1(seq string) []string {
	return []string{`CREATE TABLE troupe_sagas (
			saga        TEXT NOT NULL,
			id          TEXT NOT NULL,
			state       TEXT NOT NULL,
			step        TEXT NOT NULL,
			reason      TEXT NOT NULL,
			started_at  BIGINT NOT NULL,
			updated_at  BIGINT NOT NULL,
			deadline_at BIGINT,
			deadline    TEXT NOT NULL,
			PRIMARY KEY (saga, id)
		)`,
		`CREATE INDEX troupe_sagas_state ON troupe_sagas (state, updated_at)`,
		`CREATE INDEX troupe_sagas_deadline ON troupe_sagas (deadline_at) WHERE deadline_at IS NOT NULL`,
		`CREATE TABLE troupe_saga_history (
			seq          ` + seq + `,
			saga         TEXT NOT NULL,
			id           TEXT NOT NULL,
			at           BIGINT NOT NULL,
			recorded_at  BIGINT NOT NULL,
			kind         TEXT NOT NULL,
			event        TEXT NOT NULL,
			message_id   TEXT NOT NULL,
			causation_id TEXT NOT NULL,
			step         TEXT NOT NULL,
			meaning      TEXT NOT NULL,
			error        TEXT NOT NULL,
			actor        TEXT NOT NULL,
			queue        TEXT NOT NULL,
			UNIQUE (saga, id, message_id)
		)`,
	}
}

// migrations are the tracker's schema changes, each in both dialects; a
// released one is never edited. Times are Unix nanoseconds (BIGINT) in
// both dialects, so that they compare and sort alike.
var migrations = []outbox.Migration{{
	Version:  1,
	SQLite:   trackerTablesV1("INTEGER PRIMARY KEY AUTOINCREMENT"),
	Postgres: trackerTablesV1("BIGSERIAL PRIMARY KEY"),
}, {
	// The trace of each entry's message (W3C trace id), for a link to the
	// tracing UI.
	Version:  2,
	SQLite:   []string{`ALTER TABLE troupe_saga_history ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''`},
	Postgres: []string{`ALTER TABLE troupe_saga_history ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''`},
}}

// migrationLock is the PostgreSQL advisory lock key that serializes
// migrations of trackers starting at once ("tsaga" in ASCII).
const migrationLock = 0x7473616761

// migrate brings the tracker's tables to the newest version.
func migrate(ctx context.Context, db *outbox.DB) error {
	return db.Migrate(ctx, outbox.Schema{Name: "saga", Table: "troupe_saga_schema", Lock: migrationLock, Migrations: migrations})
}
