package handlers_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/envelope"
)

// TestWithClock: the router writes its clock's time, not the system's,
// into the events it emits.
func TestWithClock(t *testing.T) {
	at := time.Date(2031, 2, 3, 4, 5, 6, 7, time.UTC)
	tr, err := transport.Open("mem://handlers-clock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	r, err := handlers.NewRouter(handlers.Config{Service: "clock"}, tr, handlers.WithClock(func() time.Time { return at }))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	handlers.MustHandle(r, "watch", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
		select {
		case got <- handlers.Metadata(ctx).Get(envelope.ProducedAtKey):
		default:
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-r.Running()
	if err := r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "o1", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if want := at.Format(time.RFC3339Nano); s != want {
			t.Fatalf("produced at %s, want %s", s, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event never arrived")
	}
}
