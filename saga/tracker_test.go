package saga_test

import (
	"net/url"
	"testing"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
)

func TestTrackerSQLite(t *testing.T) {
	runTrackerSuite(t, "", func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/tracker.db" })
}

// TestTrackerOneConsumerInProcess: on the bundled broker in process the
// tracker consumes its queue through one batch subscription, not one
// consumer per message it holds (TrackerConfig.Consumers, for AMQP).
func TestTrackerOneConsumerInProcess(t *testing.T) {
	r := newRig(t, "sqlite:"+t.TempDir()+"/tracker.db", "")
	u, err := url.Parse(r.busURL)
	if err != nil {
		t.Fatal(err)
	}
	b, vhost, err := transport.MemAddress(u)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := b.Connect(vhost)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	info, err := ch.QueueDeclare(r.tk.Queue(), broker.QueueOptions{Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.Consumers != 1 {
		t.Fatalf("the tracker's queue has %d consumers, want 1", info.Consumers)
	}
	// Every event reaches the queue although the one subscription named
	// only the first: the tracker declared the others' bindings.
	r.send("o-1", "order.placed", "payment.captured", "inventory.reserved", "order.confirmed")
	r.await("o-1", saga.Completed, "confirm", 4)
}
