package troupefx_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/fx"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/troupefx"
)

// ParcelShipped is the examples' event; its name is its routing key.
type ParcelShipped struct {
	ParcelID string `json:"parcel_id"`
}

func (ParcelShipped) EventName() string { return "parcel.shipped" }

// A notify service as an fx application: Module opens the bus and the
// service's database named in Config, registers the handler given with
// Handler, and runs the router from the application's start to its stop.
// Plain code emits through the router's Emitter, taken out with fx.Populate.
func Example() {
	dir, _ := os.MkdirTemp("", "troupefx-example")
	defer os.RemoveAll(dir)

	emailed := make(chan string, 1)
	var router *handlers.Router
	app := fx.New(
		troupefx.Module,
		fx.Supply(troupefx.Config{
			Service: "notify",
			BusURL:  "mem://troupefx-example",
			DBURL:   "sqlite:" + filepath.Join(dir, "notify.db"),
		}),
		troupefx.Handler("email", handlers.HandlerFunc[ParcelShipped](func(ctx context.Context, e ParcelShipped) error {
			emailed <- e.ParcelID
			return nil
		})),
		fx.Populate(&router),
		fx.NopLogger, // or troupefx.Logger(slog.Default())
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		fmt.Println("start:", err)
		return
	}

	if err := router.Emitter().Emit(ctx, ParcelShipped{ParcelID: "p-1"}); err != nil {
		fmt.Println("emit:", err)
	}
	select {
	case id := <-emailed:
		fmt.Println("emailed about parcel", id)
	case <-ctx.Done():
		fmt.Println("no event")
	}
	fmt.Println("stopped:", app.Stop(ctx))
	// Output:
	// emailed about parcel p-1
	// stopped: <nil>
}

// A transactional handler writes to the service's database in the
// transaction that claims its message, so a redelivery cannot write twice;
// it needs Config.DBURL. The *outbox.DB that Module provides is there for
// the rest of the service: here an fx.Invoke creates the handler's table,
// and the example reads it back once the handler's transaction committed.
func ExampleTxHandler() {
	dir, _ := os.MkdirTemp("", "troupefx-example")
	defer os.RemoveAll(dir)

	committed := make(chan struct{}, 1)
	var router *handlers.Router
	var db *outbox.DB
	app := fx.New(
		troupefx.Module,
		fx.Supply(troupefx.Config{
			Service: "shipping",
			BusURL:  "mem://troupefx-example-tx",
			DBURL:   "sqlite:" + filepath.Join(dir, "shipping.db"),
		}),
		fx.Invoke(func(db *outbox.DB) error {
			_, err := db.SQL().Exec(`CREATE TABLE shipments (parcel_id TEXT PRIMARY KEY)`)
			return err
		}),
		troupefx.TxHandler("record", handlers.TxHandlerFunc[ParcelShipped](func(ctx context.Context, tx *outbox.Tx, e ParcelShipped) error {
			tx.AfterCommit(func() { committed <- struct{}{} })
			_, err := tx.Exec(ctx, `INSERT INTO shipments (parcel_id) VALUES (?)`, e.ParcelID)
			return err
		})),
		fx.Populate(&router, &db),
		fx.NopLogger,
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer app.Stop(ctx)

	_ = router.Emitter().Emit(ctx, ParcelShipped{ParcelID: "p-2"})
	select {
	case <-committed:
		var id string
		err := db.QueryRow(ctx, `SELECT parcel_id FROM shipments`).Scan(&id)
		fmt.Println("recorded", id, err)
	case <-ctx.Done():
		fmt.Println("no event")
	}
	// Output: recorded p-2 <nil>
}

// Courier is a dependency of the application that a handler needs.
type Courier struct{ booked chan string }

// A handler built by a constructor that fx calls with the application's
// parts: here a *Courier supplied to the application. RouterOption passes a
// router option that Config cannot hold.
func ExampleProvideHandler() {
	courier := &Courier{booked: make(chan string, 1)}
	var router *handlers.Router
	app := fx.New(
		troupefx.Module,
		fx.Supply(troupefx.Config{Service: "shipping", BusURL: "mem://troupefx-example-provide"}),
		fx.Supply(courier),
		troupefx.ProvideHandler("book", func(c *Courier) (handlers.Handler[ParcelShipped], error) {
			return handlers.HandlerFunc[ParcelShipped](func(ctx context.Context, e ParcelShipped) error {
				c.booked <- e.ParcelID
				return nil
			}), nil
		}),
		troupefx.RouterOption(handlers.WithDeadLetterEvents()),
		fx.Populate(&router),
		fx.NopLogger,
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		fmt.Println("start:", err)
		return
	}
	if err := router.Emitter().Emit(ctx, ParcelShipped{ParcelID: "p-3"}); err != nil {
		fmt.Println("emit:", err)
	}
	select {
	case id := <-courier.booked:
		fmt.Println("courier booked for parcel", id)
	case <-ctx.Done():
		fmt.Println("not booked")
	}
	fmt.Println("stopped:", app.Stop(ctx))
	// Output:
	// courier booked for parcel p-3
	// stopped: <nil>
}
