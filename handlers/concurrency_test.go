package handlers_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
)

// TestConcurrency: with Concurrency 4, four deliveries of one handler run
// at once; with 1, one at a time.
func TestConcurrency(t *testing.T) {
	tests := []struct {
		give, want int
	}{
		{give: 1, want: 1},
		{give: 4, want: 4},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			f := newFixture(t, "mem://handlers-concurrency")
			r, err := handlers.NewRouter(handlers.Config{Service: f.service, Exchange: f.exchange(), Retry: &f.policy, Concurrency: tt.give}, f.tr)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			running, most, done := 0, 0, 0
			handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
				mu.Lock()
				running++
				most = max(most, running)
				mu.Unlock()
				// Hold the run until as many as can run do, or a while.
				deadline := time.Now().Add(200 * time.Millisecond)
				for time.Now().Before(deadline) {
					mu.Lock()
					n := running
					mu.Unlock()
					if n >= tt.give {
						break
					}
					time.Sleep(time.Millisecond)
				}
				mu.Lock()
				running--
				done++
				mu.Unlock()
				return nil
			}))
			f.run(r)
			for i := range 8 {
				must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: string(rune('a' + i))}))
			}
			await(t, "8 handled", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return done == 8
			})
			if most != tt.want {
				t.Fatalf("at most %d runs at once, want %d", most, tt.want)
			}
		})
	}
	if _, err := handlers.NewRouter(handlers.Config{Service: "svc", Concurrency: -1}, nil); err == nil {
		t.Fatal("Concurrency -1 accepted")
	}
}
