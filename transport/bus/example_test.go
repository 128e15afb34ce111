package bus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// A topology declared on the bundled broker: the payment service's queue
// takes order.placed, so a mandatory publish of it is routed, and one of
// an event no queue is bound to fails with ErrUnroutable.
func Example() {
	tr, _ := transport.Open("mem://example-bus")
	defer tr.Close()
	top := bus.Topology{Queues: []bus.Queue{{
		Name:        bus.WorkQueue("payment", "charge"),
		Events:      []string{"order.placed"},
		RetryDelays: []time.Duration{time.Second},
	}}}
	if err := tr.Declare(context.Background(), top); err != nil {
		fmt.Println(err)
		return
	}

	pub, _ := tr.NewPublisher(bus.PublisherConfig{Mandatory: true})
	for _, event := range []string{"order.placed", "order.shipped"} {
		err := pub.Publish(event, message.NewMessage("m-"+event, nil))
		fmt.Println(event, "unroutable:", errors.Is(err, bus.ErrUnroutable))
	}
	// Output:
	// order.placed unroutable: false
	// order.shipped unroutable: true
}

// printer is a Declarer that prints what a transport would declare.
type printer struct{}

func (printer) DeclareExchange(x bus.ExchangeDecl) error {
	fmt.Println("exchange", x.Name, x.Kind)
	return nil
}

func (printer) DeclareQueue(q bus.QueueDecl) error {
	fmt.Println("queue", q.Name, q.Args)
	return nil
}

func (printer) Bind(b bus.BindingDecl) error {
	fmt.Println("bind", b.Queue, "to", b.Exchange, "on", b.Key)
	return nil
}

// Declare turns a work queue into the declarations both transports make:
// the bus exchange, the queue with its dead-letter and retry queues, and
// a binding per event.
func ExampleTopology_Declare() {
	top := bus.Topology{Queues: []bus.Queue{{
		Name:        bus.WorkQueue("payment", "charge"),
		Events:      []string{"order.placed"},
		RetryDelays: []time.Duration{10 * time.Second},
	}}}
	_ = top.Declare(printer{})
	// Output:
	// exchange troupe.events topic
	// queue payment.charge map[x-dead-letter-exchange: x-dead-letter-routing-key:payment.charge.dlq]
	// queue payment.charge.dlq map[]
	// queue payment.charge.retry.10s map[x-dead-letter-exchange: x-dead-letter-routing-key:payment.charge x-message-ttl:10000]
	// bind payment.charge to troupe.events on order.placed
}

// Validate reports every problem of a topology at once; Declare refuses
// an invalid one before declaring anything.
func ExampleTopology_Validate() {
	top := bus.Topology{Queues: []bus.Queue{
		{Name: "amq.orders", Events: []string{"order.placed"}},
		{Name: "payment.charge"},
		{Name: "payment.charge", Events: []string{"order.placed"}, RetryDelays: []time.Duration{time.Microsecond}},
	}}
	fmt.Println(top.Validate())
	// Output:
	// topology: queue "amq.orders": the amq. prefix is reserved
	// topology: queue "payment.charge" is bound to no event
	// topology: queue "payment.charge" declared twice
	// topology: queue "payment.charge": retry delay 1µs is not a whole number of milliseconds >= 1ms
}

// A subscriber's group names its queues; QueueName overrides the naming,
// e.g. to consume a dead-letter queue. A subscriber needs one of them.
func ExampleSubscriberConfig() {
	cfg, _ := bus.SubscriberConfig{Group: "payment", RetryDelays: []time.Duration{500 * time.Millisecond}}.WithDefaults()
	fmt.Println(cfg.Exchange, cfg.Prefetch, cfg.Queue("order.placed"))
	q := cfg.Topology("order.placed").Queues[0]
	fmt.Println(bus.RetryQueue(q.Name, q.RetryDelays[0]), bus.DeadLetterQueue(q.Name))

	dlq := bus.SubscriberConfig{QueueName: func(string) string { return "payment.order.placed.dlq" }, Passive: true}
	fmt.Println(dlq.Queue("anything"), len(dlq.Topology("anything").Queues))

	_, err := bus.SubscriberConfig{}.WithDefaults()
	fmt.Println(err)
	// Output:
	// troupe.events 64 payment.order.placed
	// payment.order.placed.retry.500ms payment.order.placed.dlq
	// payment.order.placed.dlq 0
	// bus: subscriber needs a Group or a QueueName function
}

// A publisher sends to the bus exchange with the topic as routing key, or
// with ToQueue straight to the queue the topic names.
func ExamplePublisherConfig_ExchangeName() {
	fmt.Printf("%q\n", bus.PublisherConfig{}.ExchangeName())
	fmt.Printf("%q\n", bus.PublisherConfig{Exchange: "shop.events"}.ExchangeName())
	fmt.Printf("%q\n", bus.PublisherConfig{ToQueue: true}.ExchangeName())
	// Output:
	// "troupe.events"
	// "shop.events"
	// ""
}
