package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	tries     map[string]int // Publish calls per message id, refused or not
	refuse    string
	failAfter int // fail every publish once this many were recorded; 0: never
	delay     time.Duration
	after     func() // called after each Publish call, outside the lock
	// refuseOnce refuses the first try of the message ids it holds.
	refuseOnce map[string]bool
}

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	if r.after != nil {
		defer r.after()
	}
	for _, m := range msgs {
		r.mu.Lock()
		if r.inFlight == nil {
			r.inFlight = map[string]bool{}
			r.tries = map[string]int{}
		}
		r.tries[m.UUID]++
		if r.inFlight[m.UUID] {
			r.overlap = append(r.overlap, m.UUID)
		}
		r.inFlight[m.UUID] = true
		fail := topic == r.refuse || (r.failAfter > 0 && len(r.published) >= r.failAfter) ||
			(r.refuseOnce[m.UUID] && r.tries[m.UUID] == 1)
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

func (r *recorder) setRefuse(topic string) {
	r.mu.Lock()
	r.refuse = topic
	r.mu.Unlock()
}

func (r *recorder) triesOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tries[id]
}

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
		n, err = relay.Pass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			time.Sleep(5 * time.Millisecond) // rows leased by another relay: poll
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

// testOrderingConcurrentWriters has writers on several keys commit (and
// roll back) while a relay runs: the relay publishes exactly the committed
// events, each key's in commit order. Ordering keys are any bytes (a
// saga id from a message): one holds a NUL, one is not UTF-8, one is
// longer than PostgreSQL indexes, and they order alike on every dialect.
func testOrderingConcurrentWriters(t *testing.T, url string) {
	db := open(t, url)
	rec := &recorder{}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{BatchSize: 7, PollInterval: 10 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var relayWG sync.WaitGroup
	relayWG.Go(func() { _ = relay.Run(ctx) })
	defer func() { cancel(); relayWG.Wait() }()

	const keys = 4
	orderingKeys := [keys]string{"k0", "k\x00", "k\xff", strings.Repeat("k", 5000)}
	var seq atomic.Int64
	var keyMu [keys]sync.Mutex // commits of one key in a known order; keys in parallel
	var mu sync.Mutex
	committed := map[string][]string{} // key -> ids in commit order
	total := 0
	boom := errors.New("rolled back")
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := range 20 {
				k := (w + i) % keys
				key := fmt.Sprintf("k%d", k)
				keyMu[k].Lock()
				var ids []string
				err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
					for range 1 + i%3 {
						id := fmt.Sprintf("%s-%d", key, seq.Add(1))
						m := message.NewMessage(id, []byte(id))
						m.Metadata.Set("key", key)
						if err := tx.Add(context.Background(), "evt", orderingKeys[k], m); err != nil {
							return err
						}
						ids = append(ids, id)
					}
					if i%5 == 4 {
						return boom
					}
					return nil
				})
				if err == nil {
					mu.Lock()
					committed[key] = append(committed[key], ids...)
					total += len(ids)
					mu.Unlock()
				} else if !errors.Is(err, boom) {
					t.Error(err)
				}
				keyMu[k].Unlock()
			}
		})
	}
	wg.Wait()
	poll(t, fmt.Sprintf("%d committed events published and settled", total), func() bool {
		n, err := db.Pending(context.Background())
		return err == nil && n == 0 && len(rec.snapshot()) >= total
	})
	got := map[string][]string{}
	for _, m := range rec.snapshot() {
		got[m.Metadata.Get("key")] = append(got[m.Metadata.Get("key")], m.UUID)
	}
	if len(got) != len(committed) {
		t.Fatalf("published keys %d, committed keys %d", len(got), len(committed))
	}
	for k, ids := range committed {
		if !slices.Equal(got[k], ids) {
			t.Fatalf("key %s published %v, committed %v (rolled-back events must not appear)", k, got[k], ids)
		}
	}
}

// testRestartMidBatch kills a relay between publishing and marking: its
// publisher confirms part of a batch, then its database connections go
// away (the process died) before the relay marks anything. A relay started
// again publishes every row, those already published again —
// at-least-once — and each key in commit order. With leases (SQLite) a
// relay with the same ID takes over at once and another once the lease
// ended; on PostgreSQL the rows' locks died with the connections.
func testRestartMidBatch(t *testing.T, url string) {
	tests := []struct {
		name    string
		restart string        // ID of the relay that takes over
		lease   time.Duration // the crashed relay's lease
	}{
		{"SameIDTakesOverAtOnce", "r1", time.Hour},
		{"OtherRelayAfterTheLease", "r2", 300 * time.Millisecond},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case has its own topic in the one database.
			topic := fmt.Sprintf("evt%d", i)
			crashed, err := outbox.Open(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			var seq atomic.Int64
			seq.Store(int64(1000 * i))
			committed := map[string][]string{}
			for k := range 5 {
				key := fmt.Sprintf("c%d-k%d", i, k)
				committed[key] = add(t, crashed, topic, key, 10, &seq)
			}
			// The first relay claims 30 of the 50 rows; its publisher
			// confirms them in one Publish call, after which the database
			// is closed, so the relay can mark nothing.
			killer := open(t, url)
			var once sync.Once
			first := &recorder{after: func() { once.Do(func() { kill(t, crashed, killer) }) }}
			t.Cleanup(func() { _ = crashed.Close() })
			r1 := outbox.NewRelay(crashed, first, outbox.RelayConfig{ID: "r1", Lease: tt.lease, Concurrency: 1, BatchSize: 30}, nil)
			if _, err := r1.Pass(context.Background()); err == nil {
				t.Fatal("the crashed relay marked its batch")
			}
			published := len(first.snapshot())
			if published != 30 {
				t.Fatalf("the crashed relay published %d rows, want its batch of 30", published)
			}

			db := open(t, url)
			rec := &recorder{}
			r2 := outbox.NewRelay(db, rec, outbox.RelayConfig{ID: tt.restart}, nil)
			drainAll(t, r2, db)
			got := map[string][]string{}
			for _, m := range rec.snapshot() {
				got[m.Metadata.Get("key")] = append(got[m.Metadata.Get("key")], m.UUID)
			}
			for key, ids := range committed {
				if !slices.Equal(got[key], ids) {
					t.Fatalf("after the restart key %s published %v, committed %v", key, got[key], ids)
				}
			}
			t.Logf("%d rows published before the crash, published again after it", published)
		})
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
	poll(t, fmt.Sprintf("%d rows published", total), func() bool { return len(rec.snapshot()) >= total })
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

// testBacklogInOrderDespiteRefusals has a relay run through a backlog of
// many batches while the broker refuses the first try of some rows: every row
// is published, and each key's rows first reach the broker in commit
// order (a row published in a refused Publish call may be published again,
// which is at-least-once).
func testBacklogInOrderDespiteRefusals(t *testing.T, url string) {
	db := open(t, url)
	var seq atomic.Int64
	rec := &recorder{refuseOnce: map[string]bool{}, delay: time.Millisecond}
	committed := map[string][]string{}
	for i := range 60 {
		key := fmt.Sprintf("k%d", i%12)
		ids := add(t, db, "evt", key, 1+i%4, &seq)
		committed[key] = append(committed[key], ids...)
		if i%9 == 4 {
			rec.refuseOnce[ids[0]] = true
		}
	}
	total := 0
	for _, ids := range committed {
		total += len(ids)
	}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{BatchSize: 16, RetryInitial: 5 * time.Millisecond, PollInterval: 10 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	poll(t, fmt.Sprintf("%d rows published and settled", total), func() bool {
		n, err := db.Pending(context.Background())
		return err == nil && n == 0
	})
	cancel()
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.overlap) > 0 {
		t.Fatalf("rows published twice at once: %v", rec.overlap)
	}
	firstsInOrder(t, rec.published, committed)
	if s := relay.Stats(); s.Failed < int64(len(rec.refuseOnce)) {
		t.Fatalf("stats %+v: %d refusals not all counted", s, len(rec.refuseOnce))
	}
}

// firstsInOrder checks that each key's messages were first published in
// the order committed holds (the message ids by key); a message published
// again later (at-least-once) does not count.
func firstsInOrder(t *testing.T, published []*message.Message, committed map[string][]string) {
	t.Helper()
	seen := map[string]bool{}
	firsts := map[string][]string{}
	for _, m := range published {
		if !seen[m.UUID] {
			seen[m.UUID] = true
			firsts[m.Metadata.Get("key")] = append(firsts[m.Metadata.Get("key")], m.UUID)
		}
	}
	for key, ids := range committed {
		if !slices.Equal(firsts[key], ids) {
			t.Fatalf("key %s first published as %v, committed %v", key, firsts[key], ids)
		}
	}
}

func cmpID(id string) int {
	var n int
	fmt.Sscanf(id[strings.LastIndex(id, "-")+1:], "%d", &n)
	return n
}

// testRefusedRowDoesNotBlockOtherKeys has the broker refuse one row (as
// RabbitMQ returns an unroutable message published mandatory): the row is
// retried after a backoff that doubles, counted in Stats().Failed and
// logged each time; the later row of its key waits; other keys are
// published at once; when the broker takes it, its key goes on in order.
func testRefusedRowDoesNotBlockOtherKeys(t *testing.T, url string) {
	const initial = 1500 * time.Millisecond
	db := open(t, url)
	var seq atomic.Int64
	bad := add(t, db, "unroutable", "k-bad", 1, &seq)
	after := add(t, db, "evt", "k-bad", 1, &seq) // same key: waits behind
	good := add(t, db, "evt", "k-good", 3, &seq)
	rec := &recorder{refuse: "unroutable"}
	logs := &logRecorder{}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{RetryInitial: initial, RetryMax: time.Minute}, slog.New(logs))
	ctx := context.Background()

	refusedAt := time.Now()
	for range 3 {
		if _, err := relay.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if time.Since(refusedAt) < initial { // else the backoff may have ended: nothing to check here
		if got := ids(rec.snapshot()); !slices.Equal(got, good) {
			t.Fatalf("published %v, want only the other key's %v", got, good)
		}
		if n := rec.triesOf(bad[0]); n != 1 {
			t.Fatalf("refused row tried %d times within its backoff", n)
		}
	}
	if s := relay.Stats(); s.Failed < 1 {
		t.Fatalf("stats %+v: the refusal is not counted", s)
	}
	if n, _ := db.Pending(ctx); n != len(bad)+len(after) {
		t.Fatalf("%d pending, want the refused row and the one behind it", n)
	}

	// The retry comes after the backoff, and is refused again.
	poll(t, "second try", func() bool { _, err := relay.Pass(ctx); return err == nil && rec.triesOf(bad[0]) == 2 })
	if d := time.Since(refusedAt); d < initial {
		t.Fatalf("retried after %v, before the %v backoff", d, initial)
	}
	// The broker takes it now: the key goes on, in order, after 2×initial.
	rec.setRefuse("")
	poll(t, "published once routable", func() bool { _, err := relay.Pass(ctx); return err == nil && len(rec.snapshot()) == 5 })
	if d := time.Since(refusedAt); d < 3*initial {
		t.Fatalf("third try after %v, before the doubled backoff (%v in all)", d, 3*initial)
	}
	if got, want := ids(rec.snapshot()), slices.Concat(good, bad, after); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if s := relay.Stats(); s.Failed != 2 || s.Published != 5 {
		t.Fatalf("stats %+v, want 2 failed and 5 published", s)
	}
	warned := logs.find(bad[0])
	if len(warned) != 2 || warned[0].attempts != 1 || warned[1].attempts != 2 || warned[1].retryIn != 2*warned[0].retryIn {
		t.Fatalf("warnings for the refused row: %+v, want attempts 1 and 2 with a doubled retry_in", warned)
	}
}

func ids(msgs []*message.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.UUID
	}
	return out
}

// poll calls cond until it holds, failing after a deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logRecorder is a slog.Handler keeping the relay's warnings.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

type warning struct {
	attempts int64
	retryIn  time.Duration
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// find returns the warnings naming message id.
func (l *logRecorder) find(id string) []warning {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []warning
	for _, r := range l.records {
		var w warning
		match := false
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "message_id":
				match = a.Value.String() == id
			case "attempts":
				w.attempts = a.Value.Int64()
			case "retry_in":
				w.retryIn = a.Value.Duration()
			}
			return true
		})
		if match && r.Level == slog.LevelWarn {
			out = append(out, w)
		}
	}
	return out
}

// runIdleRelay runs a relay on db that polls only hourly, so that only a
// wake-up makes it publish soon; it returns what the relay published and
// stops it at the end of the test.
func runIdleRelay(t *testing.T, db *outbox.DB) *recorder {
	rec := &recorder{}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{PollInterval: time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

// awaitPublished waits up to 20 s for the relay to publish, calling each
// (which may commit more) between looks.
func awaitPublished(t *testing.T, rec *recorder, every time.Duration, each func(), why string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(rec.snapshot()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		each()
		time.Sleep(every)
	}
}

// testWokenByOtherProcess: on PostgreSQL a relay is woken by the commit
// of a writer in another process (here another DB handle, which shares
// no in-process signal with the relay's), through LISTEN/NOTIFY.
func testWokenByOtherProcess(t *testing.T, url string) {
	db := open(t, url)
	if db.Dialect() != outbox.Postgres {
		t.Skip("SQLite: the relays of other processes poll (PollInterval)")
	}
	writer := open(t, url)
	rec := runIdleRelay(t, db)
	var seq atomic.Int64
	time.Sleep(300 * time.Millisecond) // the relay's first pass found nothing
	// Commits until the relay publishes one: the first may come before its
	// LISTEN is in place.
	awaitPublished(t, rec, 100*time.Millisecond, func() { add(t, writer, "evt", "k", 1, &seq) },
		"the relay was not woken by another process's commit (its poll interval is an hour)")
}

func testWokenAtCommit(t *testing.T, url string) {
	db := open(t, url)
	rec := runIdleRelay(t, db)
	var seq atomic.Int64
	time.Sleep(50 * time.Millisecond) // the relay's first pass found nothing
	add(t, db, "evt", "k", 1, &seq)
	awaitPublished(t, rec, 5*time.Millisecond, func() {}, "the relay was not woken by the commit (its poll interval is an hour)")
}

// testRefusalsWhileRunning has a relay run while writers commit several
// rows per key, each key's commits in turn, and the broker refuse the
// first try of some rows: each key's rows first reach the broker in commit
// order. On SQLite the commits hand their rows to the running relay
// (handoff.go), and a refused row's later rows must wait for its retry.
func testRefusalsWhileRunning(t *testing.T, url string) {
	db := open(t, url)
	// A slow broker and small batches: rows of a key wait behind a refused
	// one in the relay's hands.
	rec := &recorder{refuseOnce: map[string]bool{}, delay: time.Millisecond}
	relay := outbox.NewRelay(db, rec, outbox.RelayConfig{BatchSize: 4, RetryInitial: 5 * time.Millisecond, PollInterval: 10 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	var seq atomic.Int64
	committed := map[string][]string{}
	total := 0
	for i := range 60 {
		key := fmt.Sprintf("k%d", i%3)
		id := fmt.Sprintf("%s-%d", key, seq.Load()+1)
		rec.mu.Lock()
		rec.refuseOnce[id] = i%7 == 3
		rec.mu.Unlock()
		ids := add(t, db, "evt", key, 1+i%3, &seq)
		committed[key] = append(committed[key], ids...)
		total += len(ids)
	}
	poll(t, fmt.Sprintf("%d rows published and settled", total), func() bool {
		n, err := db.Pending(context.Background())
		return err == nil && n == 0
	})
	firstsInOrder(t, rec.snapshot(), committed)
	if s := relay.Stats(); s.Failed == 0 {
		t.Fatalf("stats %+v: no refusal counted", s)
	}
}

// testStoppedRelayHandsOver stops a relay while the rows committed as it
// ran are not all published: another relay publishes the rest at once,
// although the first one's lease is an hour (on SQLite, the stopped relay
// released the rows handed to it, whose lease is 5 s at most).
func testStoppedRelayHandsOver(t *testing.T, url string) {
	db := open(t, url)
	var stop context.CancelFunc
	var calls atomic.Int64
	first := &recorder{delay: 2 * time.Millisecond, after: func() {
		if calls.Add(1) == 3 {
			stop()
		}
	}}
	r1 := outbox.NewRelay(db, first, outbox.RelayConfig{ID: "r1", Lease: time.Hour, BatchSize: 4, Concurrency: 1, PollInterval: time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	stop = cancel
	done := make(chan struct{})
	go func() { defer close(done); _ = r1.Run(ctx) }()
	var seq atomic.Int64
	committed := map[string][]string{}
	total := 0
	for i := range 20 {
		key := fmt.Sprintf("k%d", i%5)
		committed[key] = append(committed[key], add(t, db, "evt", key, 2, &seq)...)
		total += 2
	}
	<-done
	if n := len(first.snapshot()); n >= total {
		t.Fatalf("the first relay published all %d rows before it stopped", n)
	}
	rec, d := takeOver(t, db, "the rest published by the second relay")
	if d > 2*time.Second {
		t.Fatalf("the second relay took %v: it waited for the first one's lease (on SQLite, a handed-over row's is 5 s)", d)
	}
	firstsInOrder(t, slices.Concat(first.snapshot(), rec.snapshot()), committed)
}

// testDeadRelayHandsOver: a relay dies (its process's connections gone)
// while rows committed as it ran are unpublished; another relay publishes
// every row within seconds, although the dead one's lease is an hour (on
// SQLite a handed-over row's lease is 5 s at most; on PostgreSQL the
// locks died with the connections).
func testDeadRelayHandsOver(t *testing.T, url string) {
	crashed, err := outbox.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crashed.Close() })
	killer := open(t, url)
	var once sync.Once
	first := &recorder{}
	r1 := outbox.NewRelay(crashed, first, outbox.RelayConfig{ID: "r1", Lease: time.Hour, PollInterval: time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r1.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond) // r1 runs (and takes the handoff)
	first.mu.Lock()
	first.after = func() { once.Do(func() { kill(t, crashed, killer) }) } // dies after its first publish
	first.mu.Unlock()
	var seq atomic.Int64
	committed := map[string]bool{}
	for _, id := range add(t, crashed, "evt", "k0", 2, &seq) {
		committed[id] = true
	}
	poll(t, "the first relay's first publish", func() bool { return len(first.snapshot()) > 0 })
	// The process is gone; more rows of the keys come from another one.
	for i := 1; i < 10; i++ {
		for _, id := range add(t, killer, "evt", fmt.Sprintf("k%d", i%5), 2, &seq) {
			committed[id] = true
		}
	}
	rec, d := takeOver(t, killer, "every row published by the second relay")
	if d > 15*time.Second {
		t.Fatalf("the second relay took %v: it waited for the dead one's hour-long lease", d)
	}
	published := map[string]bool{}
	for _, m := range slices.Concat(first.snapshot(), rec.snapshot()) {
		published[m.UUID] = true
	}
	for id := range committed {
		if !published[id] {
			t.Fatalf("row %s never published", id)
		}
	}
}

// takeOver runs a second relay ("r2") on db until no row is pending, and
// returns what it published and how long that took; it stops the relay
// at the end of the test.
func takeOver(t *testing.T, db *outbox.DB, what string) (*recorder, time.Duration) {
	t.Helper()
	rec := &recorder{}
	r2 := outbox.NewRelay(db, rec, outbox.RelayConfig{ID: "r2", PollInterval: 10 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r2.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := time.Now()
	poll(t, what, func() bool {
		n, err := db.Pending(context.Background())
		return err == nil && n == 0
	})
	return rec, time.Since(start)
}

// kill makes db's process die as far as the database can tell: its
// connections go away (on PostgreSQL, terminated through killer, another
// process's DB, so that their locks go with them) and db is closed.
func kill(t *testing.T, db, killer *outbox.DB) {
	if db.Dialect() == outbox.Postgres {
		if _, err := killer.SQL().Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
			t.Error(err)
		}
	}
	_ = db.Close()
}
