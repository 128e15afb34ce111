package dlq_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// TestDialMemVHost: a mem:// URL with a path reaches that virtual host,
// where transport.Open put the letters, not the default one.
func TestDialMemVHost(t *testing.T) {
	const url, dead = "mem://dlq-test-vhost/shop", "shipping.label.dlq"
	tr, err := transport.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// Declare the dead-letter queue on the vhost, then park a letter in it.
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{QueueName: func(string) string { return dead }})
	if err != nil {
		t.Fatal(err)
	}
	if init, ok := sub.(message.SubscribeInitializer); !ok {
		t.Fatalf("%T cannot declare a queue without consuming", sub)
	} else if err := init.SubscribeInitialize("label.requested"); err != nil {
		t.Fatal(err)
	}
	pub, err := tr.NewPublisher(bus.PublisherConfig{ToQueue: true, Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(dead, message.NewMessage("letter-1", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dlq.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	letters, err := dlq.List(ctx, c, dead)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].ID != "letter-1" {
		t.Fatalf("letters on mem://dlq-test-vhost/shop: %+v, want letter-1", letters)
	}
	if _, err := dlq.Dial("mem://dlq-test-vhost/nowhere"); err == nil {
		t.Fatal("Dial to a vhost that does not exist: no error")
	}
}
