package shop

import (
	"context"
	"testing"
	"time"
)

// TestRouterStoppingOnItsOwnFailsTheStack: when a router stops without
// Close (here its transport is closed under it), Failed is closed and
// Health says why.
func TestRouterStoppingOnItsOwnFailsTheStack(t *testing.T) {
	s, err := Start(context.Background(), Config{BusURL: "mem://shop-failed-test", DataDir: t.TempDir(), Services: []string{NotifySvc}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Health(context.Background()); err != nil {
		t.Fatalf("healthy stack: %v", err)
	}
	if err := s.trs[0].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Failed():
	case <-time.After(30 * time.Second):
		t.Fatal("the router kept running on a closed transport, or Failed was not closed")
	}
	if err := s.Health(context.Background()); err == nil {
		t.Fatal("Health is nil after a router stopped")
	}
}
