package saga

import (
	"context"
	"fmt"

	"github.com/troupehq/troupe/outbox"
)

// migration is one versioned change of the tracker's schema, in each
// dialect; a released one is never edited. Times are Unix nanoseconds
// (BIGINT) in both dialects, so that they compare and sort alike.
type migration struct {
	version          int
	sqlite, postgres []string
}

var migrations = []migration{{
	version: 1,
	sqlite: []string{`CREATE TABLE troupe_sagas (
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
			seq          INTEGER PRIMARY KEY AUTOINCREMENT,
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
	},
	postgres: []string{`CREATE TABLE troupe_sagas (
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
			seq          BIGSERIAL PRIMARY KEY,
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
	},
}, {
	// The trace of each entry's message (W3C trace id), for a link to the
	// tracing UI.
	version:  2,
	sqlite:   []string{`ALTER TABLE troupe_saga_history ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''`},
	postgres: []string{`ALTER TABLE troupe_saga_history ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''`},
}}

// migrationLock is the PostgreSQL advisory lock key that serializes
// migrations of trackers starting at once ("tsaga" in ASCII).
const migrationLock = 0x7473616761

// migrate brings the tracker's tables to the newest version, in one
// transaction; PostgreSQL serializes concurrent migrations with an
// advisory lock, SQLite with BEGIN IMMEDIATE.
func migrate(ctx context.Context, db *outbox.DB) error {
	return db.InTx(ctx, func(tx *outbox.Tx) error {
		if db.Dialect() == outbox.Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
				return fmt.Errorf("saga: migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS troupe_saga_schema (version INTEGER PRIMARY KEY)`); err != nil {
			return fmt.Errorf("saga: schema table: %w", err)
		}
		var current int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM troupe_saga_schema`).Scan(&current); err != nil {
			return fmt.Errorf("saga: schema version: %w", err)
		}
		if last := migrations[len(migrations)-1].version; current > last {
			return fmt.Errorf("saga: tracker schema version %d is newer than this binary's %d", current, last)
		}
		for _, m := range migrations {
			if m.version <= current {
				continue
			}
			stmts := m.sqlite
			if db.Dialect() == outbox.Postgres {
				stmts = m.postgres
			}
			for _, s := range stmts {
				if _, err := tx.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("saga: migration %d: %w", m.version, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO troupe_saga_schema (version) VALUES (?)`, m.version); err != nil {
				return fmt.Errorf("saga: record migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}
