//go:build integration

package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// TestUnroutableRetriedUntilRoutable relays through RabbitMQ with a
// mandatory publisher. An event no queue is bound for comes back from the
// broker: the relay counts it and retries it with backoff, while another
// key's event is delivered at once and the refused event's key waits. Once
// a queue is bound for its topic, the retry delivers it and then the event
// behind it, in order.
func TestUnroutableRetriedUntilRoutable(t *testing.T) {
	ctx := context.Background()
	amqpURL := testutil.AMQPURL(t)
	exchange := fmt.Sprintf("mandatory.%d", time.Now().UnixNano())
	conn, err := amqp091.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	decl := bus.Topology{Exchange: exchange}.ExchangeDecl()
	if err := ch.ExchangeDeclare(decl.Name, decl.Kind, decl.Durable, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.ExchangeDelete(exchange, false, false) }()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "order.placed", exchange, false, nil); err != nil {
		t.Fatal(err)
	}

	tr, err := transport.Open(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	pub, err := tr.NewPublisher(bus.PublisherConfig{Exchange: exchange, Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	db, err := outbox.Open(ctx, "sqlite:"+t.TempDir()+"/svc.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	events := []struct{ id, topic, key string }{
		{"refund-1", "order.refunded", "o1"}, // no queue bound: returned
		{"placed-1", "order.placed", "o1"},   // behind it, same key
		{"placed-2", "order.placed", "o2"},   // another key
	}
	err = db.InTx(ctx, func(tx *outbox.Tx) error {
		for _, e := range events {
			if err := tx.Add(ctx, e.topic, e.key, message.NewMessage(e.id, []byte(e.id))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	relay := outbox.NewRelay(db, pub, outbox.RelayConfig{RetryInitial: 200 * time.Millisecond, RetryMax: time.Second}, nil)
	if _, err := relay.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if s := relay.Stats(); s.Failed != 1 || s.Published != 1 {
		t.Fatalf("stats %+v, want the unroutable event refused and the other key's published", s)
	}
	if n, err := db.Pending(ctx); err != nil || n != 2 {
		t.Fatalf("%d pending (%v), want the refused event and the one behind it", n, err)
	}

	if err := ch.QueueBind(q.Name, "order.refunded", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for n := -1; n != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows pending 30 s after the queue was bound", n)
		}
		if _, err := relay.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err = db.Pending(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the retry is due after its backoff: poll
	}
	var got []string
	for len(got) < len(events) {
		if time.Now().After(deadline) {
			t.Fatalf("received %v", got)
		}
		d, ok, err := ch.Get(q.Name, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		got = append(got, d.MessageId)
	}
	if want := []string{"placed-2", "refund-1", "placed-1"}; !slices.Equal(got, want) {
		t.Fatalf("received %v, want %v", got, want)
	}
	if s := relay.Stats(); s.Failed < 1 || s.Published != 3 {
		t.Fatalf("stats %+v", s)
	}
}
