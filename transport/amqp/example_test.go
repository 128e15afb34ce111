package amqp_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport/amqp"
	"github.com/troupehq/troupe/transport/bus"
)

// A service on RabbitMQ, reached by the URL in TROUPE_BUS_URL (e.g.
// amqp://guest:guest@localhost:5672/): it subscribes to order.placed,
// publishes one and acknowledges it. Most code opens the same transport
// with transport.Open, which picks this package for amqp:// URLs. This
// example needs a running broker, so it is compiled but not run.
func Example() {
	tr, err := amqp.New(os.Getenv("TROUPE_BUS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	// The subscriber dials at once; it declares the notify.order.placed
	// queue (with its dead-letter queue) and binds it to the bus.
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "notify"})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, "order.placed")
	if err != nil {
		log.Fatal(err)
	}

	// The publisher dials on its first Publish, which returns once
	// RabbitMQ confirmed the message; Mandatory makes an unroutable one an error.
	pub, err := tr.NewPublisher(bus.PublisherConfig{Mandatory: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := pub.Publish("order.placed", message.NewMessage(watermill.NewUUID(), []byte(`{"order":"123"}`))); err != nil {
		log.Fatal(err)
	}

	select {
	case msg := <-msgs:
		fmt.Println(string(msg.Payload))
		msg.Ack()
	case <-time.After(10 * time.Second):
		log.Fatal("no message")
	}
}

// New checks the URL without dialling, so a malformed one fails at
// start-up and needs no broker to find.
func ExampleNew() {
	_, err := amqp.New("http://guest:guest@localhost:5672/")
	fmt.Println(err)
	tr, err := amqp.New("amqp://guest:guest@localhost:5672/")
	fmt.Println(err)
	_ = tr.Close()
	// Output:
	// amqp: bad URL: AMQP scheme must be either 'amqp://' or 'amqps://'
	// <nil>
}
