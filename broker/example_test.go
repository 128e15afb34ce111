package broker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/troupehq/troupe/broker"
)

// A service's queue bound to the events it handles on a topic exchange,
// one event published, consumed and acknowledged.
func Example() {
	b := broker.New()
	defer b.Close()
	conn, _ := b.Connect(broker.DefaultVHost)
	ch, _ := conn.Channel()

	// One topic exchange for the bus, one queue per (service, handler).
	_ = ch.ExchangeDeclare("troupe.events", broker.Topic, broker.ExchangeOptions{Durable: true})
	_, _ = ch.QueueDeclare("payment.charge", broker.QueueOptions{Durable: true})
	_ = ch.QueueBind("payment.charge", "troupe.events", "order.placed.#", nil)

	_, _ = ch.Publish("troupe.events", "order.placed.v2", broker.Publishing{
		Properties: broker.Properties{DeliveryMode: broker.Persistent, MessageID: "m-1"},
		Body:       []byte(`{"order":"123"}`),
	}, broker.PublishOptions{})

	_ = ch.Qos(broker.QosOptions{PrefetchCount: 10})
	c, _ := ch.Consume("payment.charge", broker.ConsumeOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d, _ := c.Receive(ctx)
	fmt.Println(d.RoutingKey(), string(d.Body), d.Properties().MessageID)
	_ = ch.Ack(d.DeliveryTag, 0)
	// Output: order.placed.v2 {"order":"123"} m-1
}

// A delayed retry with broker primitives only: a message rejected by the
// work queue's consumer is parked in a retry queue whose TTL dead-letters
// it back to the work queue.
func Example_delayedRetry() {
	b := broker.New()
	defer b.Close()
	conn, _ := b.Connect(broker.DefaultVHost)
	ch, _ := conn.Channel()

	_, _ = ch.QueueDeclare("work", broker.QueueOptions{Args: broker.Table{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": "work.retry",
	}})
	_, _ = ch.QueueDeclare("work.retry", broker.QueueOptions{Args: broker.Table{
		"x-message-ttl":             50, // ms
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": "work",
	}})
	_, _ = ch.Publish("", "work", broker.Publishing{Body: []byte("job")}, broker.PublishOptions{})

	c, _ := ch.Consume("work", broker.ConsumeOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, _ := c.Receive(ctx)
	_ = ch.Reject(d.DeliveryTag, 0) // no requeue: dead-lettered to work.retry

	d, _ = c.Receive(ctx) // back after the TTL
	deaths := d.Properties().Headers["x-death"].([]any)
	fmt.Println(string(d.Body), len(deaths), d.Properties().Headers["x-first-death-reason"])
	_ = ch.Ack(d.DeliveryTag, 0)
	// Output: job 2 rejected
}

// Protocol errors carry AMQP reply codes, and close the channel as in AMQP.
func ExampleError() {
	b := broker.New()
	defer b.Close()
	conn, _ := b.Connect(broker.DefaultVHost)
	ch, _ := conn.Channel()

	_, err := ch.QueueDeclare("missing", broker.QueueOptions{Passive: true})
	fmt.Println(broker.Code(err), err)
	_, err = ch.QueueDeclare("other", broker.QueueOptions{})
	fmt.Println(err)
	// Output:
	// NOT_FOUND broker: 404 NOT_FOUND - no queue 'missing' in vhost '/'
	// broker: closed: broker: 404 NOT_FOUND - no queue 'missing' in vhost '/'
}
