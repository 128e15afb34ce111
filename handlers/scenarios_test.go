package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
}

func (OrderPlaced) EventName() string { return "order.placed" }

type PaymentCaptured struct {
	OrderID string `json:"order_id"`
}

func (PaymentCaptured) EventName() string { return "payment.captured" }

// fixture is one scenario's transport, a service name unique to the run and
// a fast retry policy.
type fixture struct {
	t       *testing.T
	tr      transport.Transport
	service string
	policy  handlers.RetryPolicy
}

func newFixture(t *testing.T, url string) *fixture {
	tr, err := transport.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return &fixture{
		t:       t,
		tr:      tr,
		service: "svc" + fmt.Sprint(time.Now().UnixNano()%1e9),
		policy: handlers.RetryPolicy{
			Immediate: 1, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Multiplier: 2,
			MaxElapsed: time.Second, Delays: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
		},
	}
}

// router makes a router; register adds its handlers; run runs it until the
// test ends (or the returned stop is called) and waits until it runs.
func (f *fixture) router(opts ...handlers.Option) *handlers.Router {
	f.t.Helper()
	r, err := handlers.NewRouter(handlers.Config{Service: f.service, Exchange: f.exchange(), Retry: &f.policy, ShutdownTimeout: 5 * time.Second}, f.tr, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) run(r *handlers.Router) (stop func()) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Running():
	case err := <-done:
		f.t.Fatalf("router stopped: %v", err)
	case <-time.After(30 * time.Second):
		f.t.Fatal("router not running after 30 s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("router: %v", err)
			}
		})
	}
	f.t.Cleanup(stop)
	return stop
}

// exchange is the scenario's own bus, so parallel scenarios do not see
// each other's events.
func (f *fixture) exchange() string { return "bus." + f.service }

// deadLetters subscribes to a handler's dead-letter queue.
func (f *fixture) deadLetters(handler string) <-chan *message.Message {
	f.t.Helper()
	sub, err := f.tr.NewSubscriber(bus.SubscriberConfig{
		QueueName: func(string) string { return bus.DeadLetterQueue(bus.WorkQueue(f.service, handler)) },
		Passive:   true,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, "dlq")
	if err != nil {
		f.t.Fatal(err)
	}
	return ch
}

func (f *fixture) publishRaw(topic string, payload []byte) {
	f.t.Helper()
	pub, err := f.tr.NewPublisher(bus.PublisherConfig{Exchange: f.exchange()})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
		f.t.Fatal(err)
	}
}

func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		m.Ack()
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no message in 30 s")
	}
	return nil
}

// runScenarios runs every scenario on the transport at url.
func runScenarios(t *testing.T, url string) {
	scenarios := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"RetriesThenSuccess", scenarioRetriesThenSuccess},
		{"ExhaustedThenDelayedThenDeadLetter", scenarioExhausted},
		{"PermanentGoesStraightToDeadLetters", scenarioPermanent},
		{"UndecodablePayloadGoesToDeadLetters", scenarioUndecodable},
		{"DuplicateKeyRunsOnce", scenarioDuplicate},
		{"PanicIsRetried", scenarioPanic},
		{"EmitCarriesSagaAndCausation", scenarioEmit},
		{"ShutdownFinishesInFlightRequeuesRest", scenarioShutdown},
		{"ShutdownTimeoutRequeues", scenarioShutdownTimeout},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.fn(t, newFixture(t, url))
		})
	}
}

func scenarioRetriesThenSuccess(t *testing.T, f *fixture) {
	r := f.router()
	var runs atomic.Int32
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		if runs.Add(1) < 3 {
			return errors.New("gateway timeout")
		}
		return nil
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "1"}))
	await(t, "handled", func() bool { return r.Stats().Handled == 1 })
	// Immediate: 1 -> runs 1 and 2 fail in the first delivery, the delayed
	// redelivery's first run succeeds.
	if got := runs.Load(); got != 3 {
		t.Fatalf("%d runs, want 3", got)
	}
	if s := r.Stats(); s.Delayed != 1 || s.DeadLettered != 0 || s.Retried != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func scenarioExhausted(t *testing.T, f *fixture) {
	r := f.router()
	var runs atomic.Int32
	var other atomic.Bool
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		if e.OrderID == "other" {
			other.Store(true)
			return nil
		}
		runs.Add(1)
		return errors.New("gateway down")
	}))
	f.run(r)
	dlq := f.deadLetters("charge")
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "down"}))
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "other"}))
	// The failing message waits in retry queues; the other is not blocked.
	await(t, "the other message", other.Load)
	m := receive(t, dlq)
	want := map[string]string{
		envelope.AttemptsKey:  "6", // 2 runs x (1 delivery + 2 delayed redeliveries)
		envelope.DelayedKey:   "2",
		envelope.ErrorKindKey: "transient",
		envelope.QueueKey:     bus.WorkQueue(f.service, "charge"),
		envelope.HandlerKey:   "charge",
	}
	for k, v := range want {
		if got := m.Metadata.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if e := m.Metadata.Get(envelope.ErrorKey); !strings.Contains(e, "gateway down") {
		t.Errorf("error %q does not carry the cause", e)
	}
	first, err1 := time.Parse(time.RFC3339Nano, m.Metadata.Get(envelope.FirstFailureKey))
	last, err2 := time.Parse(time.RFC3339Nano, m.Metadata.Get(envelope.LastFailureKey))
	if err1 != nil || err2 != nil || !last.After(first) {
		t.Errorf("failure times %q .. %q", m.Metadata.Get(envelope.FirstFailureKey), m.Metadata.Get(envelope.LastFailureKey))
	}
	if got := runs.Load(); got != 6 {
		t.Errorf("%d runs, want 6", got)
	}
}

func scenarioPermanent(t *testing.T, f *fixture) {
	r := f.router()
	var runs atomic.Int32
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		runs.Add(1)
		return handlers.Permanent(errors.New("card number invalid"))
	}))
	f.run(r)
	dlq := f.deadLetters("charge")
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "1"}))
	m := receive(t, dlq)
	if m.Metadata.Get(envelope.ErrorKindKey) != "permanent" || m.Metadata.Get(envelope.AttemptsKey) != "1" || runs.Load() != 1 {
		t.Fatalf("kind %q attempts %q runs %d", m.Metadata.Get(envelope.ErrorKindKey), m.Metadata.Get(envelope.AttemptsKey), runs.Load())
	}
}

func scenarioUndecodable(t *testing.T, f *fixture) {
	r := f.router()
	var runs atomic.Int32
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		runs.Add(1)
		return nil
	}))
	f.run(r)
	dlq := f.deadLetters("charge")
	f.publishRaw("order.placed", []byte(`{"order_id": `))
	m := receive(t, dlq)
	if m.Metadata.Get(envelope.ErrorKindKey) != "decode" || runs.Load() != 0 || string(m.Payload) != `{"order_id": ` {
		t.Fatalf("kind %q runs %d payload %q", m.Metadata.Get(envelope.ErrorKindKey), runs.Load(), m.Payload)
	}
}

func scenarioDuplicate(t *testing.T, f *fixture) {
	store := &handlers.MemoryStore{}
	r := f.router(handlers.WithIdempotencyStore(store))
	var charges sync.Map
	var runs atomic.Int32
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		runs.Add(1)
		n, _ := charges.LoadOrStore(e.OrderID, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		return nil
	}))
	f.run(r)
	em := r.Emitter()
	for range 3 { // the same business key three times: one effect
		must(t, em.Emit(context.Background(), OrderPlaced{OrderID: "42"}, handlers.WithIdempotencyKey("charge:42")))
	}
	must(t, em.Emit(context.Background(), OrderPlaced{OrderID: "43"}, handlers.WithIdempotencyKey("charge:43")))
	await(t, "all four handled or skipped", func() bool { s := r.Stats(); return s.Handled+s.Duplicates == 4 })
	n, _ := charges.Load("42")
	if got := n.(*atomic.Int32).Load(); got != 1 || r.Stats().Duplicates != 2 || runs.Load() != 2 {
		t.Fatalf("order 42 charged %d times, %d duplicates, %d runs", got, r.Stats().Duplicates, runs.Load())
	}
}

func scenarioPanic(t *testing.T, f *fixture) {
	r := f.router()
	var runs atomic.Int32
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		if runs.Add(1) == 1 {
			panic("nil map in the gateway client")
		}
		return nil
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "1"}))
	await(t, "handled after the panic", func() bool { return r.Stats().Handled == 1 })
	if runs.Load() != 2 {
		t.Fatalf("%d runs", runs.Load())
	}
}

func scenarioEmit(t *testing.T, f *fixture) {
	r := f.router()
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		return handlers.Emit(ctx, PaymentCaptured{OrderID: e.OrderID})
	}))
	got := make(chan *message.Message, 1)
	var calls atomic.Int32
	handlers.MustHandle(r, "captured", handlers.HandlerFunc[PaymentCaptured](func(ctx context.Context, e PaymentCaptured) error {
		calls.Add(1)
		return nil
	}))
	sub, err := f.tr.NewSubscriber(bus.SubscriberConfig{Group: "observer" + f.service, Exchange: f.exchange()})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, "payment.captured")
	must(t, err)
	go func() { got <- receive(t, ch) }()
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "7"}, handlers.WithSagaID("saga-7")))
	m := <-got
	md := m.Metadata
	if md.Get(envelope.SagaIDKey) != "saga-7" || md.Get(envelope.CausationIDKey) == "" ||
		md.Get(envelope.EventKey) != "payment.captured" || md.Get(envelope.ProducerKey) != f.service ||
		md.Get(envelope.IdempotencyKey) != m.UUID {
		t.Fatalf("metadata %v", md)
	}
	await(t, "the chained handler", func() bool { return calls.Load() == 1 })
	if err := handlers.Emit(context.Background(), PaymentCaptured{}); !errors.Is(err, handlers.ErrNotInHandler) {
		t.Fatalf("Emit outside a handler: %v", err)
	}
}

// scenarioShutdown: a run in flight when shutdown starts finishes and is
// acked; a message that has not started is left for the next instance.
func scenarioShutdown(t *testing.T, f *fixture) {
	r := f.router()
	started := make(chan string, 10)
	release := make(chan struct{})
	var finished atomic.Int32
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		started <- e.OrderID
		<-release // ignores ctx: shutdown must wait for it
		finished.Add(1)
		return nil
	}))
	stop := f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "in-flight"}))
	if id := <-started; id != "in-flight" {
		t.Fatalf("started %q", id)
	}
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "queued"}))
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("shutdown did not wait for the run in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-stopped
	if finished.Load() != 1 || r.Stats().Handled != 1 {
		t.Fatalf("in-flight run: finished %d, handled %d", finished.Load(), r.Stats().Handled)
	}
	// The next instance gets the queued message, not the finished one.
	r2 := f.router()
	got := make(chan string, 10)
	handlers.MustHandle(r2, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		got <- e.OrderID
		return nil
	}))
	f.run(r2)
	select {
	case id := <-got:
		if id != "queued" {
			t.Fatalf("next instance got %q", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the queued message was lost at shutdown")
	}
	select {
	case id := <-got:
		t.Fatalf("next instance also got %q", id)
	case <-time.After(300 * time.Millisecond):
	}
}

// scenarioShutdownTimeout: a run that does not finish within the shutdown
// timeout is cancelled and its message requeued, not parked.
func scenarioShutdownTimeout(t *testing.T, f *fixture) {
	r, err := handlers.NewRouter(handlers.Config{Service: f.service, Exchange: f.exchange(), Retry: &f.policy,
		ShutdownTimeout: 100 * time.Millisecond}, f.tr)
	must(t, err)
	started := make(chan struct{}, 10)
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}))
	stop := f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "stuck"}))
	<-started
	stop()
	if s := r.Stats(); s.DeadLettered != 0 || s.Delayed != 0 {
		t.Fatalf("shutdown parked the message: %+v", s)
	}
	r2 := f.router()
	got := make(chan string, 1)
	handlers.MustHandle(r2, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		got <- e.OrderID
		return nil
	}))
	f.run(r2)
	select {
	case id := <-got:
		if id != "stuck" {
			t.Fatalf("got %q", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the cancelled run's message was lost")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestImmediateRetryWaits: the in-process retries wait InitialInterval,
// then Multiplier times longer (watermill's Retry middleware, used before,
// waited twice as long the first time and MaxInterval the second), and
// each one is counted.
func TestImmediateRetryWaits(t *testing.T) {
	f := newFixture(t, "mem://handlers-retry-waits")
	f.policy = handlers.RetryPolicy{Immediate: 2, InitialInterval: 300 * time.Millisecond, MaxInterval: 10 * time.Second,
		Multiplier: 2, MaxElapsed: 10 * time.Second, Delays: []time.Duration{time.Second}}
	r := f.router()
	var mu sync.Mutex
	var runs []time.Time
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		mu.Lock()
		defer mu.Unlock()
		runs = append(runs, time.Now())
		if len(runs) < 3 {
			return errors.New("gateway timeout")
		}
		return nil
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "1"}))
	await(t, "handled", func() bool { return r.Stats().Handled == 1 })
	mu.Lock()
	defer mu.Unlock()
	first, second := runs[1].Sub(runs[0]), runs[2].Sub(runs[1])
	// Lower bounds are the policy; the upper bounds leave 150 ms of
	// scheduling and catch the doubled waits.
	if first < 300*time.Millisecond || first > 450*time.Millisecond || second < 600*time.Millisecond || second > 750*time.Millisecond {
		t.Errorf("waits %v then %v; want 300 ms then 600 ms", first, second)
	}
	if s := r.Stats(); s.Retried != 2 || s.Delayed != 0 {
		t.Errorf("stats %+v, want 2 immediate retries", s)
	}
}
