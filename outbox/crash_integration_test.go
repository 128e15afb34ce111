//go:build integration

package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
}

func (orderPlaced) EventName() string { return "order.placed" }

// TestCrashRelayKilled runs a writer process that commits orders with
// their events, and a relay process that is killed with SIGKILL five times
// while the writer runs and restarted each time. Afterwards every event was
// delivered at least once and every consumer effect happened exactly once.
func TestCrashRelayKilled(t *testing.T) {
	for _, db := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"postgres", func(t *testing.T) string { return testutil.FreshPostgres(t) }},
		{"sqlite", func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/writer.db" }},
	} {
		t.Run(db.name, func(t *testing.T) { crashTest(t, db.url(t)) })
	}
}

func crashTest(t *testing.T, writerDB string) {
	const orders = 1500
	busURL := testutil.AMQPURL(t)
	bin := filepath.Join(t.TempDir(), "outboxcrash")
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/cmd/outboxcrash").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	exchange := fmt.Sprintf("crash.%d", time.Now().UnixNano())

	// The consumer: a transactional handler whose effect is a row.
	tr, err := transport.Open(busURL)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	consumerDB, err := outbox.Open(context.Background(), "sqlite:"+t.TempDir()+"/consumer.db")
	if err != nil {
		t.Fatal(err)
	}
	defer consumerDB.Close()
	if _, err := consumerDB.SQL().Exec(`CREATE TABLE effects (order_id TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	r, err := handlers.NewRouter(handlers.Config{Service: "consumer" + exchange[6:], Exchange: exchange}, tr, handlers.WithDB(consumerDB))
	if err != nil {
		t.Fatal(err)
	}
	var deliveries atomic.Int64
	handlers.MustHandleTx(r, "apply", handlers.TxHandlerFunc[orderPlaced](func(ctx context.Context, tx *outbox.Tx, e orderPlaced) error {
		deliveries.Add(1)
		_, err := tx.Exec(ctx, `INSERT INTO effects (order_id) VALUES (?)`, e.OrderID)
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = r.Run(ctx)
	}()
	// The router (its relay settling on the way out) ends before the
	// consumer's database closes.
	defer func() {
		cancel()
		<-ran
	}()
	<-r.Running()

	args := []string{"-db", writerDB, "-bus", busURL, "-exchange", exchange}
	writer := exec.Command(bin, append([]string{"writer", "-n", fmt.Sprint(orders)}, args...)...)
	writer.Stderr = os.Stderr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	writerDone := make(chan error, 1)
	go func() { writerDone <- writer.Wait() }()

	var mu sync.Mutex
	var relayCmd *exec.Cmd
	startRelay := func() {
		c := exec.Command(bin, append([]string{"relay"}, args...)...)
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		relayCmd = c
		mu.Unlock()
	}
	startRelay()
	kills := 0
	for kills < 5 {
		time.Sleep(time.Duration(150+rand.IntN(250)) * time.Millisecond)
		mu.Lock()
		c := relayCmd
		mu.Unlock()
		if err := c.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.Wait()
		kills++
		startRelay()
	}
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer func() {
		mu.Lock()
		_ = relayCmd.Process.Signal(syscall.SIGTERM)
		_ = relayCmd.Wait()
		mu.Unlock()
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		if err := consumerDB.SQL().QueryRow(`SELECT COUNT(*) FROM effects`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == orders {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d effects after the relay was killed %d times", n, orders, kills)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var distinct int
	if err := consumerDB.SQL().QueryRow(`SELECT COUNT(DISTINCT order_id) FROM effects`).Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != orders {
		t.Fatalf("%d distinct effects for %d orders", distinct, orders)
	}
	t.Logf("%d orders, relay killed %d times: %d handler runs, %d duplicate deliveries skipped by the inbox",
		orders, kills, deliveries.Load(), r.Stats().Duplicates)
}
