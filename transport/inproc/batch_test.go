package inproc_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/inproc"
)

// batchFixture is a transport on a broker of its own, a publisher, and a
// subscriber of group "g" whose topic "t" is declared.
type batchFixture struct {
	b   *broker.Broker
	pub message.Publisher
	sub *inproc.Subscriber
}

func newBatchFixture(t *testing.T) *batchFixture {
	t.Helper()
	b := broker.New()
	tr, err := inproc.New(b, "", inproc.OwnBroker())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	pub, err := tr.NewPublisher(bus.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SubscribeInitialize("t"); err != nil {
		t.Fatal(err)
	}
	return &batchFixture{b: b, pub: pub, sub: sub}
}

// publish publishes messages with the given ids to topic "t".
func (f *batchFixture) publish(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := f.pub.Publish("t", message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
	}
}

// queued is how many messages wait in the queue of "t" (ready, not
// delivered).
func (f *batchFixture) queued(t *testing.T) int {
	t.Helper()
	return queued(t, f.b, bus.WorkQueue("g", "t"))
}

func ids(batch []*message.Message) []string {
	out := make([]string, len(batch))
	for i, m := range batch {
		out[i] = m.UUID
	}
	return out
}

func next(t *testing.T, batches <-chan []*message.Message) []*message.Message {
	t.Helper()
	select {
	case b, ok := <-batches:
		if !ok {
			t.Fatal("batches closed")
		}
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no batch in 10 s")
	}
	return nil
}

func ackAll(batch []*message.Message) {
	for _, m := range batch {
		m.Ack()
	}
}

// endAndDrain cancels the subscription and waits until it has ended.
func endAndDrain(cancel context.CancelFunc, batches <-chan []*message.Message) {
	cancel()
	for range batches {
	}
}

func TestSubscribeBatchesInOrderUpToMax(t *testing.T) {
	f := newBatchFixture(t)
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprint(i))
	}
	f.publish(t, want...)
	ctx, cancel := context.WithCancel(context.Background())
	batches, err := f.sub.SubscribeBatches(ctx, "t", bus.BatchConfig{Max: 4})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < len(want) {
		b := next(t, batches)
		if len(b) > 4 {
			t.Fatalf("a batch of %d, want at most 4", len(b))
		}
		got = append(got, ids(b)...)
		ackAll(b)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	endAndDrain(cancel, batches)
	if n := f.queued(t); n != 0 {
		t.Fatalf("%d messages back in the queue after every one was acked", n)
	}
}

func TestSubscribeBatchesLingerGathers(t *testing.T) {
	f := newBatchFixture(t)
	f.publish(t, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Max 2 and a long linger: the batch waits for the second message.
	batches, err := f.sub.SubscribeBatches(ctx, "t", bus.BatchConfig{Max: 2, Linger: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-batches:
		t.Fatalf("batch %v handed out before its linger or its second message", ids(b))
	case <-time.After(50 * time.Millisecond):
	}
	f.publish(t, "b")
	if got := ids(next(t, batches)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("batch %v, want [a b]", got)
	}
}

func TestSubscribeBatchesNackRequeuesOne(t *testing.T) {
	f := newBatchFixture(t)
	f.publish(t, "a", "b", "c")
	ctx, cancel := context.WithCancel(context.Background())
	// The first batch fills up; the second, of the one message requeued,
	// goes after its linger.
	batches, err := f.sub.SubscribeBatches(ctx, "t", bus.BatchConfig{Max: 3, Linger: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := next(t, batches)
	if got := ids(b); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("batch %v, want [a b c]", got)
	}
	if b[1].Metadata.Get(bus.RedeliveredKey) != "" {
		t.Fatal("a first delivery is marked redelivered")
	}
	b[0].Ack()
	b[1].Nack()
	b[2].Ack()
	again := next(t, batches)
	if got := ids(again); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after a nack of b: batch %v, want [b]", got)
	}
	if again[0].Metadata.Get(bus.RedeliveredKey) != "true" {
		t.Fatal("the requeued message is not marked redelivered")
	}
	ackAll(again)
	endAndDrain(cancel, batches)
	if n := f.queued(t); n != 0 {
		t.Fatalf("%d messages back in the queue after every one was acked", n)
	}
}

func TestSubscribeBatchesWaitsForSettlement(t *testing.T) {
	f := newBatchFixture(t)
	f.publish(t, "a", "b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batches, err := f.sub.SubscribeBatches(ctx, "t", bus.BatchConfig{Max: 1})
	if err != nil {
		t.Fatal(err)
	}
	first := next(t, batches)
	select {
	case b := <-batches:
		t.Fatalf("batch %v handed out before the one before it was settled", ids(b))
	case <-time.After(50 * time.Millisecond):
	}
	ackAll(first)
	if got := ids(next(t, batches)); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("batch %v, want [b]", got)
	}
}

// TestSubscribeBatchesEndKeepsAcks checks that when the subscription ends
// with a batch partly settled, the acked messages stay acked and the
// others go back to the queue.
func TestSubscribeBatchesEndKeepsAcks(t *testing.T) {
	f := newBatchFixture(t)
	f.publish(t, "a", "b", "c", "d", "e")
	ctx, cancel := context.WithCancel(context.Background())
	batches, err := f.sub.SubscribeBatches(ctx, "t", bus.BatchConfig{Max: 5, Linger: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	b := next(t, batches)
	if len(b) != 5 {
		t.Fatalf("batch %v, want 5 messages", ids(b))
	}
	b[0].Ack()
	b[2].Ack()
	b[3].Nack()
	// b[1] and b[4] are held: neither acked nor nacked.
	endAndDrain(cancel, batches)
	if n := f.queued(t); n != 3 {
		t.Fatalf("%d messages back in the queue, want 3 (b, d, e)", n)
	}
}

func TestSubscribeBatchesRefusesBadConfig(t *testing.T) {
	f := newBatchFixture(t)
	for _, cfg := range []bus.BatchConfig{{Max: 0}, {Max: 1, Linger: -time.Second}} {
		if _, err := f.sub.SubscribeBatches(context.Background(), "t", cfg); err == nil {
			t.Errorf("SubscribeBatches with %+v: no error", cfg)
		}
	}
}
