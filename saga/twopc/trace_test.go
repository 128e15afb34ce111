package twopc_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
)

// busNodes runs a coordinator and the two participants on a private
// bundled broker, each with its own SQLite database.
func busNodes(t *testing.T, name string, coordOpts ...twopc.Option) *twopc.Coordinator {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr, err := transport.Open("mem://" + name)
	if err != nil {
		t.Fatal(err)
	}
	bus, err := twopc.NewBus(tr, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Declare(ctx, append([]string{coordName}, partNames...)...); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var dbs []*outbox.DB
	// The nodes stop before their databases close.
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		tr.Close()
		for _, db := range dbs {
			db.Close()
		}
	})
	open := func(node string) *outbox.DB {
		db, err := outbox.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), node+".db"))
		if err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, db)
		return db
	}
	opts := []twopc.Option{twopc.WithTickInterval(10 * time.Millisecond)}
	for _, n := range partNames {
		db := open(n)
		if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE test_holds (participant TEXT, gid TEXT, amount INTEGER, state TEXT, PRIMARY KEY (participant, gid))`); err != nil {
			t.Fatal(err)
		}
		p, err := twopc.NewParticipant(ctx, n, db, twopc.Resource[item](holds{n}), bus, opts...)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = bus.Serve(ctx, n, p, 2) })
		wg.Go(func() { _ = p.Run(ctx) })
	}
	c, err := twopc.NewCoordinator(ctx, coordName, open(coordName), bus, append(opts, coordOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = bus.Serve(ctx, coordName, c, 2) })
	wg.Go(func() { _ = c.Run(ctx) })
	return c
}

// TestOneTrace: every span of a transaction, at the coordinator and at
// both participants, is in the trace Begin was called in.
func TestOneTrace(t *testing.T) {
	rec, tp := testutil.RecordSpans(t)

	c := busNodes(t, "twopc-trace")
	ctx, root := tp.Tracer("test").Start(context.Background(), "checkout")
	bs := unitBranches(t)
	if err := c.Begin(ctx, "traced", bs); err != nil {
		t.Fatal(err)
	}
	root.End()
	want := []string{"twopc begin", "twopc commit inventory", "twopc commit payment", "twopc decide commit",
		"twopc prepare inventory", "twopc prepare payment", "twopc vote yes", "twopc vote yes"}
	testutil.Eventually(t, 10*time.Second, func() error {
		var names []string
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() != root.SpanContext().TraceID() || s.Name() == "checkout" {
				continue
			}
			names = append(names, s.Name())
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			return fmt.Errorf("spans in the trace %v, want %v", names, want)
		}
		return nil
	})
}

// TestBeginRacingRecover: a Recover that runs between Begin logging its
// transaction and sending PREPARE (Run starts with one, concurrently with
// the first Begin) leaves the transaction alone; it used to take it for
// one a crash left undecided and abort it.
func TestBeginRacingRecover(t *testing.T) {
	var c *twopc.Coordinator
	c = busNodes(t, "twopc-recover-race", twopc.WithHook(func(ctx context.Context, s twopc.Step, gid string) error {
		if s == twopc.StepBegun {
			return c.Recover(ctx)
		}
		return nil
	}))
	bs := unitBranches(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Begin(ctx, "raced", bs); err != nil {
		t.Fatal(err)
	}
	if o, err := c.Wait(ctx, "raced"); err != nil || o != twopc.Commit {
		t.Fatalf("outcome %v, %v; want commit", o, err)
	}
}

// unitBranches is a branch of amount 1 for each of partNames.
func unitBranches(t *testing.T) []twopc.Branch {
	t.Helper()
	var bs []twopc.Branch
	for _, n := range partNames {
		b, err := twopc.NewBranch(n, item{Amount: 1})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}
