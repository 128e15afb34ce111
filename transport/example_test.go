package transport_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// A transport opened from a URL, with a subscriber and a publisher on the
// bundled broker: one event published, received and acknowledged. The
// same code runs on RabbitMQ with an amqp:// URL.
func Example() {
	tr, err := transport.Open("mem://example-transport")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()

	// Subscribing declares the group's queue, bound to the event name, so
	// subscribe before publishing: a message that reaches no queue is dropped.
	sub, _ := tr.NewSubscriber(bus.SubscriberConfig{Group: "notify"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, _ := sub.Subscribe(ctx, "order.placed")

	pub, _ := tr.NewPublisher(bus.PublisherConfig{})
	msg := message.NewMessage("m-1", []byte(`{"order":"123"}`))
	msg.Metadata.Set(envelope.SagaIDKey, "order-123")
	if err := pub.Publish("order.placed", msg); err != nil { // returns once confirmed
		fmt.Println(err)
		return
	}

	select {
	case got := <-msgs:
		fmt.Println(string(got.Payload), got.Metadata.Get(envelope.SagaIDKey))
		got.Ack()
	case <-time.After(5 * time.Second):
		fmt.Println("no message")
	}
	// Output: {"order":"123"} order-123
}

// Open checks the URL at once, so a typo fails at start-up. An amqp:// URL
// is not dialled until a publisher, subscriber or declaration needs the
// broker, so opening one needs no server.
func ExampleOpen() {
	for _, url := range []string{
		"mem://example-open/shop", // a named bundled broker, vhost "shop"
		"amqp://guest:guest@localhost:5672/",
		"mem://example-open?durable=true",
		"kafka://localhost:9092",
	} {
		tr, err := transport.Open(url)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println("opened", url)
		_ = tr.Close()
	}
	// Output:
	// opened mem://example-open/shop
	// opened amqp://guest:guest@localhost:5672/
	// transport: bad mem URL "mem://example-open?durable=true": want mem://[NAME][/VHOST]
	// transport: unsupported URL scheme "kafka" in "kafka://localhost:9092": want mem:// or amqp://
}

// Services of one process meet on the broker their shared mem:// URL
// names, each with its own transport. Every group gets every event;
// subscribers of one group would share them instead.
func Example_services() {
	const url = "mem://example-services"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 2)
	for _, service := range []string{"billing", "notify"} {
		tr, _ := transport.Open(url)
		defer tr.Close()
		sub, _ := tr.NewSubscriber(bus.SubscriberConfig{Group: service})
		msgs, _ := sub.Subscribe(ctx, "order.placed")
		go func() {
			for msg := range msgs {
				msg.Ack()
				got <- service + " got " + string(msg.Payload)
			}
		}()
	}

	shop, _ := transport.Open(url)
	defer shop.Close()
	pub, _ := shop.NewPublisher(bus.PublisherConfig{})
	_ = pub.Publish("order.placed", message.NewMessage("m-1", []byte("order 123")))

	var lines []string
	for range 2 {
		select {
		case line := <-got:
			lines = append(lines, line)
		case <-time.After(5 * time.Second):
			lines = append(lines, "missing a delivery")
		}
	}
	slices.Sort(lines)
	for _, line := range lines {
		fmt.Println(line)
	}
	// Output:
	// billing got order 123
	// notify got order 123
}
