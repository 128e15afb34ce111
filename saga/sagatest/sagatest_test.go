package sagatest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/saga/sagatest"
)

func TestClock(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := sagatest.NewClock(start)
	at := c.At(start.Add(time.Minute))
	select {
	case <-c.At(start):
		// the present is reached at once
	default:
		t.Fatal("At(now) is not closed")
	}
	c.Advance(59 * time.Second)
	select {
	case <-at:
		t.Fatal("released at 59 s of 60")
	default:
	}
	c.Advance(time.Second)
	select {
	case <-at:
	default:
		t.Fatal("not released at 60 s")
	}
	c.Advance(-time.Hour)
	if got, want := c.Now(), start.Add(time.Minute); !got.Equal(want) {
		t.Fatalf("Now %v, want %v (a negative Advance is ignored)", got, want)
	}
}

// startSupport runs the support choreography of the example on h.
func startSupport(t *testing.T, h *sagatest.Harness) *handlers.Router {
	t.Helper()
	h.StartTracker(&support)
	agents := h.Router("agents")
	handlers.MustHandleTx(agents, "assign", handlers.TxHandlerFunc[TicketOpened](
		func(ctx context.Context, tx *outbox.Tx, e TicketOpened) error {
			return handlers.Emit(ctx, TicketAssigned{ID: e.ID, Agent: "ann"})
		}))
	h.Run(agents)
	return h.Router("desk")
}

func open(t *testing.T, desk *handlers.Router, id string) {
	t.Helper()
	if err := desk.Emitter().Emit(context.Background(), TicketOpened{ID: id}, handlers.WithSagaID(id)); err != nil {
		t.Fatal(err)
	}
}

// TestDelayWaitsForTheVirtualClock: a delayed delivery stays held, however
// long in real time, until the clock has moved by its delay.
func TestDelayWaitsForTheVirtualClock(t *testing.T) {
	t.Parallel()
	h := sagatest.New(t)
	start := h.Clock.Now()
	desk := startSupport(t, h)
	h.Delay(sagatest.Match{Event: "ticket.opened", Queue: "agents.assign"}, time.Hour, 1)
	open(t, desk, "T-1")
	h.AwaitInjected(t, sagatest.Delayed, 1)
	h.AwaitState(t, "T-1", saga.Running) // the tracker got ticket.opened
	h.Clock.Advance(59 * time.Minute)
	// Another ticket is not delayed (the fault was for one delivery), but
	// waits behind the held one on the agents' queue (one delivery in
	// flight per consumer).
	open(t, desk, "T-2")
	h.AwaitState(t, "T-2", saga.Running)
	h.Clock.Advance(time.Minute)
	h.AwaitState(t, "T-1", saga.Completed)
	h.AwaitState(t, "T-2", saga.Completed)
	// The agent ran, and emitted ticket.assigned, an hour into the
	// virtual clock.
	for _, e := range h.History(t, "T-1") {
		if e.Event == "ticket.assigned" && e.At.Before(start.Add(time.Hour)) {
			t.Errorf("ticket.assigned produced at %v, before the delay of an hour from %v ended", e.At, start)
		}
	}
}

// TestDuplicateDropAndCrash: each fault hits exactly the deliveries it
// names, the given number of times, and the choreography completes.
func TestDuplicateDropAndCrash(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		inject func(h *sagatest.Harness, m sagatest.Match)
		fault  sagatest.Fault
		// wantDeliveries reach the agents' queue for the ticket.
		wantDeliveries int
	}{
		{"duplicate", func(h *sagatest.Harness, m sagatest.Match) { h.Duplicate(m, 1) }, sagatest.Duplicated, 1},
		{"drop twice", func(h *sagatest.Harness, m sagatest.Match) { h.Drop(m, 2) }, sagatest.Dropped, 3},
		{"crash after commit", func(h *sagatest.Harness, m sagatest.Match) { h.CrashAfterCommit(m, 1) }, sagatest.Crashed, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := sagatest.New(t)
			desk := startSupport(t, h)
			tt.inject(h, sagatest.Match{Queue: "agents.assign", SagaID: "T-2"})
			open(t, desk, "T-1")
			open(t, desk, "T-2")
			h.AwaitState(t, "T-1", saga.Completed)
			h.AwaitState(t, "T-2", saga.Completed)
			for _, in := range h.Injected() {
				if in.Fault != tt.fault || in.Delivery.SagaID != "T-2" || in.Delivery.Queue != "agents.assign" {
					t.Errorf("injected %v", in)
				}
			}
			if got := len(h.AwaitDeliveries(t, sagatest.Match{Queue: "agents.assign", SagaID: "T-2"}, tt.wantDeliveries)); got != tt.wantDeliveries {
				t.Errorf("%d deliveries of T-2 to the agents, want %d", got, tt.wantDeliveries)
			}
			if got := len(h.Deliveries(sagatest.Match{Queue: "agents.assign", SagaID: "T-1"})); got != 1 {
				t.Errorf("%d deliveries of T-1 to the agents, want 1", got)
			}
		})
	}
}

// fatalT records the first Fatalf and ends the goroutine, as testing does.
type fatalT struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestBadFaultsFailTheTest(t *testing.T) {
	m := sagatest.Match{Event: "ticket.opened"}
	tests := []struct {
		name   string
		give   func(h *sagatest.Harness)
		wantIn string
	}{
		{"no times", func(h *sagatest.Harness) { h.Drop(m, 0) }, "want at least once"},
		{"no delay", func(h *sagatest.Harness) { h.Delay(m, 0, 1) }, "want a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := &fatalT{TB: t}
			h := sagatest.New(ft)
			done := make(chan struct{})
			go func() {
				defer close(done)
				tt.give(h)
			}()
			<-done
			if !strings.Contains(ft.msg, tt.wantIn) {
				t.Fatalf("Fatalf %q, want %q", ft.msg, tt.wantIn)
			}
		})
	}
}

// TestReorderAtTheTracker: the tracker records ticket.assigned before
// ticket.opened, and still derives a completed ticket.
func TestReorderAtTheTracker(t *testing.T) {
	t.Parallel()
	h := sagatest.New(t)
	desk := startSupport(t, h)
	queue := saga.TrackerService + "." + support.Name
	h.Reorder(sagatest.Match{Event: "ticket.opened", Queue: queue}, sagatest.Match{Event: "ticket.assigned", Queue: queue})
	open(t, desk, "T-1")
	h.AwaitInjected(t, sagatest.Reordered, 1)
	history := h.AwaitEvents(t, "T-1", "ticket.opened", "ticket.assigned")
	// The virtual clock stands still: the history is in the order of
	// recording.
	if got := sagatest.Events(history); got[0] != "ticket.assigned" {
		t.Errorf("recorded %q, want ticket.assigned first:\n%s", got, sagatest.FormatHistory(history))
	}
	h.AwaitState(t, "T-1", saga.Completed)
}
