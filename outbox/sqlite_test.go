package outbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/outbox/outboxtest"
)

func TestConformanceSQLite(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/troupe.db" })
}

// TestSQLitePathWithURICharacters: a path with '?', '#' and '%' names the
// file it says, not a shorter one with the rest read as parameters.
func TestSQLitePathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a?b#c%20d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x?y.db")
	db, err := outbox.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.InTx(context.Background(), func(tx *outbox.Tx) error {
		_, err := tx.Exec(context.Background(), `CREATE TABLE t (x INTEGER)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database is not at the path given: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "x?y.db") {
			t.Errorf("unexpected file %q next to the database", e.Name())
		}
	}
}

// recordingPublisher keeps what it is given.
type recordingPublisher struct {
	mu   sync.Mutex
	msgs []*message.Message
}

func (p *recordingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

func (p *recordingPublisher) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.msgs {
		out = append(out, m.UUID)
	}
	return out
}

// TestSQLiteTimesOfTheFormerDriver: rows that modernc.org/sqlite, the
// SQLite driver before ncruces/go-sqlite3, wrote (its time format in the
// TIMESTAMP columns) read back and compare with the times written now: the
// relay publishes a pending row and one whose lease ended a second ago, and
// leaves alone one whose lease runs for another hour.
func TestSQLiteTimesOfTheFormerDriver(t *testing.T) {
	ctx := context.Background()
	db, err := outbox.Open(ctx, "sqlite:"+t.TempDir()+"/old.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const layout = "2006-01-02 15:04:05.999999999-07:00" // modernc's
	now := time.Now().UTC()
	created := now.Add(-time.Minute).Format(layout)
	ended := now.Add(-time.Second).Format(layout)
	held := now.Add(time.Hour).Format(layout)
	if err := db.InTx(ctx, func(tx *outbox.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO troupe_outbox (message_id, topic, ordering_key, payload, metadata, created_at)
			VALUES ('free', 'topic', 'a', x'', '{}', ?)`, created); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO troupe_outbox (message_id, topic, ordering_key, payload, metadata, created_at, locked_by, locked_until)
			VALUES ('lease-over', 'topic', 'b', x'', '{}', ?, 'a relay gone', ?)`, created, ended)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO troupe_outbox (message_id, topic, ordering_key, payload, metadata, created_at, locked_by, locked_until)
			VALUES ('lease-held', 'topic', 'c', x'', '{}', ?, 'another relay', ?)`, created, held)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	relay := outbox.NewRelay(db, pub, outbox.RelayConfig{PollInterval: 10 * time.Millisecond}, nil)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()
	defer func() { stop(); <-done }()
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(pub.ids()); n < 2 {
			return fmt.Errorf("%d published", n)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // ten more polls, for a wrong claim of lease-held
	got := pub.ids()
	slices.Sort(got)
	if !slices.Equal(got, []string{"free", "lease-over"}) {
		t.Fatalf("published %v, want [free lease-over] (lease-held is another relay's for an hour)", got)
	}
}
