package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/envelope"
)

type LabelRequested struct {
	OrderID string `json:"order_id"`
}

func (LabelRequested) EventName() string { return "label.requested" }

// A handler parks a message it cannot handle in its dead-letter queue,
// "<service>.<handler>.dlq". Once the cause is fixed, List shows what is
// there (leaving it in place) and Replay sends the letters a Filter selects
// back to their work queue, where the handler runs them afresh. Dial reaches
// RabbitMQ with an amqp:// URL, or the bundled broker with mem:// as here.
func Example() {
	const busURL, dead = "mem://dlq-example", "shipping.label.dlq"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, _ := transport.Open(busURL)
	defer tr.Close()
	outcomes := make(chan handlers.Outcome, 2)
	r, _ := handlers.NewRouter(handlers.Config{Service: "shipping"}, tr,
		handlers.WithObserver(func(_ context.Context, o handlers.Observation) { outcomes <- o.Outcome }))
	var printerFixed atomic.Bool
	replays := make(chan string, 1)
	handlers.MustHandle(r, "label", handlers.HandlerFunc[LabelRequested](func(ctx context.Context, e LabelRequested) error {
		if !printerFixed.Load() {
			return handlers.Permanent(errors.New("printer offline"))
		}
		replays <- handlers.Metadata(ctx).Get(envelope.ReplaysKey)
		return nil
	}))
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(runCtx) }()
	<-r.Running()

	_ = r.Emitter().Emit(ctx, LabelRequested{OrderID: "o-7"}, handlers.WithSagaID("o-7"))
	select {
	case o := <-outcomes:
		fmt.Println("parked:", o == handlers.Parked)
	case <-ctx.Done():
		fmt.Println("not parked")
	}

	c, err := dlq.Dial(busURL) // one connection per operation: List closes it
	if err == nil {
		var letters []dlq.Letter
		letters, err = dlq.List(ctx, c, dead)
		for _, l := range letters {
			fmt.Printf("%s saga=%s attempts=%s kind=%s error=%q\n", l.Event(), l.Saga(), l.Attempts(), l.ErrorKind(), l.Error())
		}
	}
	fmt.Println("listed:", err)

	printerFixed.Store(true)
	if c, err = dlq.Dial(busURL); err == nil {
		var done []dlq.Letter
		done, err = dlq.Replay(ctx, c, dead, dlq.Filter{Saga: "o-7"}, "alice", time.Now())
		for _, l := range done {
			fmt.Println("replayed to", l.WorkQueue(dead))
		}
	}
	fmt.Println("replayed:", err)
	select {
	case n := <-replays:
		fmt.Println("label printed, replays:", n)
	case <-ctx.Done():
		fmt.Println("not replayed")
	}
	stop()
	fmt.Println("router stopped:", <-stopped)
	// Output:
	// parked: true
	// label.requested saga=o-7 attempts=1 kind=permanent error="permanent: printer offline"
	// listed: <nil>
	// replayed to shipping.label
	// replayed: <nil>
	// label printed, replays: 1
	// router stopped: <nil>
}

// GroupBy sorts a listing into groups, largest first: by error, to see what
// broke, or by saga, to see whose work is stuck. Letter's methods (Error,
// Saga, Event...) make ready keys.
func ExampleGroupBy() {
	letter := func(id, saga, err string) dlq.Letter {
		return dlq.Letter{ID: id, Metadata: map[string]string{envelope.SagaIDKey: saga, envelope.ErrorKey: err}}
	}
	letters := []dlq.Letter{
		letter("m1", "o-1", "card declined"),
		letter("m2", "o-2", "gateway timeout"),
		letter("m3", "o-3", "gateway timeout"),
	}
	for _, g := range dlq.GroupBy(letters, dlq.Letter.Error) {
		fmt.Println(len(g.Letters), g.Key)
	}
	// Output:
	// 2 gateway timeout
	// 1 card declined
}

// A replay must say what it moves: a message id, an error text, a saga, or
// all; Replay refuses an empty Filter before it reads anything.
func ExampleFilter_Validate() {
	fmt.Println(dlq.Filter{}.Validate())
	fmt.Println(dlq.Filter{All: true, Saga: "o-7"}.Validate())
	fmt.Println(dlq.Filter{Error: "gateway timeout"}.Validate())
	// Output:
	// dlq: say which letters to replay: an id, an error, a saga, or all
	// dlq: all cannot be combined with an id, an error or a saga
	// <nil>
}
