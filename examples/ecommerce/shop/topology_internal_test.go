package shop

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport/bus"
)

// TestTopologyIsTheRouters: the topology the services declare ahead
// (Topology) is the one their routers and the tracker declare when they
// run, with the stack's retry policy and queue prefix.
func TestTopologyIsTheRouters(t *testing.T) {
	cfg := Config{BusURL: "mem://shop-topology-test", DataDir: t.TempDir(), QueuePrefix: "t1-", Exchange: "topology.test",
		Retry: &handlers.RetryPolicy{Immediate: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, Multiplier: 2,
			MaxElapsed: time.Second, Delays: []time.Duration{time.Second, 5 * time.Second}}}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	running := s.Tracker.Topology()
	for _, r := range s.routers {
		rt := r.Topology()
		if rt.Exchange != running.Exchange {
			t.Errorf("router %s on exchange %q, tracker on %q", r.Service(), rt.Exchange, running.Exchange)
		}
		running.Queues = append(running.Queues, rt.Queues...)
	}
	if got, want := describe(Topology(cfg)), describe(running); got != want {
		t.Errorf("Topology:\n%s\nthe running stack's:\n%s", got, want)
	}
}

// describe prints a topology in a stable order.
func describe(t bus.Topology) string {
	var lines []string
	for _, q := range t.Queues {
		events := slices.Sorted(slices.Values(q.Events))
		lines = append(lines, fmt.Sprintf("%s: %v retry %v", q.Name, events, q.RetryDelays))
	}
	slices.Sort(lines)
	return "exchange " + t.Exchange + "\n" + strings.Join(lines, "\n")
}
