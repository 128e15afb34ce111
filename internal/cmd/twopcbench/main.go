// Command twopcbench measures two-phase commits against the saga path,
// side by side in one run, on the bundled broker in process:
//
//   - 2pc: a coordinator and two participants (package saga/twopc), each
//     with its own database; a transaction is done when both participants
//     durably committed their branch (PREPARE holds a row, COMMIT marks it).
//   - saga: the same two effects by choreography: the origin writes
//     bench.started to its outbox, participant A handles it in a
//     transaction (its row, bench.a-done in its outbox), participant B
//     handles that in a transaction (its row); done when B committed.
//
// Each store gets fresh databases (three SQLite files, or three PostgreSQL
// databases next to -pg). Latency is from the start of a transaction to
// its end, with -workers transactions in flight.
//
//	twopcbench [-n 2000] [-workers 8] [-rounds 2] [-pg postgres://...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/pgdb"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// Started begins a saga-path transaction; ADone is participant A's effect.
type Started struct {
	ID string `json:"id"`
}

type ADone struct {
	ID string `json:"id"`
}

func (Started) EventName() string { return "bench.started" }
func (ADone) EventName() string   { return "bench.a-done" }

// effect is both paths' participant: one row per transaction.
type effect struct{}

func (effect) Prepare(ctx context.Context, tx *outbox.Tx, gid string, _ int) (twopc.Vote, error) {
	_, err := tx.Exec(ctx, `INSERT INTO effects (id, state) VALUES (?, 'held')`, gid)
	return twopc.Yes, err
}

func (effect) Commit(ctx context.Context, tx *outbox.Tx, gid string, _ int) error {
	_, err := tx.Exec(ctx, `UPDATE effects SET state = 'done' WHERE id = ?`, gid)
	return err
}

func (effect) Abort(ctx context.Context, tx *outbox.Tx, gid string, _ int) error {
	_, err := tx.Exec(ctx, `DELETE FROM effects WHERE id = ?`, gid)
	return err
}

// tracker records when each transaction starts and ends.
type tracker struct {
	mu      sync.Mutex
	started map[string]time.Time
	parts   map[string]int
	done    map[string]chan struct{}
	lat     []time.Duration
	need    int // completions per transaction
}

func newTracker(need int) *tracker {
	return &tracker{started: map[string]time.Time{}, parts: map[string]int{}, done: map[string]chan struct{}{}, need: need}
}

func (t *tracker) start(id string) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.started[id] = time.Now()
	ch := make(chan struct{})
	t.done[id] = ch
	return ch
}

func (t *tracker) completed(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.parts[id]++
	if t.parts[id] == t.need {
		t.lat = append(t.lat, time.Since(t.started[id]))
		close(t.done[id])
	}
}

type result struct {
	path, store string
	n           int
	elapsed     time.Duration
	lat         []time.Duration
}

func (r result) String() string {
	slices.Sort(r.lat)
	q := func(p float64) time.Duration { return r.lat[int(p*float64(len(r.lat)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("| %s | %s | %d | **%.0f** | %v | %v | %v |", r.store, r.path, r.n, float64(r.n)/r.elapsed.Seconds(), q(0.5), q(0.9), q(0.99))
}

func main() {
	n := flag.Int("n", 2000, "transactions per run")
	workers := flag.Int("workers", 8, "transactions in flight")
	rounds := flag.Int("rounds", 2, "runs of each path per store, alternating")
	pg := flag.String("pg", os.Getenv("TROUPE_POSTGRES_URL"), "PostgreSQL URL; empty: SQLite only")
	flag.Parse()
	if *n < 1 || *workers < 1 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "twopcbench: -n, -workers and -rounds must be >= 1")
		os.Exit(2)
	}
	stores := []string{"sqlite"}
	if *pg != "" {
		stores = append(stores, "postgres")
	}
	ctx := context.Background()
	fmt.Printf("n=%d workers=%d rounds=%d\n\n| store | path | transactions | tx/s | p50 | p90 | p99 |\n|---|---|---:|---:|---:|---:|---:|\n", *n, *workers, *rounds)
	for _, store := range stores {
		for round := range *rounds {
			for _, path := range []string{"saga", "2pc"} {
				r, err := runOnce(ctx, store, *pg, path, fmt.Sprintf("%s-%s-%d-%d", store, path, round, time.Now().UnixNano()), *n, *workers)
				if err != nil {
					fmt.Fprintln(os.Stderr, "twopcbench:", err)
					os.Exit(1)
				}
				fmt.Println(r)
			}
		}
	}
}

func runOnce(ctx context.Context, store, pgURL, path, run string, n, workers int) (result, error) {
	dir, err := os.MkdirTemp("", "twopcbench")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	dbs := map[string]*outbox.DB{}
	defer func() {
		for _, db := range dbs {
			db.Close()
		}
	}()
	for _, node := range []string{"origin", "a", "b"} {
		u := "sqlite:" + filepath.Join(dir, node+".db")
		if store == "postgres" {
			var drop func()
			if u, drop, err = pgdb.Fresh(ctx, pgURL, "twopcbench"); err != nil {
				return result{}, err
			}
			defer drop()
		}
		db, err := outbox.Open(ctx, u)
		if err != nil {
			return result{}, err
		}
		dbs[node] = db
		if node != "origin" {
			if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE effects (id TEXT PRIMARY KEY, state TEXT NOT NULL)`); err != nil {
				return result{}, err
			}
		}
	}
	tr, err := transport.Open("mem://twopcbench-" + run)
	if err != nil {
		return result{}, err
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	tk := newTracker(2)
	var begin func(ctx context.Context, id string) error
	if path == "2pc" {
		begin, err = start2PC(ctx, &wg, tr, dbs, tk)
	} else {
		tk.need = 1
		begin, err = startSaga(ctx, &wg, tr, dbs, tk)
	}
	if err != nil {
		return result{}, err
	}
	var next atomic.Int64
	var failed error
	var fmu sync.Mutex
	t0 := time.Now()
	var ww sync.WaitGroup
	for range workers {
		ww.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				id := fmt.Sprintf("%s-%d", run, i)
				done := tk.start(id)
				err := begin(ctx, id)
				if err == nil {
					select {
					case <-done:
					case <-time.After(time.Minute):
						err = fmt.Errorf("%s not done within a minute", id)
					}
				}
				if err != nil {
					fmu.Lock()
					failed = errors.Join(failed, err)
					fmu.Unlock()
					return
				}
			}
		})
	}
	ww.Wait()
	elapsed := time.Since(t0)
	if failed != nil {
		return result{}, failed
	}
	return result{path: path, store: store, n: n, elapsed: elapsed, lat: tk.lat}, nil
}

func start2PC(ctx context.Context, wg *sync.WaitGroup, tr transport.Transport, dbs map[string]*outbox.DB, tk *tracker) (func(context.Context, string) error, error) {
	b, err := twopc.NewBus(tr, "", nil)
	if err != nil {
		return nil, err
	}
	if err := b.Declare(ctx, "origin", "a", "b"); err != nil {
		return nil, err
	}
	applied := twopc.WithHook(func(_ context.Context, s twopc.Step, gid string) error {
		if s == twopc.StepApplied {
			tk.completed(gid)
		}
		return nil
	})
	opts := []twopc.Option{twopc.WithVoteTimeout(30 * time.Second), twopc.WithResendInterval(5 * time.Second)}
	for _, node := range []string{"a", "b"} {
		p, err := twopc.NewParticipant(ctx, node, dbs[node], twopc.Resource[int](effect{}), b, append(opts, applied)...)
		if err != nil {
			return nil, err
		}
		wg.Go(func() { _ = b.Serve(ctx, node, p, 4) })
		wg.Go(func() { _ = p.Run(ctx) })
	}
	c, err := twopc.NewCoordinator(ctx, "origin", dbs["origin"], b, opts...)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { _ = b.Serve(ctx, "origin", c, 4) })
	wg.Go(func() { _ = c.Run(ctx) })
	branches := func() []twopc.Branch {
		return []twopc.Branch{{Participant: "a", Payload: []byte("1")}, {Participant: "b", Payload: []byte("1")}}
	}
	return func(ctx context.Context, id string) error { return c.Begin(ctx, id, branches()) }, nil
}

func startSaga(ctx context.Context, wg *sync.WaitGroup, tr transport.Transport, dbs map[string]*outbox.DB, tk *tracker) (func(context.Context, string) error, error) {
	insert := func(ctx context.Context, tx *outbox.Tx, id string) error {
		_, err := tx.Exec(ctx, `INSERT INTO effects (id, state) VALUES (?, 'done')`, id)
		return err
	}
	ra, err := handlers.NewRouter(handlers.Config{Service: "a", Prefetch: 64}, tr, handlers.WithDB(dbs["a"]))
	if err != nil {
		return nil, err
	}
	if err := handlers.HandleTx(ra, "apply", handlers.TxHandlerFunc[Started](func(ctx context.Context, tx *outbox.Tx, e Started) error {
		if err := insert(ctx, tx, e.ID); err != nil {
			return err
		}
		return handlers.Emit(ctx, ADone(e))
	})); err != nil {
		return nil, err
	}
	rb, err := handlers.NewRouter(handlers.Config{Service: "b", Prefetch: 64}, tr, handlers.WithDB(dbs["b"]),
		handlers.WithObserver(func(_ context.Context, o handlers.Observation) {
			if o.Outcome == handlers.Handled {
				tk.completed(o.SagaID)
			}
		}))
	if err != nil {
		return nil, err
	}
	if err := handlers.HandleTx(rb, "apply", handlers.TxHandlerFunc[ADone](func(ctx context.Context, tx *outbox.Tx, e ADone) error {
		return insert(ctx, tx, e.ID)
	})); err != nil {
		return nil, err
	}
	for _, r := range []*handlers.Router{ra, rb} {
		wg.Go(func() { _ = r.Run(ctx) })
		select {
		case <-r.Running():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	pub, err := tr.NewPublisher(bus.PublisherConfig{})
	if err != nil {
		return nil, err
	}
	origin := dbs["origin"]
	relay := outbox.NewRelay(origin, pub, outbox.RelayConfig{}, nil)
	wg.Go(func() { _ = relay.Run(ctx) })
	em := ra.Emitter()
	return func(ctx context.Context, id string) error {
		return origin.InTx(ctx, func(tx *outbox.Tx) error {
			return em.EmitTx(ctx, tx, Started{ID: id}, handlers.WithSagaID(id))
		})
	}, nil
}
