package outbox

import (
	"context"
	"fmt"
)

// migration is one versioned schema change, in each dialect.
type migration struct {
	version  int
	sqlite   []string
	postgres []string
}

// migrations are applied in order; a released one is never edited.
var migrations = []migration{
	{
		version: 1,
		sqlite: []string{`CREATE TABLE troupe_inbox (
			consumer   TEXT NOT NULL,
			key        TEXT NOT NULL,
			handled_at TIMESTAMP NOT NULL,
			PRIMARY KEY (consumer, key)
		)`},
		postgres: []string{`CREATE TABLE troupe_inbox (
			consumer   TEXT NOT NULL,
			key        TEXT NOT NULL,
			handled_at TIMESTAMPTZ NOT NULL,
			PRIMARY KEY (consumer, key)
		)`},
	},
	{
		version: 2,
		sqlite: []string{`CREATE TABLE troupe_outbox (
			id              INTEGER PRIMARY KEY AUTOINCREMENT,
			message_id      TEXT NOT NULL UNIQUE,
			topic           TEXT NOT NULL,
			ordering_key    TEXT NOT NULL,
			payload         BLOB NOT NULL,
			metadata        TEXT NOT NULL,
			created_at      TIMESTAMP NOT NULL,
			attempts        INTEGER NOT NULL DEFAULT 0,
			next_attempt_at TIMESTAMP,
			last_error      TEXT,
			locked_by       TEXT,
			locked_until    TIMESTAMP,
			published_at    TIMESTAMP
		)`,
			`CREATE INDEX troupe_outbox_pending ON troupe_outbox (ordering_key, id) WHERE published_at IS NULL`,
			`CREATE INDEX troupe_outbox_published ON troupe_outbox (published_at) WHERE published_at IS NOT NULL`,
		},
		postgres: []string{`CREATE TABLE troupe_outbox (
			id              BIGSERIAL PRIMARY KEY,
			message_id      TEXT NOT NULL UNIQUE,
			topic           TEXT NOT NULL,
			ordering_key    TEXT NOT NULL,
			payload         BYTEA NOT NULL,
			metadata        TEXT NOT NULL,
			created_at      TIMESTAMPTZ NOT NULL,
			attempts        INTEGER NOT NULL DEFAULT 0,
			next_attempt_at TIMESTAMPTZ,
			last_error      TEXT,
			locked_by       TEXT,
			locked_until    TIMESTAMPTZ,
			published_at    TIMESTAMPTZ
		)`,
			`CREATE INDEX troupe_outbox_pending ON troupe_outbox (ordering_key, id) WHERE published_at IS NULL`,
			`CREATE INDEX troupe_outbox_published ON troupe_outbox (published_at) WHERE published_at IS NOT NULL`,
		},
	},
	{
		// The relay walks the unpublished rows in id order and stops after
		// a batch of ordering-key heads: without this index PostgreSQL
		// reads and sorts every unpublished row on each claim.
		version:  3,
		sqlite:   []string{`CREATE INDEX troupe_outbox_unpublished ON troupe_outbox (id) WHERE published_at IS NULL`},
		postgres: []string{`CREATE INDEX troupe_outbox_unpublished ON troupe_outbox (id) WHERE published_at IS NULL`},
	},
}

// migrationLock is the PostgreSQL advisory lock key that serializes
// migrations of replicas starting at once ("troupe" in ASCII).
const migrationLock = 0x74726f757065

// migrate brings Troupe's tables to the newest version. Several processes
// may run it at once: PostgreSQL serializes them with an advisory lock,
// SQLite with BEGIN IMMEDIATE.
func (db *DB) migrate(ctx context.Context) error {
	return db.InTx(ctx, func(tx *Tx) error {
		if db.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
				return fmt.Errorf("outbox: migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS troupe_schema (version INTEGER PRIMARY KEY)`); err != nil {
			return fmt.Errorf("outbox: schema table: %w", err)
		}
		var current int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM troupe_schema`).Scan(&current); err != nil {
			return fmt.Errorf("outbox: schema version: %w", err)
		}
		if current > migrations[len(migrations)-1].version {
			return fmt.Errorf("outbox: database schema version %d is newer than this binary's %d", current, migrations[len(migrations)-1].version)
		}
		for _, m := range migrations {
			if m.version <= current {
				continue
			}
			stmts := m.sqlite
			if db.dialect == Postgres {
				stmts = m.postgres
			}
			for _, s := range stmts {
				if _, err := tx.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("outbox: migration %d: %w", m.version, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO troupe_schema (version) VALUES (?)`, m.version); err != nil {
				return fmt.Errorf("outbox: record migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}
