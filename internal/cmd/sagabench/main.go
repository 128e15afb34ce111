// Command sagabench measures the saga tracker's overhead: how many events
// per second it records, on SQLite and on PostgreSQL, side by side with
// its peer in the same run, and prints a Markdown table for
// docs/BENCHMARKS.md.
//
//   - tracker: saga.Tracker following the e-commerce checkout's
//     declaration: per event, an inbox claim, the instance's row locked
//     (PostgreSQL), its history read, the entry inserted, the state
//     derived again and the row updated, in one transaction;
//   - handler (the peer): the plain transactional handler path of a
//     service on the same database: handlers.HandleTx, one handler per
//     event type, each claiming the message in the inbox and inserting
//     one row, in one transaction.
//
// Workload. -sagas happy checkouts of 5 events each (order.placed,
// payment.captured, inventory.reserved, order.confirmed,
// notification.sent), published to the bundled broker in process
// (mem://) before either consumer starts: both queues (the tracker's and
// the handlers') are bound first, so that each gets every event once.
// Then the tracker drains its queue, then the handlers drain theirs, each
// on a fresh database; events/s is events / (time until the last one is
// committed, polled every 10 ms). Both consume with prefetch 64 per bound
// event. Run it with PostgreSQL up:
//
//	scripts/with-servers.sh go run ./internal/cmd/sagabench -sagas 2000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/pgdb"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

var happy = []string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent"}

func main() {
	sagas := flag.Int("sagas", 2000, "checkouts to track (5 events each)")
	stores := flag.String("stores", "sqlite,postgres", "comma-separated: sqlite, postgres ($TROUPE_POSTGRES_URL)")
	flag.Parse()
	if err := run(context.Background(), *sagas, strings.Split(*stores, ","), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sagabench:", err)
		os.Exit(1)
	}
}

type result struct {
	store, system string
	events        int
	took          time.Duration
}

func (r result) rate() float64 { return float64(r.events) / r.took.Seconds() }

func run(ctx context.Context, sagas int, stores []string, w io.Writer) error {
	if sagas <= 0 {
		return fmt.Errorf("-sagas %d: want at least 1", sagas)
	}
	var results []result
	for _, store := range stores {
		newDB, err := dbMaker(ctx, store)
		if err != nil {
			return err
		}
		rs, err := measure(ctx, store, sagas, newDB)
		if err != nil {
			return fmt.Errorf("%s: %w", store, err)
		}
		results = append(results, rs...)
	}
	fmt.Fprintf(w, "| store | consumer | events | time | events/s |\n|---|---|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(w, "| %s | %s | %d | %.2f s | %.0f |\n", r.store, r.system, r.events, r.took.Seconds(), r.rate())
	}
	for i := 0; i+1 < len(results); i += 2 {
		fmt.Fprintf(w, "\n%s: tracker / handler = %.2f", results[i].store, results[i].rate()/results[i+1].rate())
	}
	fmt.Fprintln(w)
	return nil
}

// dbMaker returns a function making a fresh database URL for store, and
// dropping it at the end.
func dbMaker(ctx context.Context, store string) (func() (string, func(), error), error) {
	switch store {
	case "sqlite":
		return func() (string, func(), error) {
			dir, err := os.MkdirTemp("", "sagabench")
			if err != nil {
				return "", nil, err
			}
			return "sqlite:" + filepath.Join(dir, "bench.db"), func() { os.RemoveAll(dir) }, nil
		}, nil
	case "postgres":
		base := os.Getenv("TROUPE_POSTGRES_URL")
		if base == "" {
			return nil, fmt.Errorf("postgres: TROUPE_POSTGRES_URL is not set (run under scripts/with-servers.sh)")
		}
		return func() (string, func(), error) { return pgdb.Fresh(ctx, base, "sagabench") }, nil
	}
	return nil, fmt.Errorf("unknown store %q: want sqlite or postgres", store)
}

// measure publishes the workload once to both queues, then drains the
// tracker's, then the handlers'.
func measure(ctx context.Context, store string, sagas int, newDB func() (string, func(), error)) ([]result, error) {
	busURL := fmt.Sprintf("mem://sagabench-%s-%d", store, time.Now().UnixNano())
	tr, err := transport.Open(busURL)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	tracked := saga.TrackerService + "." + shop.CheckoutSaga.Name
	queues := []bus.Queue{{Name: tracked, Events: append(shop.CheckoutSaga.Events(), handlers.DeadLetteredEvent)}}
	for _, ev := range happy {
		queues = append(queues, bus.Queue{Name: bus.WorkQueue("baseline", handlerName(ev)), Events: []string{ev}})
	}
	if err := tr.Declare(ctx, bus.Topology{Queues: queues}); err != nil {
		return nil, err
	}
	if err := publish(tr, sagas); err != nil {
		return nil, err
	}
	n := sagas * len(happy)
	trk, err := drain(ctx, newDB, n, `SELECT COUNT(*) FROM troupe_saga_history`, func(ctx context.Context, db *outbox.DB) (func(context.Context) error, <-chan struct{}, error) {
		t, err := saga.NewTracker(ctx, &shop.CheckoutSaga, db, tr, saga.TrackerConfig{})
		if err != nil {
			return nil, nil, err
		}
		return t.Run, t.Running(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	base, err := drain(ctx, newDB, n, `SELECT COUNT(*) FROM seen`, func(ctx context.Context, db *outbox.DB) (func(context.Context) error, <-chan struct{}, error) {
		return baseline(ctx, db, tr)
	})
	if err != nil {
		return nil, fmt.Errorf("handler: %w", err)
	}
	return []result{{store, "tracker", n, trk}, {store, "handler", n, base}}, nil
}

func handlerName(event string) string { return strings.ReplaceAll(event, ".", "-") }

// publish puts every event of the workload on the bus.
func publish(tr transport.Transport, sagas int) error {
	pub, err := tr.NewPublisher(bus.PublisherConfig{})
	if err != nil {
		return err
	}
	defer pub.Close()
	now := time.Now().UTC()
	for i := range sagas {
		id := fmt.Sprintf("order-%06d", i)
		payload, _ := json.Marshal(map[string]string{"order_id": id})
		var cause string
		for _, ev := range happy {
			m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), payload)
			m.Metadata.Set(envelope.EventKey, ev)
			m.Metadata.Set(envelope.SagaIDKey, id)
			m.Metadata.Set(envelope.CausationIDKey, cause)
			m.Metadata.Set(envelope.ProducedAtKey, now.Format(time.RFC3339Nano))
			cause = m.UUID
			if err := pub.Publish(ev, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// drain runs a consumer made by start on a fresh database until count
// reaches n, and returns how long that took from its start.
func drain(ctx context.Context, newDB func() (string, func(), error), n int, count string,
	start func(context.Context, *outbox.DB) (func(context.Context) error, <-chan struct{}, error)) (time.Duration, error) {
	url, drop, err := newDB()
	if err != nil {
		return 0, err
	}
	defer drop()
	db, err := outbox.Open(ctx, url)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	run, ready, err := start(ctx, db)
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	done := make(chan error, 1)
	go func() { done <- run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-ready:
	case err := <-done:
		return 0, err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var got int
		if err := db.SQL().QueryRowContext(ctx, count).Scan(&got); err != nil {
			return 0, err
		}
		if got >= n {
			return time.Since(begin), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d events after 10 minutes", got, n)
		}
		select {
		case err := <-done:
			return 0, fmt.Errorf("consumer stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Events of the baseline service, one type per checkout event.
type (
	placed struct {
		OrderID string `json:"order_id"`
	}
	captured struct {
		OrderID string `json:"order_id"`
	}
	reserved struct {
		OrderID string `json:"order_id"`
	}
	confirmed struct {
		OrderID string `json:"order_id"`
	}
	notified struct {
		OrderID string `json:"order_id"`
	}
)

func (placed) EventName() string    { return "order.placed" }
func (captured) EventName() string  { return "payment.captured" }
func (reserved) EventName() string  { return "inventory.reserved" }
func (confirmed) EventName() string { return "order.confirmed" }
func (notified) EventName() string  { return "notification.sent" }

// baseline is the peer: a service whose transactional handlers record
// each event in one row.
func baseline(ctx context.Context, db *outbox.DB, tr transport.Transport) (func(context.Context) error, <-chan struct{}, error) {
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE seen (saga TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (saga, event))`); err != nil {
		return nil, nil, err
	}
	r, err := handlers.NewRouter(handlers.Config{Service: "baseline", NoRelay: true}, tr, handlers.WithDB(db))
	if err != nil {
		return nil, nil, err
	}
	insert := func(ctx context.Context, tx *outbox.Tx, id, event string) error {
		_, err := tx.Exec(ctx, `INSERT INTO seen (saga, event) VALUES (?, ?)`, id, event)
		return err
	}
	errs := []error{
		handlers.HandleTx(r, handlerName("order.placed"), handlers.TxHandlerFunc[placed](func(ctx context.Context, tx *outbox.Tx, e placed) error {
			return insert(ctx, tx, e.OrderID, e.EventName())
		})),
		handlers.HandleTx(r, handlerName("payment.captured"), handlers.TxHandlerFunc[captured](func(ctx context.Context, tx *outbox.Tx, e captured) error {
			return insert(ctx, tx, e.OrderID, e.EventName())
		})),
		handlers.HandleTx(r, handlerName("inventory.reserved"), handlers.TxHandlerFunc[reserved](func(ctx context.Context, tx *outbox.Tx, e reserved) error {
			return insert(ctx, tx, e.OrderID, e.EventName())
		})),
		handlers.HandleTx(r, handlerName("order.confirmed"), handlers.TxHandlerFunc[confirmed](func(ctx context.Context, tx *outbox.Tx, e confirmed) error {
			return insert(ctx, tx, e.OrderID, e.EventName())
		})),
		handlers.HandleTx(r, handlerName("notification.sent"), handlers.TxHandlerFunc[notified](func(ctx context.Context, tx *outbox.Tx, e notified) error {
			return insert(ctx, tx, e.OrderID, e.EventName())
		})),
	}
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	return r.Run, r.Running(), nil
}
