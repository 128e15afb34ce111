package inproc_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/inproc"
)

// A transport on a broker of its own, as a test would make one: the
// subscriber's queue is declared first, so that an event published before
// anyone consumes is kept, then consumed and acknowledged. OwnBroker makes
// Close close the broker too.
func Example() {
	tr, err := inproc.New(broker.New(), "", inproc.OwnBroker())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()

	sub, _ := tr.NewSubscriber(bus.SubscriberConfig{Group: "payment"})
	_ = sub.SubscribeInitialize("order.placed") // queue payment.order.placed

	pub, _ := tr.NewPublisher(bus.PublisherConfig{Mandatory: true})
	if err := pub.Publish("order.placed", message.NewMessage("m-1", []byte(`{"order":"123"}`))); err != nil {
		fmt.Println(err)
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, _ := sub.Subscribe(ctx, "order.placed")
	select {
	case msg := <-msgs:
		fmt.Println(msg.UUID, string(msg.Payload))
		msg.Ack()
	case <-time.After(5 * time.Second):
		fmt.Println("no message")
	}
	// Output: m-1 {"order":"123"}
}

// A nacked message is requeued and delivered again, marked as redelivered.
func ExampleSubscriber_Subscribe_nack() {
	tr, _ := inproc.New(broker.New(), "", inproc.OwnBroker())
	defer tr.Close()
	sub, _ := tr.NewSubscriber(bus.SubscriberConfig{Group: "payment"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, _ := sub.Subscribe(ctx, "order.placed")
	pub, _ := tr.NewPublisher(bus.PublisherConfig{})
	_ = pub.Publish("order.placed", message.NewMessage("m-1", []byte("charge me")))

	for range 2 {
		select {
		case msg := <-msgs:
			redelivered := msg.Metadata.Get(bus.RedeliveredKey) == "true"
			fmt.Println(string(msg.Payload), "redelivered:", redelivered)
			if redelivered {
				msg.Ack()
			} else {
				msg.Nack()
			}
		case <-time.After(5 * time.Second):
			fmt.Println("no message")
		}
	}
	// Output:
	// charge me redelivered: false
	// charge me redelivered: true
}

// New connects to an existing vhost of the broker; a missing one is an
// error.
func ExampleNew() {
	b := broker.New()
	defer b.Close()
	_, err := inproc.New(b, "shop")
	fmt.Println(err)
	_ = b.AddVHost("shop")
	tr, err := inproc.New(b, "shop")
	fmt.Println(err, tr.Broker() == b)
	_ = tr.Close()
	// Output:
	// inproc: connect to vhost "shop": broker: 530 NOT_ALLOWED - vhost 'shop' not found
	// <nil> true
}
