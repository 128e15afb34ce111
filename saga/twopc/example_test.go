package twopc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
)

// stockResource holds stock on PREPARE and keeps or releases it on the
// decision. A real one would write through tx; this one votes NO for more
// than 5 items.
type stockResource struct{}

func (stockResource) Prepare(_ context.Context, _ *outbox.Tx, _ string, qty int) (twopc.Vote, error) {
	if qty > 5 {
		return twopc.No, fmt.Errorf("only 5 in stock")
	}
	return twopc.Yes, nil
}

func (stockResource) Commit(context.Context, *outbox.Tx, string, int) error { return nil }
func (stockResource) Abort(context.Context, *outbox.Tx, string, int) error  { return nil }

// A coordinator and two participants on the bundled broker, each with its
// own SQLite database: the first transaction commits, the second aborts
// because one participant votes NO.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	dir, _ := os.MkdirTemp("", "twopc-example")
	defer os.RemoveAll(dir)

	tr, _ := transport.Open("mem://twopc-example")
	defer tr.Close()
	bus, _ := twopc.NewBus(tr, "", nil)
	// Declare the queues first, so that no message is sent into the void.
	_ = bus.Declare(ctx, "shop", "stock-a", "stock-b")

	var wg sync.WaitGroup
	serve := func(name string, d twopc.Deliverer, run func(context.Context) error) {
		wg.Go(func() { _ = bus.Serve(ctx, name, d, 1) })
		wg.Go(func() { _ = run(ctx) })
	}
	open := func(name string) *outbox.DB {
		db, _ := outbox.Open(ctx, "sqlite:"+filepath.Join(dir, name+".db"))
		return db
	}
	for _, name := range []string{"stock-a", "stock-b"} {
		db := open(name)
		defer db.Close()
		p, _ := twopc.NewParticipant(ctx, name, db, twopc.Resource[int](stockResource{}), bus)
		serve(name, p, p.Run)
	}
	db := open("shop")
	defer db.Close()
	coord, _ := twopc.NewCoordinator(ctx, "shop", db, bus)
	serve("shop", coord, coord.Run)

	for gid, qty := range map[string][2]int{"tx-1": {2, 3}, "tx-2": {2, 9}} {
		a, _ := twopc.NewBranch("stock-a", qty[0])
		b, _ := twopc.NewBranch("stock-b", qty[1])
		if err := coord.Begin(ctx, gid, []twopc.Branch{a, b}); err != nil {
			fmt.Println(err)
		}
	}
	for _, gid := range []string{"tx-1", "tx-2"} {
		outcome, _ := coord.Wait(ctx, gid)
		s, _ := coord.Show(ctx, gid)
		fmt.Println(gid, outcome, "-", s.Reason)
	}
	cancel()
	wg.Wait()
	// Output:
	// tx-1 commit - every participant voted yes
	// tx-2 abort - stock-b voted no: only 5 in stock
}
