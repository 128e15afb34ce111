package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/outbox"
)

// recorder is a Publisher that records what it publishes, refuses topics
// it is told to, can fail after a number of messages, and detects two
// relays publishing one message at the same time.
type recorder struct {
	mu        sync.Mutex
	published []*message.Message
	topics    []string
	inFlight  map[string]bool
	overlap   []string
	refuse    string
	failAfter int // fail every publish once this many were recorded; 0: never
	delay     time.Duration
}

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		r.mu.Lock()
		if r.inFlight == nil {
			r.inFlight = map[string]bool{}
		}
		if r.inFlight[m.UUID] {
			r.overlap = append(r.overlap, m.UUID)
		}
		r.inFlight[m.UUID] = true
		fail := topic == r.refuse || (r.failAfter > 0 && len(r.published) >= r.failAfter)
		r.mu.Unlock()
		time.Sleep(r.delay)
		r.mu.Lock()
		delete(r.inFlight, m.UUID)
		if !fail {
			r.published = append(r.published, m)
			r.topics = append(r.topics, topic)
		}
		r.mu.Unlock()
		if fail {
			return fmt.Errorf("refused %s: %w", m.UUID, errRefused)
		}
	}
	return nil
}

func (r *recorder) Close() error { return nil }

var errRefused = errors.New("broker refused")

func (r *recorder) snapshot() []*message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.published)
}

// add commits one transaction with n messages of key.
func add(t *testing.T, db *outbox.DB, topic, key string, n int, seq *atomic.Int64) []string {
	t.Helper()
	var ids []string
	err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
		for range n {
			id := fmt.Sprintf("%s-%d", key, seq.Add(1))
			m := message.NewMessage(id, []byte(id))
			m.Metadata.Set("key", key)
			if err := tx.Add(context.Background(), topic, key, m); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func drainAll(t *testing.T, relay *outbox.Relay, db *outbox.DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := db.Pending(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows still pending", n)
		}
		if _, err := relay.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func testAtomicity(t *testing.T, url string) {
	db := open(t, url)
	boom := errors.New("rolled back")
	err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
		if err := tx.Add(context.Background(), "order.placed", "o1", message.NewMessage("m1", []byte("x"))); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	rec := &recorder{}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{}, nil)
	drainAll(t, relay, db)
	if len(rec.snapshot()) != 0 {
		t.Fatal("a rolled-back event was published")
	}
	var seq atomic.Int64
	want := add(t, db, "order.placed", "o2", 1, &seq)
	drainAll(t, relay, db)
	if got := rec.snapshot(); len(got) != 1 || got[0].UUID != want[0] || string(got[0].Payload) != want[0] || got[0].Metadata.Get("key") != "o2" {
		t.Fatalf("published %v", got)
	}
}

func testOrderingConcurrentWriters(t *testing.T, url string) {
	db := open(t, url)
	var seq atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed := map[string][]string{} // key -> ids in commit order
	for w := range 6 {
		wg.Go(func() {
			for i := range 20 {
				key := fmt.Sprintf("k%d", (w+i)%4)
				mu.Lock() // commit order per key = the order recorded here
				ids := add(t, db, "evt", key, 1+i%3, &seq)
				committed[key] = append(committed[key], ids...)
				mu.Unlock()
			}
		})
	}
	rec := &recorder{}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{BatchSize: 7}, nil)
	wg.Wait()
	drainAll(t, relay, db)
	got := map[string][]string{}
	for _, m := range rec.snapshot() {
		got[m.Metadata.Get("key")] = append(got[m.Metadata.Get("key")], m.UUID)
	}
	for k, ids := range committed {
		if !slices.Equal(got[k], ids) {
			t.Fatalf("key %s published %v, committed %v", k, got[k], ids)
		}
	}
}

func testRestartMidBatch(t *testing.T, url string) {
	db := open(t, url)
	var seq atomic.Int64
	var want []string
	for i := range 5 {
		want = append(want, add(t, db, "evt", fmt.Sprintf("k%d", i), 10, &seq)...)
	}
	// The first relay "crashes": its publisher fails after 17 messages and
	// it never settles; its lease is short.
	crashing := &recorder{failAfter: 17}
	r1 := outbox.NewRelay(db, crashing, outbox.RelayConfig{ID: "r1", Lease: 200 * time.Millisecond}, nil)
	if _, err := r1.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	r2 := outbox.NewRelay(db, rec, outbox.RelayConfig{ID: "r2"}, nil)
	time.Sleep(250 * time.Millisecond) // r1's lease on anything it still holds ends
	drainAll(t, r2, db)
	seen := map[string]bool{}
	for _, m := range append(crashing.snapshot(), rec.snapshot()...) {
		seen[m.UUID] = true
	}
	for _, id := range want {
		if !seen[id] {
			t.Fatalf("%s never published", id)
		}
	}
}

func testSeveralRelays(t *testing.T, url string) {
	db := open(t, url)
	var seq atomic.Int64
	total := 0
	for i := range 30 {
		total += len(add(t, db, "evt", fmt.Sprintf("k%d", i%10), 5, &seq))
	}
	rec := &recorder{delay: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 3 {
		r := outbox.NewRelay(db, rec, outbox.RelayConfig{ID: fmt.Sprintf("r%d", i), BatchSize: 8, PollInterval: 10 * time.Millisecond}, nil)
		wg.Go(func() { _ = r.Run(ctx) })
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(rec.snapshot()) < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.overlap) > 0 {
		t.Fatalf("rows published by two relays at once: %v", rec.overlap)
	}
	if len(rec.published) != total {
		t.Fatalf("published %d of %d (no crash, so no duplicates either)", len(rec.published), total)
	}
	byKey := map[string][]string{}
	for _, m := range rec.published {
		byKey[m.Metadata.Get("key")] = append(byKey[m.Metadata.Get("key")], m.UUID)
	}
	for k, ids := range byKey {
		if !slices.IsSortedFunc(ids, func(a, b string) int { return cmpID(a) - cmpID(b) }) {
			t.Fatalf("key %s out of order: %v", k, ids)
		}
	}
}

func cmpID(id string) int {
	var n int
	fmt.Sscanf(id[strings.LastIndex(id, "-")+1:], "%d", &n)
	return n
}

func testRefusedRowDoesNotBlockOtherKeys(t *testing.T, url string) {
	db := open(t, url)
	var seq atomic.Int64
	bad := add(t, db, "unroutable", "k-bad", 1, &seq)
	after := add(t, db, "evt", "k-bad", 1, &seq) // same key: waits behind
	good := add(t, db, "evt", "k-good", 3, &seq)
	rec := &recorder{refuse: "unroutable"}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{RetryInitial: time.Hour}, nil)
	for range 3 {
		if _, err := relay.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, m := range rec.snapshot() {
		got = append(got, m.UUID)
	}
	if !slices.Equal(got, good) {
		t.Fatalf("published %v, want only %v", got, good)
	}
	if s := relay.Stats(); s.Failed != 1 {
		t.Fatalf("stats %+v", s)
	}
	if n, _ := db.Pending(context.Background()); n != len(bad)+len(after) {
		t.Fatalf("%d pending", n)
	}
}

func testWokenAtCommit(t *testing.T, url string) {
	db := open(t, url)
	rec := &recorder{}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{PollInterval: time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(ctx) }()
	var seq atomic.Int64
	time.Sleep(50 * time.Millisecond) // the relay's first pass found nothing
	add(t, db, "evt", "k", 1, &seq)
	deadline := time.Now().Add(20 * time.Second)
	for len(rec.snapshot()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the relay was not woken by the commit (its poll interval is an hour)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
