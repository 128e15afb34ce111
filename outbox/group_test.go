package outbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

func openGroupDB(t *testing.T) *DB {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+t.TempDir()+"/group.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE t (v INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// queued waits until a member leads and n members wait in db's group
// queue.
func queued(t *testing.T, db *DB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.group.mu.Lock()
		got, leading := len(db.group.queue), db.group.leading
		db.group.mu.Unlock()
		if leading && got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d members queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func values(t *testing.T, db *DB) map[int]bool {
	t.Helper()
	rows, err := db.SQL().Query(`SELECT v FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got[v] = true
	}
	return got
}

// TestGroupCommit holds a first transaction open while others queue, so
// that they run in one group: each sees the writes of those before it in
// the shared transaction, a failing or panicking one rolls back its own
// writes only, and the rest commit.
func TestGroupCommit(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	const n = 12
	errOdd := errors.New("odd members fail")
	release := make(chan struct{})
	results := make([]error, n)
	panics := make([]any, n)
	seen := make([]int, n)
	var wg sync.WaitGroup
	wg.Go(func() {
		results[0] = db.InTx(ctx, func(tx *Tx) error {
			<-release
			_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, 0)
			return err
		})
	})
	queued(t, db, 0) // the first leads; nothing queues yet
	for i := 1; i < n; i++ {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			results[i] = db.InTx(ctx, func(tx *Tx) error {
				if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM t`).Scan(&seen[i]); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, i); err != nil {
					return err
				}
				switch {
				case i == 5:
					panic("member 5 panics")
				case i%2 == 1:
					return errOdd
				}
				return nil
			})
		})
		queued(t, db, i) // queue them in order
	}
	close(release)
	wg.Wait()

	want := map[int]bool{}
	for i := range n {
		switch {
		case i == 5:
			if panics[i] != "member 5 panics" {
				t.Errorf("member 5: recovered %v, want its panic", panics[i])
			}
		case i%2 == 1:
			if !errors.Is(results[i], errOdd) {
				t.Errorf("member %d: %v, want %v", i, results[i], errOdd)
			}
		default:
			if results[i] != nil {
				t.Errorf("member %d: %v", i, results[i])
			}
			want[i] = true
		}
	}
	if got := values(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("committed %v, want %v", got, want)
	}
	// Member i ran after members 0..i-1 in the same transaction: it saw the
	// rows of those that succeeded, uncommitted as they were.
	for i := 1; i < n; i++ {
		wantSeen := 0
		for j := range i {
			if want[j] {
				wantSeen++
			}
		}
		if seen[i] != wantSeen {
			t.Errorf("member %d saw %d rows, want %d (one shared transaction)", i, seen[i], wantSeen)
		}
	}
}

// TestGroupCommitFailureFailsAll: when the shared transaction cannot
// commit, every member's InTx fails and nothing is written.
func TestGroupCommitFailureFailsAll(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	// A deferred foreign key is checked at COMMIT: the commit fails.
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE child (p INTEGER REFERENCES t (v) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	errs := make([]error, 3)
	var wg sync.WaitGroup
	wg.Go(func() {
		errs[0] = db.InTx(ctx, func(tx *Tx) error {
			<-release
			_, err := tx.Exec(ctx, `INSERT INTO child (p) VALUES (42)`) // no parent 42
			return err
		})
	})
	queued(t, db, 0)
	for i := 1; i < 3; i++ {
		wg.Go(func() {
			errs[i] = db.InTx(ctx, func(tx *Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, i)
				return err
			})
		})
		queued(t, db, i)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Errorf("member %d committed; want the group's commit error", i)
		}
	}
	if got := values(t, db); len(got) != 0 {
		t.Errorf("rows %v written by a failed commit", got)
	}
	// The DB goes on working.
	if err := db.InTx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (7)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestGroupCancelWhileQueued: a member whose context ends while it waits
// for its turn returns the context's error and never runs.
func TestGroupCancelWhileQueued(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = db.InTx(ctx, func(tx *Tx) error { <-release; return nil })
	})
	queued(t, db, 0)
	cctx, cancel := context.WithCancel(ctx)
	ran := false
	var err error
	wg.Go(func() {
		err = db.InTx(cctx, func(tx *Tx) error { ran = true; return nil })
	})
	queued(t, db, 1)
	cancel()
	queued(t, db, 0)
	close(release)
	wg.Wait()
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("cancelled member: error %v, ran %v; want context.Canceled, not run", err, ran)
	}
}

// TestTxCommitRefused: the function of InTx cannot end its transaction.
func TestTxCommitRefused(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	err := db.InTx(ctx, func(tx *Tx) error {
		if err := tx.Commit(); !errors.Is(err, errTxOwned) {
			return fmt.Errorf("Commit: %v, want refused", err)
		}
		if err := tx.Rollback(); !errors.Is(err, errTxOwned) {
			return fmt.Errorf("Rollback: %v, want refused", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (1)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, db); !got[1] {
		t.Fatal("the row was not committed")
	}
}

// startClose runs db.Close in a goroutine and returns once it has begun
// (the group is marked closed); Close's result comes on the channel.
func startClose(t *testing.T, db *DB) <-chan error {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.group.mu.Lock()
		started := db.group.closed
		db.group.mu.Unlock()
		if started {
			return closed
		}
		if time.Now().After(deadline) {
			t.Error("Close did not start")
			return closed
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloseDuringGroup: DB.Close while a group runs, with a member queued,
// waits for the group instead of blocking it (it used to hold the queue's
// lock while waiting for the group's connection, which the leader needed
// to take the next member).
func TestCloseDuringGroup(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = db.InTx(ctx, func(tx *Tx) error {
			close(started)
			<-release
			_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (1)`)
			return err
		})
	})
	<-started
	wg.Go(func() {
		_ = db.InTx(ctx, func(tx *Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (2)`)
			return err
		})
	})
	queued(t, db, 1)
	closed := startClose(t, db)
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close and the running group wait for each other")
	}
	wg.Wait()
}

// TestCloseAsAGroupBegins: DB.Close that comes between a group's taking
// the groups' connection and its BEGIN waits for the group, which
// commits. It used to close the connection under the BEGIN: the group
// failed, or database/sql panicked (a relay settling at shutdown while
// its DB closed brought a test process down once).
func TestCloseAsAGroupBegins(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	insert := func(v int) error {
		return db.InTx(ctx, func(tx *Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, v)
			return err
		})
	}
	if err := insert(1); err != nil { // the groups' connection now exists
		t.Fatal(err)
	}
	var closed <-chan error
	t.Cleanup(func() { testHookBeforeBegin = nil })
	// The group's leader is this goroutine (its InTx finds no group).
	testHookBeforeBegin = func() {
		testHookBeforeBegin = nil
		closed = startClose(t, db)
	}
	if err := insert(2); err != nil {
		t.Fatalf("the group that began as Close started: %v, want it committed", err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end after the group")
	}
	if err := insert(3); err == nil {
		t.Fatal("a transaction after Close committed")
	}
}

// TestGroupMemberCancelledMidStatement: a member's context that ends while
// its statement runs does not interrupt the statement. SQLite would roll
// back the whole shared transaction, the writes of the members before it
// included.
func TestGroupMemberCancelledMidStatement(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	release := make(chan struct{})
	var first, second error
	var wg sync.WaitGroup
	wg.Go(func() {
		first = db.InTx(ctx, func(tx *Tx) error {
			<-release
			_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, -1)
			return err
		})
	})
	queued(t, db, 0)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		second = db.InTx(cctx, func(tx *Tx) error {
			// Long enough (a few hundred ms) for the cancel to land
			// while it runs.
			_, err := tx.Exec(cctx, `INSERT INTO t (v)
				WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
				SELECT x FROM c`)
			return err
		})
	})
	queued(t, db, 1)
	close(release)
	time.Sleep(30 * time.Millisecond)
	cancel()
	wg.Wait()
	if first != nil || second != nil {
		t.Fatalf("InTx: %v, %v; want both committed", first, second)
	}
	got := values(t, db)
	if !got[-1] || len(got) != 300001 {
		t.Fatalf("%d rows committed (first member's: %v), want 300001", len(got), got[-1])
	}
}

// TestGroupLeaderYieldsToJoiners: a transaction whose caller is ready to
// run while the group's last member finishes joins the group. With one
// processor the caller runs only when the leader lets it, before the
// commit. The scheduler takes from its global run queue, where a yielding
// goroutine goes, at one schedule in 61, and then the leader goes on first:
// the test allows a few tries, each of which commits twice without the
// yield.
func TestGroupLeaderYieldsToJoiners(t *testing.T) {
	db := openGroupDB(t)
	ctx := context.Background()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var commits []uint64
	for try := range 5 {
		before := db.checkpoints.commits.Load()
		var second error
		var wg sync.WaitGroup
		first := db.InTx(ctx, func(tx *Tx) error {
			wg.Go(func() {
				second = db.InTx(ctx, func(tx *Tx) error {
					_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, 2*try+1)
					return err
				})
			})
			_, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES (?)`, 2*try)
			return err
		})
		wg.Wait()
		if first != nil || second != nil {
			t.Fatalf("InTx: %v, %v", first, second)
		}
		if got := values(t, db); !got[2*try] || !got[2*try+1] {
			t.Fatalf("committed %v", got)
		}
		n := db.checkpoints.commits.Load() - before
		if n == 1 {
			return
		}
		commits = append(commits, n)
	}
	t.Fatalf("commits per try %v, want the two transactions in one", commits)
}
