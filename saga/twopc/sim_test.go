package twopc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
)

// This file is the deterministic simulator of the crash tests: the nodes
// share one SQLite database (each keeps its own rows), messages wait in an
// in-flight list that the test delivers, drops, duplicates or reorders, the
// clock is fake, and a crash throws a node's object away and builds a new
// one from the database, as a restarted process would.

const (
	coordName     = "coord"
	resendEvery   = time.Second
	voteTimeout   = 4 * time.Second
	participantsN = 2
)

var partNames = []string{"payment", "inventory"}

// errCrash is what the fault injector returns at a crash point.
var errCrash = errors.New("injected crash")

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// item is a branch's payload: a resource amount; Decline makes the
// resource vote NO.
type item struct {
	Amount  int  `json:"amount"`
	Decline bool `json:"decline"`
}

// holds is the resource: PREPARE holds a row, COMMIT makes it permanent,
// ABORT deletes it.
type holds struct{ name string }

func (h holds) Prepare(ctx context.Context, tx *outbox.Tx, gid string, p item) (twopc.Vote, error) {
	if p.Decline {
		return twopc.No, nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO test_holds (participant, gid, amount, state) VALUES (?, ?, ?, 'held')`, h.name, gid, p.Amount)
	return twopc.Yes, err
}

func (h holds) Commit(ctx context.Context, tx *outbox.Tx, gid string, _ item) error {
	res, err := tx.Exec(ctx, `UPDATE test_holds SET state = 'committed' WHERE participant = ? AND gid = ? AND state = 'held'`, h.name, gid)
	return exactlyOne(res, err, "commit "+gid)
}

func (h holds) Abort(ctx context.Context, tx *outbox.Tx, gid string, _ item) error {
	res, err := tx.Exec(ctx, `DELETE FROM test_holds WHERE participant = ? AND gid = ? AND state = 'held'`, h.name, gid)
	return exactlyOne(res, err, "abort "+gid)
}

func exactlyOne(res sql.Result, err error, what string) error {
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("%s: %d rows, want 1 (%v)", what, n, err)
	}
	return nil
}

// fault says what happens at a crash point: the node crashes there once.
type fault struct {
	node string
	step twopc.Step
}

// world is one simulated system.
// tb is what the simulator needs of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

type world struct {
	t        tb
	ctx      context.Context
	db       *outbox.DB
	clock    *fakeClock
	coord    *twopc.Coordinator
	parts    map[string]*twopc.Participant[item]
	inflight []twopc.Message
	faults   []fault
	fired    map[fault]bool
	gids     []string
	crashes  int
	sent     atomic.Int64
	// filter decides the fate of each message delivered by deliver; nil
	// delivers everything once.
	filter func(m twopc.Message) action
	// held messages are delivered once the clock passes releaseAt.
	held      []twopc.Message
	releaseAt time.Time
}

// action is what the network does with a message.
type action uint8

const (
	deliverIt action = iota + 1
	dropIt
	duplicateIt
	holdIt // deliver late
)

func newWorld(t tb, dbURL string, faults ...fault) *world {
	t.Helper()
	ctx := context.Background()
	db, err := outbox.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE test_holds (participant TEXT, gid TEXT, amount INTEGER, state TEXT, PRIMARY KEY (participant, gid))`); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, ctx: ctx, db: db, clock: &fakeClock{now: time.Unix(1_800_000_000, 0)},
		parts: map[string]*twopc.Participant[item]{}, faults: faults, fired: map[fault]bool{}}
	w.startCoordinator()
	for _, n := range partNames {
		w.startParticipant(n)
	}
	return w
}

// Send queues m in flight.
func (w *world) Send(_ context.Context, m twopc.Message) error {
	w.sent.Add(1)
	w.inflight = append(w.inflight, m)
	return nil
}

func (w *world) hook(node string) twopc.Hook {
	return func(_ context.Context, s twopc.Step, _ string) error {
		f := fault{node, s}
		if slices.Contains(w.faults, f) && !w.fired[f] {
			w.fired[f] = true
			return errCrash
		}
		return nil
	}
}

func (w *world) opts(node string) []twopc.Option {
	return []twopc.Option{twopc.WithClock(w.clock), twopc.WithHook(w.hook(node)),
		twopc.WithResendInterval(resendEvery), twopc.WithVoteTimeout(voteTimeout)}
}

func (w *world) startCoordinator() {
	c, err := twopc.NewCoordinator(w.ctx, coordName, w.db, w, w.opts(coordName)...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.coord = c
	w.check(c.Recover(w.ctx), coordName)
}

func (w *world) startParticipant(name string) {
	p, err := twopc.NewParticipant(w.ctx, name, w.db, twopc.Resource[item](holds{name}), w, w.opts(name)...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.parts[name] = p
	w.check(p.Recover(w.ctx), name)
}

// crash restarts node from its database.
func (w *world) crash(node string) {
	w.crashes++
	if node == coordName {
		w.startCoordinator()
		return
	}
	w.startParticipant(node)
}

// check crashes node when err is an injected crash, and fails the test on
// any other error.
func (w *world) check(err error, node string) {
	switch {
	case err == nil:
	case errors.Is(err, errCrash):
		w.crash(node)
	default:
		w.t.Fatalf("%s: %v", node, err)
	}
}

func (w *world) begin(gid string, payloads ...item) {
	var bs []twopc.Branch
	for i, n := range partNames {
		b, err := twopc.NewBranch(n, payloads[i])
		if err != nil {
			w.t.Fatal(err)
		}
		bs = append(bs, b)
	}
	w.gids = append(w.gids, gid)
	w.check(w.coord.Begin(w.ctx, gid, bs), coordName)
}

func (w *world) node(name string) twopc.Deliverer {
	if name == coordName {
		return w.coord
	}
	return w.parts[name]
}

// deliver hands in-flight message i to its node.
func (w *world) deliver(i int) {
	m := w.inflight[i]
	w.inflight = slices.Delete(w.inflight, i, i+1)
	act := deliverIt
	if w.filter != nil {
		act = w.filter(m)
	}
	switch act {
	case dropIt:
		return
	case holdIt:
		w.held = append(w.held, m)
		return
	case duplicateIt:
		w.check(w.node(m.To).Deliver(w.ctx, m), m.To)
	}
	w.check(w.node(m.To).Deliver(w.ctx, m), m.To)
}

// tick advances the clock by d and ticks every node.
func (w *world) tick(d time.Duration) {
	w.clock.Advance(d)
	w.check(w.coord.Tick(w.ctx), coordName)
	for _, n := range partNames {
		w.check(w.parts[n].Tick(w.ctx), n)
	}
}

// settle delivers everything in flight, ticking when nothing is, until
// every transaction is finished everywhere.
func (w *world) settle() {
	for round := 0; round < 200; round++ {
		for len(w.inflight) > 0 {
			w.deliver(0)
			w.checkSafety()
		}
		if len(w.held) > 0 && !w.clock.Now().Before(w.releaseAt) {
			for _, m := range w.held {
				w.check(w.node(m.To).Deliver(w.ctx, m), m.To)
				w.checkSafety()
			}
			w.held = nil
			continue
		}
		if len(w.held) == 0 && w.quiet() {
			return
		}
		w.tick(resendEvery)
	}
	w.t.Fatalf("not settled after 200 rounds: %s", w.dump())
}

// quiet: nothing in flight, no unfinished transaction, no branch prepared.
func (w *world) quiet() bool {
	open, err := twopc.List(w.ctx, w.db, twopc.ListFilter{Unfinished: true})
	if err != nil {
		w.t.Fatal(err)
	}
	return len(w.inflight) == 0 && len(open) == 0 && w.count(`SELECT COUNT(*) FROM troupe_twopc_participant WHERE state = 'prepared'`) == 0
}

func (w *world) count(q string, args ...any) int {
	var n int
	if err := w.db.SQL().QueryRowContext(w.ctx, w.db.Rebind(q), args...).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

// branchStates returns each participant's state of gid ("" for none).
func (w *world) branchStates(gid string) map[string]string {
	out := map[string]string{}
	for _, n := range partNames {
		s, err := w.parts[n].BranchState(w.ctx, gid)
		if err != nil {
			w.t.Fatal(err)
		}
		out[n] = s
	}
	return out
}

// checkSafety: no participant committed a transaction another aborted,
// and nobody committed what the coordinator did not decide to commit.
func (w *world) checkSafety() {
	w.t.Helper()
	for _, gid := range w.gids {
		states := w.branchStates(gid)
		var committed, aborted []string
		for n, s := range states {
			switch s {
			case "committed":
				committed = append(committed, n)
			case "aborted":
				aborted = append(aborted, n)
			}
		}
		if len(committed) > 0 && len(aborted) > 0 {
			w.t.Fatalf("%s: %v committed and %v aborted", gid, committed, aborted)
		}
		s, err := w.coord.Show(w.ctx, gid)
		if err != nil && !errors.Is(err, twopc.ErrUnknown) {
			w.t.Fatal(err)
		}
		if len(committed) > 0 && s.Outcome != twopc.Commit {
			w.t.Fatalf("%s: %v committed, coordinator says %v", gid, committed, s.Outcome)
		}
		if len(aborted) > 0 && s.Outcome == twopc.Commit {
			w.t.Fatalf("%s: %v aborted, coordinator committed", gid, aborted)
		}
	}
}

// checkSettled: every participant ends in the coordinator's outcome, the
// resources of a committed transaction are committed at every participant,
// and nothing is held.
func (w *world) checkSettled() map[string]twopc.Outcome {
	w.t.Helper()
	w.checkSafety()
	outcomes := map[string]twopc.Outcome{}
	for _, gid := range w.gids {
		s, err := w.coord.Show(w.ctx, gid)
		if err != nil {
			w.t.Fatalf("%s: %v", gid, err)
		}
		if s.Outcome == 0 || s.Finished.IsZero() {
			w.t.Fatalf("%s: not finished: %+v", gid, s)
		}
		outcomes[gid] = s.Outcome
		want := map[twopc.Outcome]string{twopc.Commit: "committed", twopc.Abort: "aborted"}[s.Outcome]
		for n, st := range w.branchStates(gid) {
			if st != want {
				w.t.Fatalf("%s: %s is %q, coordinator decided %s", gid, n, st, s.Outcome)
			}
			held := w.count(`SELECT COUNT(*) FROM test_holds WHERE participant = ? AND gid = ?`, n, gid)
			if wantHeld := map[bool]int{true: 1, false: 0}[s.Outcome == twopc.Commit]; held != wantHeld {
				w.t.Fatalf("%s: %s has %d resource rows after %s, want %d", gid, n, held, s.Outcome, wantHeld)
			}
		}
	}
	if n := w.count(`SELECT COUNT(*) FROM test_holds WHERE state = 'held'`); n != 0 {
		w.t.Fatalf("%d resources still held after every transaction settled", n)
	}
	return outcomes
}

func (w *world) dump() string {
	s := fmt.Sprintf("in flight %v;", w.inflight)
	for _, gid := range w.gids {
		st, err := w.coord.Show(w.ctx, gid)
		s += fmt.Sprintf(" %s: coord %s/%v finished=%v (%v) branches %v;", gid, st.State, st.Outcome, !st.Finished.IsZero(), err, w.branchStates(gid))
	}
	return s
}

func sqliteURL(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "twopc.db") }
