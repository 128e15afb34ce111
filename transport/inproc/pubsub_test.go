package inproc_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/inproc"
)

// shared is the broker every Pub/Sub of the suite connects to, as services
// connect to one broker.
var shared = broker.New()

func newPubSub(t *testing.T, group string) (message.Publisher, message.Subscriber) {
	tr, err := inproc.New(shared, "")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tr.NewPublisher(bus.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: group})
	if err != nil {
		t.Fatal(err)
	}
	return pub, sub
}

func TestWatermillUniversalSuite(t *testing.T) {
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:                      true,
			ExactlyOnceDelivery:                 false,
			GuaranteedOrder:                     true,
			GuaranteedOrderWithSingleSubscriber: true,
			Persistent:                          true,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, "test") },
		newPubSub,
	)
}

// TestAckedMessagesStayAckedAfterClose checks that acks the subscription
// holds back for a batch reach the broker before its channel closes: the
// close requeues only what was not acked.
func TestAckedMessagesStayAckedAfterClose(t *testing.T) {
	tests := []struct {
		name     string
		prefetch int
		publish  int
		ack      int // the first ack messages are acked, the next one is held
	}{
		{"all acked, batch never full", 256, 10, 10},
		{"all acked, several batches", 8, 50, 50},
		{"one held when the subscription ends", 256, 10, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := broker.New()
			tr, err := inproc.New(b, "", inproc.OwnBroker())
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			pub, err := tr.NewPublisher(bus.PublisherConfig{})
			if err != nil {
				t.Fatal(err)
			}
			sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "g", Prefetch: tt.prefetch})
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.SubscribeInitialize("t"); err != nil {
				t.Fatal(err)
			}
			for i := range tt.publish {
				if err := pub.Publish("t", message.NewMessage(fmt.Sprint(i), nil)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			msgs, err := sub.Subscribe(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.ack {
				m := <-msgs
				if m.UUID != fmt.Sprint(i) {
					t.Fatalf("message %d is %s", i, m.UUID)
				}
				m.Ack()
			}
			if tt.ack < tt.publish {
				<-msgs // held, neither acked nor nacked
			}
			cancel()
			for range msgs { // closed once the subscription has ended
			}
			if n, want := queued(t, b, bus.WorkQueue("g", "t")), tt.publish-tt.ack; n != want {
				t.Fatalf("%d messages back in the queue, want %d", n, want)
			}
		})
	}
}

// queued is how many messages wait in queue on b (ready, not delivered).
func queued(t *testing.T, b *broker.Broker, queue string) int {
	t.Helper()
	ch, err := mustConn(t, b).Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	info, err := ch.QueueDeclare(queue, broker.QueueOptions{Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	return info.Messages
}

func mustConn(t *testing.T, b *broker.Broker) *broker.Conn {
	t.Helper()
	c, err := b.Connect(broker.DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
