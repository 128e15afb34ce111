package inproc_test

import (
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
