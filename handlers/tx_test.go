package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
)

func TestTxInProcessSQLite(t *testing.T) {
	runTxScenarios(t, "mem://handlers-tx", func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/svc.db" })
}

func runTxScenarios(t *testing.T, busURL string, dbURL func(t *testing.T) string) {
	t.Run("DuplicateKeyEffectOnceInDB", func(t *testing.T) {
		t.Parallel()
		txScenarioDuplicate(t, newFixture(t, busURL), dbURL(t))
	})
	t.Run("FailedRunLeavesNoEffect", func(t *testing.T) {
		t.Parallel()
		txScenarioRollback(t, newFixture(t, busURL), dbURL(t))
	})
	t.Run("UnencodableEventFailsTheTransaction", func(t *testing.T) {
		t.Parallel()
		txScenarioUnencodable(t, newFixture(t, busURL), dbURL(t))
	})
	t.Run("DataTheDatabaseRefusesIsDeadLetteredAtOnce", func(t *testing.T) {
		t.Parallel()
		txScenarioDataException(t, newFixture(t, busURL), dbURL(t))
	})
	t.Run("NeedsDB", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, busURL)
		err := handlers.HandleTx(f.router(), "charge", handlers.TxHandlerFunc[OrderPlaced](
			func(context.Context, *outbox.Tx, OrderPlaced) error { return nil }))
		if err == nil {
			t.Fatal("HandleTx without WithDB accepted")
		}
	})
}

// ratioComputed cannot be encoded as JSON when its ratio is NaN.
type ratioComputed struct {
	OrderID string  `json:"order_id"`
	Ratio   float64 `json:"ratio"`
}

func (ratioComputed) EventName() string { return "ratio.computed" }

// txScenarioUnencodable emits, in the transaction that writes a charge, an
// event the codec cannot encode: EmitTx returns the codec's error, named,
// and the transaction rolls back: no charge, no outbox row.
func txScenarioUnencodable(t *testing.T, f *fixture, dbURL string) {
	ctx := context.Background()
	db := openDB(t, dbURL)
	em := f.router().Emitter()
	err := db.InTx(ctx, func(tx *outbox.Tx) error {
		if err := chargeTx(ctx, tx, OrderPlaced{OrderID: "7", Amount: 10}); err != nil {
			return err
		}
		return em.EmitTx(ctx, tx, ratioComputed{OrderID: "7", Ratio: math.NaN()})
	})
	var unsupported *json.UnsupportedValueError
	if !errors.As(err, &unsupported) || !strings.HasPrefix(err.Error(), "handlers: encode ratio.computed: ") {
		t.Fatalf("InTx returned %v, want the codec's error naming the event", err)
	}
	if n := charges(t, db, "7"); n != 0 {
		t.Fatalf("the charge committed without its event (%d rows)", n)
	}
	if n, err := db.Pending(ctx); err != nil || n != 0 {
		t.Fatalf("%d outbox rows (%v)", n, err)
	}
}

func openDB(t *testing.T, url string) *outbox.DB {
	t.Helper()
	db, err := outbox.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.SQL().Exec(`CREATE TABLE charges (order_id TEXT NOT NULL, amount INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func charges(t *testing.T, db *outbox.DB, orderID string) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRow(db.Rebind(`SELECT COUNT(*) FROM charges WHERE order_id = ?`), orderID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func chargeTx(ctx context.Context, tx *outbox.Tx, e OrderPlaced) error {
	_, err := tx.Exec(ctx, `INSERT INTO charges (order_id, amount) VALUES (?, ?)`, e.OrderID, e.Amount)
	return err
}

func txScenarioDuplicate(t *testing.T, f *fixture, dbURL string) {
	db := openDB(t, dbURL)
	r := f.router(handlers.WithDB(db))
	handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](chargeTx))
	f.run(r)
	for range 3 {
		must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "42", Amount: 10}, handlers.WithIdempotencyKey("charge:42")))
	}
	await(t, "three deliveries", func() bool { s := r.Stats(); return s.Handled+s.Duplicates == 3 })
	if n := charges(t, db, "42"); n != 1 || r.Stats().Duplicates != 2 {
		t.Fatalf("order 42 charged %d times in the database, %d duplicates", n, r.Stats().Duplicates)
	}
}

// txScenarioDataException: an event whose data the database refuses (an
// order id with a NUL: PostgreSQL's SQLSTATE 22021) is dead-lettered
// after one run, not after every retry, since each would fail alike.
// SQLite stores it: the event is handled.
func txScenarioDataException(t *testing.T, f *fixture, dbURL string) {
	db := openDB(t, dbURL)
	r := f.router(handlers.WithDB(db))
	var runs atomic.Int32
	handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](func(ctx context.Context, tx *outbox.Tx, e OrderPlaced) error {
		runs.Add(1)
		return chargeTx(ctx, tx, e)
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "o\x00", Amount: 5}))
	await(t, "handled or dead-lettered", func() bool { s := r.Stats(); return s.Handled+s.DeadLettered == 1 })
	s := r.Stats()
	switch db.Dialect() {
	case outbox.Postgres:
		if s.DeadLettered != 1 || runs.Load() != 1 {
			t.Fatalf("%+v after %d runs; want dead-lettered after one run", s, runs.Load())
		}
	default:
		if s.Handled != 1 || charges(t, db, "o\x00") != 1 {
			t.Fatalf("%+v; want handled, and the charge stored", s)
		}
	}
}

func txScenarioRollback(t *testing.T, f *fixture, dbURL string) {
	db := openDB(t, dbURL)
	r := f.router(handlers.WithDB(db))
	var runs atomic.Int32
	handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](func(ctx context.Context, tx *outbox.Tx, e OrderPlaced) error {
		if err := chargeTx(ctx, tx, e); err != nil {
			return err
		}
		if runs.Add(1) == 1 {
			return errors.New("gateway timeout after the write") // rolled back with the claim
		}
		return nil
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "7", Amount: 5}))
	await(t, "handled", func() bool { return r.Stats().Handled == 1 })
	if n := charges(t, db, "7"); n != 1 || runs.Load() != 2 {
		t.Fatalf("%d charges after %d runs", n, runs.Load())
	}
}

// TestInboxPruned: a router with a database deletes the inbox keys older
// than Config.InboxRetention, and keeps them with a negative retention.
func TestInboxPruned(t *testing.T) {
	for _, tt := range []struct {
		name      string
		retention time.Duration
		wantKept  bool
	}{
		{"pruned after the retention", 30 * time.Millisecond, false},
		{"kept forever when negative", -1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "mem://handlers-prune")
			db := openDB(t, "sqlite:"+t.TempDir()+"/svc.db")
			r, err := handlers.NewRouter(handlers.Config{Service: f.service, Exchange: f.exchange(), Retry: &f.policy,
				InboxRetention: tt.retention}, f.tr, handlers.WithDB(db))
			must(t, err)
			handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](chargeTx))
			f.run(r)
			must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "9", Amount: 10}))
			await(t, "handled", func() bool { return r.Stats().Handled == 1 })
			inbox := func() int {
				var n int
				must(t, db.SQL().QueryRow(`SELECT COUNT(*) FROM troupe_inbox`).Scan(&n))
				return n
			}
			if tt.wantKept {
				time.Sleep(100 * time.Millisecond) // several pruning rounds of a short retention
				if n := inbox(); n != 1 {
					t.Fatalf("%d inbox keys, want the 1 kept", n)
				}
				return
			}
			await(t, "the inbox key pruned", func() bool { return inbox() == 0 })
		})
	}
}
