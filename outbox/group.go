package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// SQLite has one writer per file, and most of a small transaction's cost
// is its BEGIN and COMMIT: the commit writes every page the transaction
// touched to the WAL, with a few system calls per page, and takes the
// WAL index's locks. A group commits many callers' transactions at once:
// the callers of InTx queue, one of them (the leader) begins a
// transaction and runs each queued function in it under a savepoint of
// its own, taking in the callers that arrive meanwhile, then commits once
// for all and hands the lead to the next caller waiting. A function that
// fails rolls back to its savepoint, which undoes its writes and nothing
// else; a commit that fails fails every function of the group. Nobody
// waits for a group to fill: a caller alone commits alone. The leader only
// yields the processor once before it commits, so that callers ready to
// run join the group rather than lead the next one.

// maxGroup bounds the functions of one group, so that the first caller of
// a busy period does not wait behind an unbounded number of later ones.
// The example shop's order database, with three transactions per order,
// filled groups of 64 under load (50 on average); with 128 it placed 3–6%
// more orders per second (docs/BENCHMARKS.md, ninth pass).
const maxGroup = 128

// group is a DB's queue of SQLite transactions. Safe for concurrent use.
type group struct {
	mu      sync.Mutex
	queue   []*member
	leading bool // a leader is running a group; new members queue
	// conn is the connection the groups write through (leaders take
	// turns using it; set and cleared under mu); nil until the first group
	// and after it broke. closed: DB.Close ran.
	conn   *sql.Conn
	closed bool
	// running is open while a group uses conn, from its BEGIN to its
	// COMMIT or ROLLBACK: close waits for it before closing conn, which
	// database/sql does not allow under a BeginTx (it panics).
	running chan struct{}
}

// member is one InTx call waiting in, or run by, a group.
type member struct {
	ctx  context.Context
	f    func(tx *Tx) error
	wake chan struct{} // one send: done, or made leader (lead set first)
	lead bool          // set under group.mu before wake

	// Set by the leader before wake.
	tx       *Tx
	err      error
	panicked bool
	panicVal any
}

// inGroup runs f as a member of a group commit (SQLite).
func (db *DB) inGroup(ctx context.Context, f func(tx *Tx) error) error {
	m := &member{ctx: ctx, f: f, wake: make(chan struct{}, 1)}
	g := &db.group
	g.mu.Lock()
	queued := g.leading
	if queued {
		g.queue = append(g.queue, m)
	} else {
		g.leading, m.lead = true, true
	}
	g.mu.Unlock()
	if queued { // m.lead is a leader's to set now, under g.mu, until m wakes
		if err := m.await(g); err != nil {
			return err
		}
	}
	if m.lead {
		db.lead(m)
	}
	if m.panicked {
		panic(m.panicVal)
	}
	if m.err != nil {
		return m.err
	}
	for _, f := range m.tx.afterCommit {
		f()
	}
	return nil
}

// await waits until m is done or leads. It gives up, with an error, when
// m's context ends or no leader took m within sqliteWriterWait, provided
// no leader took m yet (a taken member always waits for its group).
func (m *member) await(g *group) error {
	t := time.NewTimer(sqliteWriterWait)
	defer t.Stop()
	var err error
	select {
	case <-m.wake:
		return nil
	case <-m.ctx.Done():
		err = fmt.Errorf("outbox: begin: %w", m.ctx.Err())
	case <-t.C:
		err = fmt.Errorf("outbox: begin: no SQLite writer turn in %v", sqliteWriterWait)
	}
	g.mu.Lock()
	if i := slices.Index(g.queue, m); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
		g.mu.Unlock()
		return err
	}
	g.mu.Unlock()
	<-m.wake
	return nil
}

// lead runs one group, first the first of its members, wakes the others,
// then hands the lead to the next member waiting, if any.
func (db *DB) lead(first *member) {
	g := &db.group
	members := db.runGroup(first)
	for _, m := range members {
		if m != first {
			m.wake <- struct{}{}
		}
	}
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.leading = false
		g.mu.Unlock()
		return
	}
	next := g.queue[0]
	g.queue = slices.Delete(g.queue, 0, 1)
	next.lead = true
	g.mu.Unlock()
	next.wake <- struct{}{}
}

// take moves up to n queued members out of the queue.
func (g *group) take(n int) []*member {
	g.mu.Lock()
	defer g.mu.Unlock()
	n = min(n, len(g.queue))
	taken := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	return taken
}

// runGroup runs first and the members that queue meanwhile (up to
// maxGroup) in one transaction and commits it; it sets every member's
// result and returns the members.
func (db *DB) runGroup(first *member) []*member {
	defer db.group.endRun()
	members := []*member{first}
	sqltx, err := db.beginGroup()
	if err != nil {
		members = append(members, db.group.take(maxGroup-1)...)
		for _, m := range members {
			m.err = fmt.Errorf("outbox: begin: %w", err)
		}
		return members
	}
	var broken error // a savepoint that could not be undone spoils the group
	added := 0
	bound := map[string]*sql.Stmt{}
	yielded := false
	for i := 0; i < len(members) && broken == nil; i++ {
		m := members[i]
		m.tx = &Tx{Tx: sqltx, db: db, bound: bound}
		broken = db.runMember(sqltx, m)
		if m.err == nil && !m.panicked {
			added += m.tx.added
		} else {
			m.tx.handed = nil // rolled back to its savepoint
		}
		if len(members) < maxGroup {
			members = append(members, db.group.take(maxGroup-len(members))...)
			if i == len(members)-1 && len(members) < maxGroup && !yielded {
				// The last member ran: before it commits, the leader lets
				// the goroutines ready to run go first, once. On a busy
				// process some of them are about to join the group, which
				// halved the commits of the example shop under load.
				yielded = true
				runtime.Gosched()
				members = append(members, db.group.take(maxGroup-len(members))...)
			}
		}
	}
	if broken != nil {
		_ = sqltx.Rollback()
		for _, m := range members {
			if m.err == nil && !m.panicked {
				m.err = fmt.Errorf("outbox: transaction rolled back: %w", broken)
			}
		}
		return members
	}
	if err := sqltx.Commit(); err != nil {
		for _, m := range members {
			if m.err == nil && !m.panicked {
				m.err = fmt.Errorf("outbox: commit: %w", err)
			}
		}
		return members
	}
	db.checkpoints.commits.Add(1)
	if added > 0 {
		db.changed.notify()
	}
	for _, m := range members {
		if m.tx != nil && len(m.tx.handed) > 0 {
			m.tx.handoff.push(m.tx.handed)
		}
	}
	return members
}

// beginGroup begins a group's transaction on the groups' own connection.
// SQLite discards a connection's whole page cache whenever another
// connection has committed; writing through one connection keeps the
// writer's cache warm from one group to the next. The transaction is the
// group's: no one member's context may end it.
func (db *DB) beginGroup() (*sql.Tx, error) {
	g := &db.group
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, errors.New("outbox: the DB is closed")
	}
	conn := g.conn
	g.running = make(chan struct{}) // ended by runGroup (endRun)
	g.mu.Unlock()
	if conn == nil {
		c, err := db.db.Conn(context.Background())
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		g.conn, conn = c, c // close waits for this group before it closes c
		g.mu.Unlock()
	}
	if testHookBeforeBegin != nil {
		testHookBeforeBegin()
	}
	tx, err := conn.BeginTx(context.Background(), nil)
	if err != nil {
		g.mu.Lock()
		if g.conn == conn {
			g.conn = nil // the next group takes another connection
		}
		g.mu.Unlock()
		_ = conn.Close()
		return nil, err
	}
	return tx, nil
}

// testHookBeforeBegin, when set (by tests), runs in beginGroup right
// before the BEGIN.
var testHookBeforeBegin func()

// endRun marks the end of a group's use of the connection.
func (g *group) endRun() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != nil {
		close(g.running)
		g.running = nil
	}
}

// close returns the groups' connection to the pool, once the group using
// it (if any) has ended; later groups fail. It does not hold g.mu while it
// waits: the leader of that group takes g.mu to look for more members.
// (Called from a member's function, it would wait for itself.)
func (g *group) close() error {
	g.mu.Lock()
	g.closed = true
	running := g.running
	g.mu.Unlock()
	if running != nil {
		<-running
	}
	g.mu.Lock()
	conn := g.conn
	g.conn = nil
	g.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.Close()
}

// Savepoint statements of a group's members.
const (
	savepoint  = `SAVEPOINT troupe_member`
	release    = `RELEASE troupe_member`
	rollbackTo = `ROLLBACK TO troupe_member`
)

// runMember runs m.f under a savepoint of sqltx and sets m's result. It
// returns an error only when the transaction can no longer be used: the
// savepoint could not be set, or m's writes could not be undone.
func (db *DB) runMember(sqltx *sql.Tx, m *member) (broken error) {
	if _, err := m.tx.Exec(context.Background(), savepoint); err != nil {
		m.err = fmt.Errorf("outbox: savepoint: %w", err)
		return m.err
	}
	undo := func() error {
		if _, err := m.tx.Exec(context.Background(), rollbackTo); err != nil {
			return fmt.Errorf("outbox: roll back to savepoint: %w", err)
		}
		if _, err := m.tx.Exec(context.Background(), release); err != nil {
			return fmt.Errorf("outbox: release savepoint: %w", err)
		}
		return nil
	}
	defer func() {
		if v := recover(); v != nil {
			m.panicked, m.panicVal = true, v
			broken = undo()
		}
	}()
	if err := m.f(m.tx); err != nil {
		m.err = err
		if uerr := undo(); uerr != nil {
			m.err = errors.Join(err, uerr)
			return uerr
		}
		return nil
	}
	if _, err := m.tx.Exec(context.Background(), release); err != nil {
		m.err = fmt.Errorf("outbox: release savepoint: %w", err)
		return m.err
	}
	return nil
}
