// Command outboxcrash is the pair of processes of the outbox crash test
// (outbox/crash_integration_test.go):
//
//	outboxcrash writer -db URL -bus URL -exchange X -n N   commit N orders, each with its event in the outbox
//	outboxcrash relay  -db URL -bus URL -exchange X        relay the outbox to the bus until killed
//
// The test kills the relay with SIGKILL several times while the writer
// runs, restarts it, and checks the consumers' effects.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// OrderPlaced is the event the writer emits.
type OrderPlaced struct {
	OrderID string `json:"order_id"`
}

// EventName implements handlers.Event.
func (OrderPlaced) EventName() string { return "order.placed" }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: outboxcrash writer|relay -db URL -bus URL -exchange X [-n N]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dbURL := fs.String("db", "", "database URL")
	busURL := fs.String("bus", "", "bus URL")
	exchange := fs.String("exchange", bus.DefaultExchange, "bus exchange")
	n := fs.Int("n", 1000, "orders to write")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "writer":
		err = write(ctx, *dbURL, *busURL, *exchange, *n)
	case "relay":
		err = relay(ctx, *dbURL, *busURL, *exchange)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outboxcrash:", err)
		os.Exit(1)
	}
}

func write(ctx context.Context, dbURL, busURL, exchange string, n int) error {
	db, err := outbox.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)`); err != nil {
		return err
	}
	tr, err := transport.Open(busURL)
	if err != nil {
		return err
	}
	defer tr.Close()
	r, err := handlers.NewRouter(handlers.Config{Service: "writer", Exchange: exchange, NoRelay: true}, tr)
	if err != nil {
		return err
	}
	em := r.Emitter()
	for i := range n {
		id := fmt.Sprintf("order-%05d", i)
		err := db.InTx(ctx, func(tx *outbox.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO orders (id) VALUES (?)`, id); err != nil {
				return err
			}
			return em.EmitTx(ctx, tx, OrderPlaced{OrderID: id}, handlers.WithSagaID(id), handlers.WithIdempotencyKey("place:"+id))
		})
		if err != nil {
			return fmt.Errorf("order %d: %w", i, err)
		}
		if i%100 == 0 {
			time.Sleep(5 * time.Millisecond) // a steady stream, not one burst
		}
	}
	fmt.Println("wrote", n)
	return nil
}

func relay(ctx context.Context, dbURL, busURL, exchange string) error {
	db, err := outbox.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	tr, err := transport.Open(busURL)
	if err != nil {
		return err
	}
	defer tr.Close()
	pub, err := tr.NewPublisher(bus.PublisherConfig{Exchange: exchange})
	if err != nil {
		return err
	}
	r := outbox.NewRelay(db, pub, outbox.RelayConfig{Lease: 2 * time.Second, PollInterval: 100 * time.Millisecond, BatchSize: 64}, nil)
	return r.Run(ctx)
}
