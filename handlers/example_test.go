package handlers_test

import (
	"context"
	"fmt"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport"
)

type ItemShipped struct {
	OrderID string `json:"order_id"`
}

func (ItemShipped) EventName() string { return "item.shipped" }

// A typed handler on the bundled broker: the notify service reacts to
// item.shipped events that plain code emits.
func Example() {
	tr, _ := transport.Open("mem://example")
	defer tr.Close()
	r, _ := handlers.NewRouter(handlers.Config{Service: "notify"}, tr)

	done := make(chan string)
	handlers.MustHandle(r, "email", handlers.HandlerFunc[ItemShipped](func(ctx context.Context, e ItemShipped) error {
		done <- e.OrderID
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	<-r.Running()

	_ = r.Emitter().Emit(ctx, ItemShipped{OrderID: "123"})
	select {
	case id := <-done:
		fmt.Println("emailed about order", id)
	case <-time.After(5 * time.Second):
		fmt.Println("no event")
	}
	// Output: emailed about order 123
}
