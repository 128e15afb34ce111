package inproc_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/inproc"
)

// BenchmarkPublishConsume is publish -> consume -> ack of 1 KiB messages
// through the watermill interface, 4 publishing goroutines, one
// subscription. The cross-transport comparison is internal/cmd/transportbench.
func BenchmarkPublishConsume(b *testing.B) {
	tr, err := inproc.New(broker.New(), "", inproc.OwnBroker())
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	pub, _ := tr.NewPublisher(bus.PublisherConfig{})
	sub, _ := tr.NewSubscriber(bus.SubscriberConfig{Group: "bench", Prefetch: 256})
	ch, err := sub.Subscribe(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan struct{})
	go func() {
		for i := 0; i < b.N; i++ {
			(<-ch).Ack()
		}
		close(done)
	}()
	var wg sync.WaitGroup
	per := b.N / 4
	for w := range 4 {
		n := per
		if w == 3 {
			n = b.N - 3*per
		}
		wg.Go(func() {
			for range n {
				if err := pub.Publish("bench", message.NewMessage(watermill.NewUUID(), body)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	<-done
}

// BenchmarkDrain is the consuming side alone: b.N messages wait in the
// queue, and the timed part is one subscription receiving and acking them
// all, one at a time as watermill requires.
func BenchmarkDrain(b *testing.B) {
	tr, err := inproc.New(broker.New(), "", inproc.OwnBroker())
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	pub, _ := tr.NewPublisher(bus.PublisherConfig{})
	sub, _ := tr.NewSubscriber(bus.SubscriberConfig{Group: "bench", Prefetch: 256})
	if err := sub.SubscribeInitialize("bench"); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 1024)
	for range b.N {
		if err := pub.Publish("bench", message.NewMessage(watermill.NewUUID(), body)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	ch, err := sub.Subscribe(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		(<-ch).Ack()
	}
}
