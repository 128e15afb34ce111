package troupefx_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
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
