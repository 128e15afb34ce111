package troupefx_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/troupefx"
)

type parcelSent struct {
	ID string `json:"id"`
}

func (parcelSent) EventName() string { return "parcel.sent" }

func TestModuleRunsHandlersWithTheApp(t *testing.T) {
	got := make(chan string, 2)
	var router *handlers.Router
	var db *outbox.DB
	app := fxtest.New(t,
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx", DBURL: "sqlite:" + t.TempDir() + "/s.db"}),
		troupefx.Handler("notify", handlers.HandlerFunc[parcelSent](func(ctx context.Context, e parcelSent) error {
			got <- "notify " + e.ID
			return nil
		})),
		troupefx.TxHandler("record", handlers.TxHandlerFunc[parcelSent](func(ctx context.Context, tx *outbox.Tx, e parcelSent) error {
			got <- "record " + e.ID
			return nil
		})),
		fx.Populate(&router, &db),
	)
	app.RequireStart()
	if err := router.Emitter().Emit(context.Background(), parcelSent{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("handlers did not run: %v", seen)
		}
	}
	if !seen["notify p1"] || !seen["record p1"] || db == nil {
		t.Fatalf("seen %v db %v", seen, db)
	}
	app.RequireStop()
}

func TestModuleReportsRegistrationErrors(t *testing.T) {
	app := fx.New(
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx-err"}),
		troupefx.TxHandler("record", handlers.TxHandlerFunc[parcelSent](func(context.Context, *outbox.Tx, parcelSent) error { return nil })),
		fx.NopLogger,
	)
	if err := app.Err(); err == nil {
		t.Fatal("a TxHandler without DBURL was accepted")
	}
}

// mailer is a dependency of the application that a handler needs.
type mailer struct{ sent chan string }

func (m *mailer) send(to string) { m.sent <- to }

type notifyParams struct {
	fx.In
	Mailer *mailer
	DB     *outbox.DB
}

func TestProvideHandlerInjectsDependencies(t *testing.T) {
	m := &mailer{sent: make(chan string, 2)}
	var router *handlers.Router
	app := fxtest.New(t,
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx-provide", DBURL: "sqlite:" + t.TempDir() + "/s.db"}),
		fx.Supply(m),
		troupefx.ProvideHandler("notify", func(p notifyParams) (handlers.Handler[parcelSent], error) {
			if p.DB == nil {
				return nil, errors.New("no database injected")
			}
			return handlers.HandlerFunc[parcelSent](func(ctx context.Context, e parcelSent) error {
				p.Mailer.send("notify " + e.ID)
				return nil
			}), nil
		}),
		troupefx.ProvideTxHandler("record", func(m *mailer) (handlers.TxHandler[parcelSent], error) {
			return handlers.TxHandlerFunc[parcelSent](func(ctx context.Context, tx *outbox.Tx, e parcelSent) error {
				tx.AfterCommit(func() { m.send("record " + e.ID) })
				return nil
			}), nil
		}),
		fx.Populate(&router),
	)
	app.RequireStart()
	defer app.RequireStop()
	if err := router.Emitter().Emit(context.Background(), parcelSent{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		select {
		case s := <-m.sent:
			seen[s] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("handlers did not run: %v", seen)
		}
	}
	if !seen["notify p1"] || !seen["record p1"] {
		t.Fatalf("seen %v", seen)
	}
}

func TestProvideHandlerConstructorErrorFailsTheApp(t *testing.T) {
	app := fx.New(
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx-provide-err"}),
		troupefx.ProvideHandler("notify", func(*outbox.DB) (handlers.Handler[parcelSent], error) {
			return nil, errors.New("no mail server configured")
		}),
		fx.NopLogger,
	)
	err := app.Err()
	if err == nil || !strings.Contains(err.Error(), "troupefx: handler notify: no mail server configured") {
		t.Fatalf("app error %v, want the constructor's", err)
	}
}

func TestRouterOptionReachesTheRouter(t *testing.T) {
	outcomes := make(chan handlers.Outcome, 1)
	var router *handlers.Router
	app := fxtest.New(t,
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx-option"}),
		troupefx.RouterOption(handlers.WithObserver(func(_ context.Context, o handlers.Observation) {
			select {
			case outcomes <- o.Outcome:
			default:
			}
		})),
		troupefx.Handler("notify", handlers.HandlerFunc[parcelSent](func(context.Context, parcelSent) error { return nil })),
		fx.Populate(&router),
	)
	app.RequireStart()
	defer app.RequireStop()
	if err := router.Emitter().Emit(context.Background(), parcelSent{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-outcomes:
		if o != handlers.Handled {
			t.Fatalf("outcome %v, want handled", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the observer given with RouterOption saw nothing")
	}
}

// TestModuleProvidesTheEmitter: plain code takes the service's
// *handlers.Emitter from the application.
func TestModuleProvidesTheEmitter(t *testing.T) {
	got := make(chan string, 1)
	var em *handlers.Emitter
	app := fxtest.New(t,
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx-emitter"}),
		troupefx.Handler("notify", handlers.HandlerFunc[parcelSent](func(ctx context.Context, e parcelSent) error {
			got <- e.ID
			return nil
		})),
		fx.Populate(&em),
	)
	app.RequireStart()
	defer app.RequireStop()
	if err := em.Emit(context.Background(), parcelSent{ID: "p9"}); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != "p9" {
			t.Fatalf("handled %q, want p9", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event emitted through the provided Emitter was not handled")
	}
}

// TestRouterStoppingShutsTheAppDown: when the router stops by itself after
// the start (here its transport is closed under it), the application is
// shut down with exit code 1 rather than left running without handlers,
// and the log says why.
func TestRouterStoppingShutsTheAppDown(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	var tr transport.Transport
	app := fxtest.New(t,
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://fx-stops"}, logger),
		troupefx.Handler("notify", handlers.HandlerFunc[parcelSent](func(ctx context.Context, e parcelSent) error { return nil })),
		fx.Populate(&tr),
	)
	app.RequireStart()
	select {
	case sig := <-app.Wait():
		t.Fatalf("shut down before the router stopped: %v", sig)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-app.Wait():
		if sig.ExitCode != 1 {
			t.Fatalf("shut down with exit code %d, want 1", sig.ExitCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the router stopped and the application kept running")
	}
	app.Stop(context.Background()) // the router's error, if any, is already logged
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "the router stopped; shutting the application down") {
		t.Fatalf("nothing logged about the router stopping: %s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
