// Package transporttest is the conformance suite of Troupe's transports:
// the topology behaviour that services rely on, run unchanged against the
// in-process transport and against RabbitMQ. It complements watermill's
// universal Pub/Sub suite, which checks the watermill contract.
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Features{}, func(t *testing.T) transport.Transport { ... })
//	}
package transporttest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Features describe what a transport can be tested for.
type Features struct {
	// Restart drops every connection to the broker and brings it back
	// (e.g. rabbitmqctl stop_app; start_app). Nil skips the reconnect case,
	// with a reason.
	Restart func(t *testing.T)
}

// NewTransport connects a fresh Transport to the broker under test. Every
// call must reach the same broker.
type NewTransport func(t *testing.T) transport.Transport

// Run runs every case in parallel, each on its own exchange and queues.
func Run(t *testing.T, f Features, newT NewTransport) {
	cases := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"RoutingByEventName", testRoutingByEventName},
		{"TopicPatterns", testTopicPatterns},
		{"CompetingConsumers", testCompetingConsumers},
		{"GroupsEachGetAll", testGroupsEachGetAll},
		{"RedeliveryAfterNack", testRedeliveryAfterNack},
		{"DelayedRetryViaTTLQueue", testDelayedRetry},
		{"DeadLetterWithReasonHeaders", testDeadLetter},
		{"MandatoryUnroutable", testMandatory},
		{"MetadataRoundTrip", testMetadata},
		{"Reconnect", func(t *testing.T, e *env) { testReconnect(t, e, f) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name != "Reconnect" {
				t.Parallel()
			}
			tr := newT(t)
			t.Cleanup(func() { _ = tr.Close() })
			c.fn(t, &env{t: t, tr: tr, exchange: "tt." + watermill.NewShortUUID()})
		})
	}
}

// env is one case's transport and private bus exchange.
type env struct {
	t        *testing.T
	tr       transport.Transport
	exchange string
}

func (e *env) publisher(cfg bus.PublisherConfig) message.Publisher {
	e.t.Helper()
	if !cfg.ToQueue {
		cfg.Exchange = e.exchange
	}
	p, err := e.tr.NewPublisher(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) subscribe(cfg bus.SubscriberConfig, topic string) <-chan *message.Message {
	e.t.Helper()
	cfg.Exchange = e.exchange
	s, err := e.tr.NewSubscriber(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	if err != nil {
		e.t.Fatal(err)
	}
	return ch
}

func (e *env) group() string { return "g" + watermill.NewShortUUID() }

func (e *env) publish(p message.Publisher, topic string, msgs ...*message.Message) {
	e.t.Helper()
	if err := p.Publish(topic, msgs...); err != nil {
		e.t.Fatalf("publish to %s: %v", topic, err)
	}
}

func newMsg(body string) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(body))
}

const wait = 15 * time.Second

// receive takes one message or fails after wait.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(wait):
		t.Fatal("no message within", wait)
	}
	return nil
}

// quiet checks that nothing arrives for a moment.
func quiet(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message %q", m.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

func testRoutingByEventName(t *testing.T, e *env) {
	g := e.group()
	placed := e.subscribe(bus.SubscriberConfig{Group: g}, "order.placed")
	paid := e.subscribe(bus.SubscriberConfig{Group: g}, "order.paid")
	p := e.publisher(bus.PublisherConfig{})
	e.publish(p, "order.placed", newMsg("p1"))
	e.publish(p, "order.other", newMsg("o1"))
	e.publish(p, "order.paid", newMsg("x1"))
	for _, c := range []struct {
		ch   <-chan *message.Message
		want string
	}{{placed, "p1"}, {paid, "x1"}} {
		m := receive(t, c.ch)
		if string(m.Payload) != c.want {
			t.Fatalf("got %q, want %q", m.Payload, c.want)
		}
		m.Ack()
	}
	quiet(t, placed)
	quiet(t, paid)
}

func testTopicPatterns(t *testing.T, e *env) {
	all := e.subscribe(bus.SubscriberConfig{Group: e.group(), QueueName: func(string) string { return "tt.all." + e.exchange }}, "order.#")
	p := e.publisher(bus.PublisherConfig{})
	for _, k := range []string{"order.placed", "order.placed.v2", "payment.captured"} {
		e.publish(p, k, newMsg(k))
	}
	for _, want := range []string{"order.placed", "order.placed.v2"} {
		m := receive(t, all)
		if string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
		m.Ack()
	}
	quiet(t, all)
}

func testCompetingConsumers(t *testing.T, e *env) {
	g := e.group()
	a := e.subscribe(bus.SubscriberConfig{Group: g, Prefetch: 1}, "job")
	b := e.subscribe(bus.SubscriberConfig{Group: g, Prefetch: 1}, "job")
	p := e.publisher(bus.PublisherConfig{})
	const n = 40
	for i := range n {
		e.publish(p, "job", newMsg(fmt.Sprint(i)))
	}
	seen := map[string]int{}
	perConsumer := [2]int{}
	for len(seen) < n {
		select {
		case m := <-a:
			seen[string(m.Payload)]++
			perConsumer[0]++
			m.Ack()
		case m := <-b:
			seen[string(m.Payload)]++
			perConsumer[1]++
			m.Ack()
		case <-time.After(wait):
			t.Fatalf("received %d of %d", len(seen), n)
		}
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("message %s delivered %d times", k, c)
		}
	}
	if perConsumer[0] == 0 || perConsumer[1] == 0 {
		t.Fatalf("one consumer took everything: %v", perConsumer)
	}
}

func testGroupsEachGetAll(t *testing.T, e *env) {
	a := e.subscribe(bus.SubscriberConfig{Group: e.group()}, "evt")
	b := e.subscribe(bus.SubscriberConfig{Group: e.group()}, "evt")
	e.publish(e.publisher(bus.PublisherConfig{}), "evt", newMsg("m"))
	for _, ch := range []<-chan *message.Message{a, b} {
		receive(t, ch).Ack()
	}
}

func testRedeliveryAfterNack(t *testing.T, e *env) {
	ch := e.subscribe(bus.SubscriberConfig{Group: e.group()}, "evt")
	sent := newMsg("again")
	e.publish(e.publisher(bus.PublisherConfig{}), "evt", sent)
	first := receive(t, ch)
	if first.UUID != sent.UUID || first.Metadata.Get(bus.RedeliveredKey) == "true" {
		t.Fatalf("first delivery %s redelivered=%q", first.UUID, first.Metadata.Get(bus.RedeliveredKey))
	}
	first.Nack()
	second := receive(t, ch)
	if second.UUID != sent.UUID || second.Metadata.Get(bus.RedeliveredKey) != "true" {
		t.Fatalf("after nack got %s redelivered=%q", second.UUID, second.Metadata.Get(bus.RedeliveredKey))
	}
	second.Ack()
	quiet(t, ch)
}

func testDelayedRetry(t *testing.T, e *env) {
	const delay = 300 * time.Millisecond
	cfg := bus.SubscriberConfig{Group: e.group(), RetryDelays: []time.Duration{delay}}
	ch := e.subscribe(cfg, "evt")
	queue := cfg.Queue("evt")
	e.publish(e.publisher(bus.PublisherConfig{}), "evt", newMsg("retry me"))
	first := receive(t, ch)
	// Park a copy in the retry queue, then settle the original: the broker
	// brings it back after the TTL, with no consumer blocked meanwhile.
	retry := e.publisher(bus.PublisherConfig{ToQueue: true})
	copied := first.Copy()
	parked := time.Now()
	e.publish(retry, bus.RetryQueue(queue, delay), copied)
	first.Ack()
	back := receive(t, ch)
	waited := time.Since(parked)
	back.Ack()
	if back.UUID != first.UUID {
		t.Fatalf("came back %s, want %s", back.UUID, first.UUID)
	}
	if waited < delay*9/10 {
		t.Fatalf("came back after %v, before the %v delay", waited, delay)
	}
	deaths, err := envelope.Deaths(back)
	if err != nil || len(deaths) == 0 {
		t.Fatalf("x-death: %v %v (metadata %v)", deaths, err, back.Metadata)
	}
	if d := deaths[0]; d.Reason != "expired" || d.Queue != bus.RetryQueue(queue, delay) || d.Count != 1 {
		t.Fatalf("x-death[0] %+v", d)
	}
}

func testDeadLetter(t *testing.T, e *env) {
	cfg := bus.SubscriberConfig{Group: e.group()}
	ch := e.subscribe(cfg, "evt")
	queue := cfg.Queue("evt")
	e.publish(e.publisher(bus.PublisherConfig{}), "evt", newMsg("poison"))
	m := receive(t, ch)
	dead := m.Copy()
	dead.Metadata.Set(envelope.ErrorKey, "decode: unexpected end of JSON input")
	dead.Metadata.Set(envelope.AttemptsKey, "1")
	e.publish(e.publisher(bus.PublisherConfig{ToQueue: true, Mandatory: true}), bus.DeadLetterQueue(queue), dead)
	m.Ack()
	dlq := e.subscribe(bus.SubscriberConfig{QueueName: func(string) string { return bus.DeadLetterQueue(queue) }, Passive: true}, "unused")
	got := receive(t, dlq)
	got.Ack()
	if got.UUID != m.UUID || got.Metadata.Get(envelope.ErrorKey) != "decode: unexpected end of JSON input" || got.Metadata.Get(envelope.AttemptsKey) != "1" {
		t.Fatalf("dead letter %s %v", got.UUID, got.Metadata)
	}
	quiet(t, ch)
}

func testMandatory(t *testing.T, e *env) {
	mandatory := e.publisher(bus.PublisherConfig{Mandatory: true})
	err := mandatory.Publish("nobody.listens", newMsg("lost"))
	if !errors.Is(err, bus.ErrUnroutable) {
		t.Fatalf("mandatory unroutable publish: %v, want ErrUnroutable", err)
	}
	if err := e.publisher(bus.PublisherConfig{}).Publish("nobody.listens", newMsg("dropped")); err != nil {
		t.Fatalf("non-mandatory unroutable publish: %v", err)
	}
	ch := e.subscribe(bus.SubscriberConfig{Group: e.group()}, "someone.listens")
	e.publish(mandatory, "someone.listens", newMsg("kept"))
	receive(t, ch).Ack()
}

func testMetadata(t *testing.T, e *env) {
	ch := e.subscribe(bus.SubscriberConfig{Group: e.group()}, "evt")
	sent := newMsg(`{"order":"1"}`)
	sent.Metadata.Set("saga_id", "s-1")
	sent.Metadata.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	e.publish(e.publisher(bus.PublisherConfig{}), "evt", sent)
	got := receive(t, ch)
	got.Ack()
	if got.UUID != sent.UUID || string(got.Payload) != string(sent.Payload) ||
		got.Metadata.Get("saga_id") != "s-1" || got.Metadata.Get("traceparent") != sent.Metadata.Get("traceparent") {
		t.Fatalf("got %s %q %v", got.UUID, got.Payload, got.Metadata)
	}
}

// testReconnect publishes from several goroutines while the broker drops
// every connection, and checks that every message whose Publish succeeded
// arrives (at least once: a publish whose confirm was lost is retried).
func testReconnect(t *testing.T, e *env, f Features) {
	if f.Restart == nil {
		t.Skip("the transport has no broker to restart")
	}
	ch := e.subscribe(bus.SubscriberConfig{Group: e.group()}, "evt")
	p := e.publisher(bus.PublisherConfig{ReconnectTimeout: time.Minute, Mandatory: true})
	const n, workers = 2000, 20
	var mu sync.Mutex
	published := map[string]bool{}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range next {
				m := newMsg("r")
				for p.Publish("evt", m) != nil {
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				published[m.UUID] = true
				mu.Unlock()
			}
		})
	}
	received := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			received[m.UUID] = true
			m.Ack()
			if len(received) == n {
				return
			}
		}
	}()
	for i := range n {
		if i == n/3 || i == 2*n/3 {
			f.Restart(t)
		}
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("received %d of %d", len(received), n)
	}
	for id := range published {
		if !received[id] {
			t.Fatalf("message %s was confirmed but never delivered", id)
		}
	}
}
