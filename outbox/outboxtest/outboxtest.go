// Package outboxtest is the conformance suite of outbox databases, run
// unchanged against SQLite and PostgreSQL:
//
//	outboxtest.Run(t, func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/t.db" })
package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/outbox"
)

// NewURL returns the URL of a fresh, empty database for one test.
type NewURL func(t *testing.T) string

// Run runs every case, in parallel, each on its own database.
func Run(t *testing.T, newURL NewURL) {
	cases := []struct {
		name string
		fn   func(t *testing.T, url string)
	}{
		{"MigrateTwiceIsHarmless", testMigrateTwice},
		{"ConcurrentMigrations", testConcurrentMigrations},
		{"ClaimOnce", testClaimOnce},
		{"ClaimAnyBytes", testClaimAnyBytes},
		{"RolledBackClaimIsForgotten", testRollback},
		{"ConcurrentClaimsOneWinner", testConcurrentClaims},
		{"SeenAndRecord", testSeenRecord},
		{"PruneInboxOldestFirst", testPruneInbox},
		{"RollbackPublishesNothingCommitPublishes", testAtomicity},
		{"OrderPerKeyWithConcurrentWriters", testOrderingConcurrentWriters},
		{"RelayRestartMidBatch", testRestartMidBatch},
		{"SeveralRelaysNeverPublishARowTwiceAtOnce", testSeveralRelays},
		{"RefusedRowRetriedWithoutBlockingOtherKeys", testRefusedRowDoesNotBlockOtherKeys},
		{"BacklogInOrderDespiteRefusals", testBacklogInOrderDespiteRefusals},
		{"InOrderDespiteRefusalsWhileRunning", testRefusalsWhileRunning},
		{"StoppedRelayHandsOverAtOnce", testStoppedRelayHandsOver},
		{"DeadRelayHandsOverWithinSeconds", testDeadRelayHandsOver},
		{"RelayWokenAtCommit", testWokenAtCommit},
		{"RelayWokenByAnotherProcessCommit", testWokenByOtherProcess},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, newURL(t))
		})
	}
}

func open(t *testing.T, url string) *outbox.DB {
	t.Helper()
	db, err := outbox.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func claim(t *testing.T, db *outbox.DB, consumer, key string) bool {
	t.Helper()
	var ok bool
	err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
		var err error
		ok, err = tx.Claim(context.Background(), consumer, key)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func testMigrateTwice(t *testing.T, url string) {
	db := open(t, url)
	claim(t, db, "c", "k")
	again := open(t, url)
	if !mustSeen(t, again, "c", "k") {
		t.Fatal("reopening lost the inbox")
	}
}

func testConcurrentMigrations(t *testing.T, url string) {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			db, err := outbox.Open(context.Background(), url)
			if err == nil {
				err = db.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent migration: %v", err)
		}
	}
}

func testClaimOnce(t *testing.T, url string) {
	db := open(t, url)
	if !claim(t, db, "payment.charge", "charge:1") {
		t.Fatal("first claim refused")
	}
	if claim(t, db, "payment.charge", "charge:1") {
		t.Fatal("second claim of one key accepted")
	}
	if !claim(t, db, "inventory.reserve", "charge:1") {
		t.Fatal("a key is per consumer")
	}
}

// testClaimAnyBytes: a key is any bytes, as a message may carry, and
// claims the same on every dialect: keys that are not UTF-8, or longer
// than an index entry may be on PostgreSQL, are claimed once each, and
// keys that differ in one byte are not one key.
func testClaimAnyBytes(t *testing.T, url string) {
	db := open(t, url)
	long := strings.Repeat("k", 10_000)
	keys := []string{"a\xff", "a\xfe", "a\ufffd", long + "1", long + "2", "~sha256:x", "\x00", ""}
	for _, k := range keys {
		if !claim(t, db, "c", k) {
			t.Fatalf("first claim of %.20q refused (a key claimed before collides with it)", k)
		}
	}
	for _, k := range keys {
		if claim(t, db, "c", k) {
			t.Fatalf("second claim of %.20q accepted", k)
		}
		if seen, err := db.Seen(context.Background(), "c", k); err != nil || !seen {
			t.Fatalf("Seen(%.20q) = %v, %v after its claim", k, seen, err)
		}
	}
}

func testRollback(t *testing.T, url string) {
	db := open(t, url)
	boom := errors.New("handler failed")
	err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
		if ok, err := tx.Claim(context.Background(), "c", "k"); !ok || err != nil {
			t.Fatalf("claim: %v %v", ok, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx returned %v", err)
	}
	if !claim(t, db, "c", "k") {
		t.Fatal("a rolled-back claim still counts")
	}
}

func testConcurrentClaims(t *testing.T, url string) {
	db := open(t, url)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
				ok, err := tx.Claim(context.Background(), "c", "same")
				if ok {
					wins.Add(1)
				}
				return err
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent claims won", wins.Load())
	}
}

func testSeenRecord(t *testing.T, url string) {
	db := open(t, url)
	ctx := context.Background()
	if mustSeen(t, db, "c", "k") {
		t.Fatal("seen before record")
	}
	for range 2 {
		if err := db.Record(ctx, "c", "k"); err != nil {
			t.Fatal(err)
		}
	}
	if !mustSeen(t, db, "c", "k") {
		t.Fatal("not seen after record")
	}
}

// testPruneInbox: PruneInbox deletes the keys handled before its cutoff,
// across several chunks, and keeps the later ones.
func testPruneInbox(t *testing.T, url string) {
	db := open(t, url)
	ctx := context.Background()
	const old = 2500 // more than one chunk
	err := db.InTx(ctx, func(tx *outbox.Tx) error {
		for i := range old {
			if _, err := tx.Claim(ctx, "c", fmt.Sprintf("old-%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now()
	for !time.Now().After(cutoff) { // the next key is handled after the cutoff
	}
	if err := db.Record(ctx, "c", "new"); err != nil {
		t.Fatal(err)
	}
	n, err := db.PruneInbox(ctx, cutoff)
	if err != nil || n != old {
		t.Fatalf("PruneInbox: %d, %v; want %d", n, err, old)
	}
	if mustSeen(t, db, "c", "old-0") || mustSeen(t, db, "c", fmt.Sprintf("old-%d", old-1)) {
		t.Error("a key handled before the cutoff is still in the inbox")
	}
	if !mustSeen(t, db, "c", "new") {
		t.Error("the key handled after the cutoff was pruned")
	}
	if n, err := db.PruneInbox(ctx, cutoff); err != nil || n != 0 {
		t.Errorf("second PruneInbox: %d, %v; want 0", n, err)
	}
}

func mustSeen(t *testing.T, db *outbox.DB, consumer, key string) bool {
	t.Helper()
	ok, err := db.Seen(context.Background(), consumer, key)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
