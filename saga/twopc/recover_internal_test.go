package twopc

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/outbox"
)

type discard struct{}

func (discard) Send(context.Context, Message) error { return nil }

// TestRecoverWaitsForBeginOfALoggedGID: a coordinator crashed after logging
// transaction x; restarted, it begins x again (as an application replaying
// its work does) while Recover runs. Begin registers x in memory before
// logging it, finds it logged, and forgets it; Recover must not skip x
// for that passing copy (it did, and x stayed open for good, which made
// the crash test of the decision's logging fail now and then): it waits
// for Begin, then aborts x.
func TestRecoverWaitsForBeginOfALoggedGID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := outbox.Open(ctx, "sqlite:"+t.TempDir()+"/coord.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	branches := []Branch{{Participant: "payment"}, {Participant: "inventory"}}

	errCrash := errors.New("crashed")
	crashed, err := NewCoordinator(ctx, "coord", db, discard{}, WithHook(func(_ context.Context, s Step, _ string) error {
		if s == StepBegun {
			return errCrash // logged, then gone: what a kill -9 leaves
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := crashed.Begin(ctx, "x", branches); !errors.Is(err, errCrash) {
		t.Fatalf("Begin: %v, want the crash", err)
	}

	c, err := NewCoordinator(ctx, "coord", db, discard{})
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	c.adoptWaits = func(string) { close(waiting) }
	// Hold the database, so that Begin stays between registering x and
	// logging it.
	holding, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseDB := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseDB() // before db.Close, which waits for the holder
	held := make(chan error, 1)
	go func() {
		held <- db.InTx(ctx, func(*outbox.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	begun := make(chan error, 1)
	go func() { begun <- c.Begin(ctx, "x", branches) }()
	for {
		c.mu.Lock()
		registered := c.txs["x"] != nil
		c.mu.Unlock()
		if registered {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("Begin did not register x")
		case <-time.After(time.Millisecond):
		}
	}
	recovered := make(chan error, 1)
	go func() { recovered <- c.Recover(ctx) }()
	select {
	case <-waiting:
	case err := <-recovered:
		t.Fatalf("Recover returned (%v) while Begin was logging x", err)
	}
	releaseDB()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if err := <-begun; !errors.Is(err, ErrExists) {
		t.Fatalf("Begin of a logged gid: %v, want ErrExists", err)
	}
	if err := <-recovered; err != nil {
		t.Fatal(err)
	}
	if o, err := c.Wait(ctx, "x"); err != nil || o != Abort {
		t.Fatalf("x: %v, %v; want abort (presumed, after the crash)", o, err)
	}
}
