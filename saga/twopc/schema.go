package twopc

import (
	"context"

	"github.com/troupehq/troupe/outbox"
)

// The tables live in the node's outbox.DB next to Troupe's own, with their
// own schema version table. Times are Unix nanoseconds (BIGINT) so that
// both dialects store them alike.
var migrations = []struct {
	version int
	stmts   []string
}{
	{1, []string{
		// The coordinator's log: one row per transaction.
		`CREATE TABLE troupe_twopc_tx (
			gid         TEXT PRIMARY KEY,
			coordinator TEXT NOT NULL,
			state       TEXT NOT NULL,
			reason      TEXT NOT NULL DEFAULT '',
			trace       TEXT NOT NULL DEFAULT '',
			created_at  BIGINT NOT NULL,
			deadline    BIGINT NOT NULL,
			decided_at  BIGINT,
			finished_at BIGINT
		)`,
		`CREATE INDEX troupe_twopc_tx_open ON troupe_twopc_tx (coordinator, state)`,
		// Its branches: one row per (transaction, participant).
		`CREATE TABLE troupe_twopc_branch (
			gid         TEXT NOT NULL,
			participant TEXT NOT NULL,
			position    INTEGER NOT NULL,
			payload     TEXT NOT NULL,
			vote        TEXT NOT NULL DEFAULT '',
			acked       INTEGER NOT NULL DEFAULT 0,
			PRIMARY KEY (gid, participant)
		)`,
		// A participant's branches.
		`CREATE TABLE troupe_twopc_participant (
			participant TEXT NOT NULL,
			gid         TEXT NOT NULL,
			coordinator TEXT NOT NULL,
			state       TEXT NOT NULL,
			payload     TEXT NOT NULL,
			reason      TEXT NOT NULL DEFAULT '',
			trace       TEXT NOT NULL DEFAULT '',
			created_at  BIGINT NOT NULL,
			updated_at  BIGINT NOT NULL,
			PRIMARY KEY (participant, gid)
		)`,
		`CREATE INDEX troupe_twopc_participant_state ON troupe_twopc_participant (participant, state)`,
	}},
}

// schemaLock is the PostgreSQL advisory lock key of the migrations ("2pc").
const schemaLock = 0x327063

// Migrate creates or updates the tables of package twopc in db. It is
// idempotent and safe to run from several processes at once;
// NewCoordinator and NewParticipant call it.
func Migrate(ctx context.Context, db *outbox.DB) error {
	ms := make([]outbox.Migration, len(migrations))
	for i, m := range migrations {
		ms[i] = outbox.Migration{Version: m.version, SQLite: m.stmts, Postgres: m.stmts}
	}
	return db.Migrate(ctx, outbox.Schema{Name: "twopc", Table: "troupe_twopc_schema", Lock: schemaLock, Migrations: ms})
}
