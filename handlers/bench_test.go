package handlers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// BenchmarkHandlerOverhead measures the cost per message of draining a
// queue of b.N OrderPlaced events through (a) a bare watermill handler, (b)
// a Troupe typed handler (decode, Retry, Recoverer, recoverability), (c)
// the same with the SQLite inbox as idempotency store, (d) a transactional
// handler claiming each message in a SQLite transaction. Same in-process
// transport for all; publishing is outside the timer.
func BenchmarkHandlerOverhead(b *testing.B) {
	b.Run("watermill-bare", func(b *testing.B) { benchBare(b) })
	b.Run("troupe-typed", func(b *testing.B) { benchTroupe(b, false, false) })
	b.Run("troupe-typed-sqlite-idempotency", func(b *testing.B) { benchTroupe(b, true, false) })
	b.Run("troupe-tx-sqlite", func(b *testing.B) { benchTroupe(b, true, true) })
}

var benchSeq atomic.Int64

func benchBus(b *testing.B) (transport.Transport, string) {
	name := fmt.Sprintf("bench%d", benchSeq.Add(1))
	tr, err := transport.Open("mem://" + name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	return tr, name
}

// fill publishes n events with the router's emitter format to exchange.
func fill(b *testing.B, em *handlers.Emitter, n int) {
	for i := range n {
		if err := em.Emit(context.Background(), OrderPlaced{OrderID: fmt.Sprint(i), Amount: i}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBare(b *testing.B) {
	tr, name := benchBus(b)
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{QueueName: func(string) string { return name + ".charge" }, Exchange: "bus." + name})
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.(message.SubscribeInitializer).SubscribeInitialize("order.placed"); err != nil {
		b.Fatal(err)
	}
	r, _ := handlers.NewRouter(handlers.Config{Service: name, Exchange: "bus." + name}, tr) // only for its emitter
	fill(b, r.Emitter(), b.N)
	wr, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	var done atomic.Int64
	all := make(chan struct{})
	wr.AddConsumerHandler("charge", "order.placed", sub, func(msg *message.Message) error {
		if done.Add(1) == int64(b.N) {
			close(all)
		}
		return nil
	})
	drain(b, func(ctx context.Context) error { return wr.Run(ctx) }, wr.Running(), all)
}

func benchTroupe(b *testing.B, sqlite, tx bool) {
	tr, name := benchBus(b)
	var opts []handlers.Option
	if sqlite {
		db, err := outbox.Open(context.Background(), "sqlite:"+b.TempDir()+"/bench.db")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		opts = append(opts, handlers.WithDB(db))
	}
	r, err := handlers.NewRouter(handlers.Config{Service: name, Exchange: "bus." + name}, tr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	var done atomic.Int64
	all := make(chan struct{})
	count := func() {
		if done.Add(1) == int64(b.N) {
			close(all)
		}
	}
	if tx {
		handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](func(ctx context.Context, _ *outbox.Tx, e OrderPlaced) error {
			count()
			return nil
		}))
	} else {
		handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			count()
			return nil
		}))
	}
	// Declare the queue before filling it.
	sub, _ := tr.NewSubscriber(bus.SubscriberConfig{QueueName: func(string) string { return name + ".charge" },
		Exchange: "bus." + name, RetryDelays: handlers.DefaultRetryPolicy().Delays})
	if err := sub.(message.SubscribeInitializer).SubscribeInitialize("order.placed"); err != nil {
		b.Fatal(err)
	}
	fill(b, r.Emitter(), b.N)
	drain(b, r.Run, r.Running(), all)
}

// drain starts run, times until all is closed, then stops run.
func drain(b *testing.B, run func(context.Context) error, running <-chan struct{}, all <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() { defer close(stopped); _ = run(ctx) }()
	<-running
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatal("not drained in 5 minutes")
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	cancel()
	<-stopped
}
