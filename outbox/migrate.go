package outbox

import (
	"context"
	"fmt"
)

// migrations are applied in order; a released one is never edited.
var migrations = []Migration{
	{
		Version: 1,
		SQLite: []string{`CREATE TABLE troupe_inbox (
			consumer   TEXT NOT NULL,
			key        TEXT NOT NULL,
			handled_at TIMESTAMP NOT NULL,
			PRIMARY KEY (consumer, key)
		)`},
		Postgres: []string{`CREATE TABLE troupe_inbox (
			consumer   TEXT NOT NULL,
			key        TEXT NOT NULL,
			handled_at TIMESTAMPTZ NOT NULL,
			PRIMARY KEY (consumer, key)
		)`},
	},
	{
		Version: 2,
		SQLite: []string{`CREATE TABLE troupe_outbox (
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
		Postgres: []string{`CREATE TABLE troupe_outbox (
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
		Version:  3,
		SQLite:   []string{`CREATE INDEX troupe_outbox_unpublished ON troupe_outbox (id) WHERE published_at IS NULL`},
		Postgres: []string{`CREATE INDEX troupe_outbox_unpublished ON troupe_outbox (id) WHERE published_at IS NULL`},
	},
	{
		// PruneInbox deletes the oldest rows first. The key only grows, so
		// a transaction's entry lands on the index's last page, which the
		// transactions of one SQLite group commit share.
		Version:  4,
		SQLite:   []string{`CREATE INDEX troupe_inbox_handled_at ON troupe_inbox (handled_at)`},
		Postgres: []string{`CREATE INDEX troupe_inbox_handled_at ON troupe_inbox (handled_at)`},
	},
	{
		// Relays in other processes are woken by a NOTIFY at commit. A
		// statement trigger sends it from the server, which saves the
		// writer a round trip per transaction (PostgreSQL folds the
		// notifications of one transaction into one). SQLite: relays of
		// other processes poll.
		Version: 5,
		Postgres: []string{
			`CREATE FUNCTION troupe_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN PERFORM pg_notify('` + notifyChannel + `', ''); RETURN NULL; END $$`,
			`CREATE TRIGGER troupe_outbox_notify AFTER INSERT ON troupe_outbox
			FOR EACH STATEMENT EXECUTE FUNCTION troupe_outbox_notify()`,
		},
	},
}

// migrationLock is the PostgreSQL advisory lock key that serializes
// migrations of replicas starting at once ("troupe" in ASCII).
const migrationLock = 0x74726f757065

// migrate brings Troupe's tables to the newest version.
func (db *DB) migrate(ctx context.Context) error {
	return db.Migrate(ctx, Schema{Name: "outbox", Table: "troupe_schema", Lock: migrationLock, Migrations: migrations})
}

// Migration is one versioned change of a component's tables, in each
// dialect. A released one is never edited; a new version is added.
type Migration struct {
	Version          int
	SQLite, Postgres []string
}

// Schema is a component's set of tables in a DB (the outbox's, the saga
// tracker's, the 2PC log's, or a service's own): the table that records
// its applied versions, the PostgreSQL advisory lock key that serializes
// its migrations, and the migrations in ascending versions.
type Schema struct {
	Name       string // names the component in errors
	Table      string // its version table, e.g. "troupe_saga_schema"
	Lock       int64
	Migrations []Migration
}

// Migrate brings schema's tables to its newest version in one
// transaction. Several processes may run it at once: PostgreSQL
// serializes them with the advisory lock, SQLite with BEGIN IMMEDIATE. A
// database newer than the binary is an error. Idempotent.
func (db *DB) Migrate(ctx context.Context, schema Schema) error {
	if len(schema.Migrations) == 0 {
		return fmt.Errorf("%s: no migrations", schema.Name)
	}
	return db.InTx(ctx, func(tx *Tx) error {
		if db.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, schema.Lock); err != nil {
				return fmt.Errorf("%s: migration lock: %w", schema.Name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+schema.Table+` (version INTEGER PRIMARY KEY)`); err != nil {
			return fmt.Errorf("%s: schema table: %w", schema.Name, err)
		}
		var current int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+schema.Table).Scan(&current); err != nil {
			return fmt.Errorf("%s: schema version: %w", schema.Name, err)
		}
		if newest := schema.Migrations[len(schema.Migrations)-1].Version; current > newest {
			return fmt.Errorf("%s: database schema version %d is newer than this binary's %d", schema.Name, current, newest)
		}
		for _, m := range schema.Migrations {
			if m.Version <= current {
				continue
			}
			stmts := m.SQLite
			if db.dialect == Postgres {
				stmts = m.Postgres
			}
			for _, s := range stmts {
				if _, err := tx.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("%s: migration %d: %w", schema.Name, m.Version, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+schema.Table+` (version) VALUES (?)`, m.Version); err != nil {
				return fmt.Errorf("%s: record migration %d: %w", schema.Name, m.Version, err)
			}
		}
		return nil
	})
}
