package outbox

import (
	"context"
	"sync/atomic"
	"time"
)

// SQLite copies the WAL back into the database file in a checkpoint, by
// default inside the commit that takes the WAL past its autocheckpoint
// size: that commit, a group's leader, then reads the WAL, writes the file
// and fsyncs it while the next group waits behind it, a stall of tens of
// milliseconds at 8,000 pages. A DB on SQLite checkpoints in a goroutine
// of its own instead, every checkpointInterval when commits happened: a
// PASSIVE checkpoint, which runs beside the writer and the readers and
// waits for neither. The commits' own checkpoint stays as a backstop.

// checkpointInterval is how often the checkpointer looks for commits.
const checkpointInterval = 200 * time.Millisecond

// checkpointer runs a DB's checkpoints. Safe for concurrent use.
type checkpointer struct {
	commits atomic.Uint64 // bumped by each group commit
	stop    context.CancelFunc
	done    chan struct{}
}

// startCheckpointer starts the checkpoints of a SQLite DB; Close stops them.
func (db *DB) startCheckpointer() {
	ctx, cancel := context.WithCancel(context.Background())
	c := &db.checkpoints
	c.stop, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		tick := time.NewTicker(checkpointInterval)
		defer tick.Stop()
		var seen uint64
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n := c.commits.Load()
			if n == seen {
				continue
			}
			// A failed checkpoint (the disk full, the file gone) is tried
			// again at the next tick; the commits' own checkpoint bounds
			// the WAL meanwhile.
			var busy, frames, copied int
			if err := db.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err == nil {
				seen = n
			}
		}
	}()
}

// close stops the checkpoints, waiting for the one running, if any.
func (c *checkpointer) close() {
	if c.stop == nil {
		return
	}
	c.stop()
	<-c.done
}
