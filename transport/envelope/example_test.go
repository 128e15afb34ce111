package envelope_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// A producer sets Troupe's metadata on a message; Headers is what goes on
// the wire, and Message rebuilds the message a consumer reads.
func Example() {
	sent := message.NewMessage("m-1", []byte(`{"order":"123"}`))
	sent.Metadata.Set(envelope.EventKey, "order.placed")
	sent.Metadata.Set(envelope.SagaIDKey, "order-123")
	sent.Metadata.Set(envelope.ProducerKey, "shop")
	sent.Metadata.Set(envelope.ProducedAtKey, time.Now().UTC().Format(time.RFC3339Nano))

	headers := envelope.Headers(sent)
	fmt.Println(headers[envelope.UUIDHeader], headers[envelope.EventKey])

	got := envelope.Message(headers, "m-1", sent.Payload)
	fmt.Println(got.UUID, got.Metadata.Get(envelope.SagaIDKey), got.Metadata.Get(envelope.ProducerKey))
	fmt.Println("produced-at kept:", got.Metadata.Get(envelope.ProducedAtKey) == sent.Metadata.Get(envelope.ProducedAtKey))
	// Output:
	// m-1 order.placed
	// m-1 order-123 shop
	// produced-at kept: true
}

// Headers a broker sets are not all strings; they become text metadata
// rather than an error. With no UUID header, the message-id property
// names the message.
func ExampleMessage() {
	headers := map[string]any{
		"x-first-death-reason": "rejected",
		"x-delivery-count":     int64(2),
		"x-opaque":             []byte("raw"),
		"x-routing":            map[string]any{"keys": []any{"order.placed", "order.*"}},
	}
	msg := envelope.Message(headers, "from-message-id", nil)
	fmt.Println(msg.UUID)
	for _, k := range []string{"x-first-death-reason", "x-delivery-count", "x-opaque", "x-routing"} {
		fmt.Println(k, msg.Metadata.Get(k))
	}
	// Output:
	// from-message-id
	// x-first-death-reason rejected
	// x-delivery-count 2
	// x-opaque raw
	// x-routing {"keys":["order.placed","order.*"]}
}

// Deaths reads the broker's x-death header. Here a message parked in a
// retry queue comes back to its work queue when the retry queue's TTL
// expires, and the consumer sees where it waited and how many times.
func ExampleDeaths() {
	tr, _ := transport.Open("mem://example-envelope")
	defer tr.Close()
	const delay = 10 * time.Millisecond
	cfg := bus.SubscriberConfig{Group: "payment", RetryDelays: []time.Duration{delay}}
	sub, _ := tr.NewSubscriber(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, _ := sub.Subscribe(ctx, "order.placed")

	retry, _ := tr.NewPublisher(bus.PublisherConfig{ToQueue: true})
	_ = retry.Publish(bus.RetryQueue(cfg.Queue("order.placed"), delay), message.NewMessage("m-1", nil))

	select {
	case msg := <-msgs:
		deaths, err := envelope.Deaths(msg)
		for _, d := range deaths {
			fmt.Println(d.Queue, d.Reason, d.Count)
		}
		fmt.Println(err)
		msg.Ack()
	case <-time.After(5 * time.Second):
		fmt.Println("no message")
	}
	// Output:
	// payment.order.placed.retry.10ms expired 1
	// <nil>
}
