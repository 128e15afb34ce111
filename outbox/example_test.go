package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// A state change and the event it causes, written in one transaction: the
// order row and the outbox row commit together, and a transaction that
// fails leaves neither behind. The event waits in the outbox until a relay
// publishes it.
func ExampleDB_InTx() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := outbox.Open(ctx, "sqlite:"+filepath.Join(dir, "shop.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)`); err != nil {
		log.Fatal(err)
	}

	place := func(id string, total int) error {
		return db.InTx(ctx, func(tx *outbox.Tx) error {
			if total <= 0 {
				return errors.New("empty order")
			}
			if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total) VALUES (?, ?)`, id, total); err != nil {
				return err
			}
			event := message.NewMessage("order-"+id+"-placed", []byte(`{"order":"`+id+`"}`))
			return tx.Add(ctx, "order.placed", id, event) // ordered with the order's other events
		})
	}
	fmt.Println("order 1:", place("1", 30))
	fmt.Println("order 2:", place("2", 0)) // rolled back: no order, no event

	var orders int
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM orders`).Scan(&orders); err != nil {
		log.Fatal(err)
	}
	pending, err := db.Pending(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("orders:", orders, "events pending:", pending)
	// Output:
	// order 1: <nil>
	// order 2: empty order
	// orders: 1 events pending: 1
}

// A relay publishing the outbox to the bundled broker: an event committed
// before the relay starts is published once the relay runs, and a
// subscriber receives it. Cancelling the relay's context stops it; Run
// returns once the published row is settled (deleted from the outbox).
func ExampleRelay() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := outbox.Open(ctx, "sqlite:"+filepath.Join(dir, "shop.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	tr, err := transport.Open("mem://outbox-example-relay")
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	pub, err := tr.NewPublisher(bus.PublisherConfig{})
	if err != nil {
		log.Fatal(err)
	}
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "shipping"})
	if err != nil {
		log.Fatal(err)
	}
	// Subscribe first: it declares the queue, so the event is not dropped.
	received, err := sub.Subscribe(ctx, "order.placed")
	if err != nil {
		log.Fatal(err)
	}

	err = db.InTx(ctx, func(tx *outbox.Tx) error {
		event := message.NewMessage("order-1-placed", []byte(`{"order":"1"}`))
		event.Metadata.Set("order_id", "1")
		return tx.Add(ctx, "order.placed", "1", event)
	})
	if err != nil {
		log.Fatal(err)
	}

	relay := outbox.NewRelay(db, pub, outbox.RelayConfig{Service: "shop"}, nil)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(runCtx) })

	select {
	case msg := <-received:
		fmt.Println(msg.UUID, string(msg.Payload), msg.Metadata.Get("order_id"))
		msg.Ack()
	case <-time.After(10 * time.Second):
		fmt.Println("no event")
	}
	stop()
	wg.Wait()

	pending, _ := db.Pending(ctx)
	fmt.Println("published:", relay.Stats().Published, "pending:", pending)
	// Output:
	// order-1-placed {"order":"1"} 1
	// published: 1 pending: 0
}

// The inbox: a handler claims the idempotency key of the message it
// handles in the transaction of its own writes. A redelivered duplicate
// finds the key claimed by the committed transaction, and its effects are
// skipped.
func ExampleTx_Claim() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := outbox.Open(ctx, "sqlite:"+filepath.Join(dir, "payment.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	handle := func(key string) {
		err := db.InTx(ctx, func(tx *outbox.Tx) error {
			first, err := tx.Claim(ctx, "payment.charge", key)
			if err != nil {
				return err
			}
			if !first {
				fmt.Println(key, "is a duplicate: skipped")
				return nil
			}
			// The handler's own writes would go here, through tx.
			fmt.Println(key, "handled")
			return nil
		})
		if err != nil {
			fmt.Println(err)
		}
	}
	handle("order-1-placed")
	handle("order-1-placed") // redelivered

	seen, _ := db.Seen(ctx, "payment.charge", "order-1-placed")
	fmt.Println("seen:", seen)
	// Output:
	// order-1-placed handled
	// order-1-placed is a duplicate: skipped
	// seen: true
}
