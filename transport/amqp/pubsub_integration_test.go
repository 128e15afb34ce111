//go:build integration

package amqp_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/amqp"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/transporttest"
)

func newPubSub(t *testing.T, group string) (message.Publisher, message.Subscriber) {
	tr, err := amqp.New(testutil.AMQPURL(t))
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

// TestWatermillUniversalSuite runs watermill's suite against RabbitMQ.
// Its TestReconnect is skipped (no RestartServiceCommand): that test checks
// the IDs its publishers recorded before those publishers finish — a
// publish whose confirm was lost in the restart is still being retried
// while its first copy has already arrived, so with a publisher that is
// fast enough it reports those messages as "extra" every time. Troupe's
// conformance suite has a reconnect case that waits for its publishers.
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

func TestConformance(t *testing.T) {
	url := testutil.AMQPURL(t)
	transporttest.Run(t, transporttest.Features{Restart: restartRabbitMQ}, func(t *testing.T) transport.Transport {
		tr, err := transport.Open(url)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	})
}

// restartRabbitMQ stops and starts the RabbitMQ application of the test
// servers (scripts/rabbitmq.sh), which drops every connection.
func restartRabbitMQ(t *testing.T) {
	if os.Getenv("TROUPE_SERVERS_DIR") == "" {
		t.Fatal("TROUPE_SERVERS_DIR is not set: run under scripts/with-servers.sh (make test)")
	}
	script, err := filepath.Abs("../../scripts/rabbitmq.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"stop_app", "start_app"} {
		if out, err := exec.Command("bash", script, "ctl", step).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl %s: %v\n%s", step, err, out)
		}
	}
}
