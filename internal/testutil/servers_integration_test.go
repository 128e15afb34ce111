//go:build integration

package testutil_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/internal/testutil"
)

// TestRabbitMQServes checks that the RabbitMQ that `make test` started
// takes and returns a persistent message with publisher confirms.
func TestRabbitMQServes(t *testing.T) {
	conn, err := amqp.Dial(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q.Name, true, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("ping")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	d, ok, err := ch.Get(q.Name, true)
	if err != nil || !ok || string(d.Body) != "ping" {
		t.Fatalf("get: %q %v %v", d.Body, ok, err)
	}
}

// TestPostgresServes checks that the PostgreSQL that `make test` started
// accepts connections and DDL.
func TestPostgresServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testutil.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{"CREATE TEMP TABLE t (v int)", "INSERT INTO t VALUES (41)"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT v + 1 FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 42 {
		t.Fatalf("got %d", n)
	}
}
