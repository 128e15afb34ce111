package sagatest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport"
)

// Harness is one test's world: a bundled broker of its own, SQLite
// databases in the test's temporary folder, a virtual clock, fault
// injection on every delivery made through its transports, and
// assertions on a saga tracker's instances and on the traces. Everything
// it starts stops when the test ends. Its methods are safe for concurrent
// use, except that the fault and assertion methods that take no T
// report through the test given to New and so belong to its goroutine.
type Harness struct {
	t      T
	busURL string
	dir    string
	// Clock is the virtual clock; it starts at the real time of New.
	Clock *Clock
	// Wait bounds each Await and trace assertion, in real time; 20 s by
	// default.
	Wait time.Duration

	f *faults

	mu    sync.Mutex
	store *saga.Store
	decl  *saga.Saga
	wg    sync.WaitGroup
}

var seq atomic.Int64

// T is the part of T the harness uses; a *testing.T or
// *testing.B is one.
type T interface {
	Helper()
	Name() string
	TempDir() string
	Cleanup(func())
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

var _ T = testing.TB(nil)

// New returns a harness for t, on a bundled broker named after the test.
func New(t T) *Harness {
	t.Helper()
	installRecorder()
	name := regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "-")
	clock := NewClock(time.Now().UTC())
	h := &Harness{
		t: t, busURL: fmt.Sprintf("mem://sagatest-%s-%d", strings.Trim(name, "-"), seq.Add(1)),
		dir: t.TempDir(), Clock: clock, Wait: 20 * time.Second, f: newFaults(clock),
	}
	t.Cleanup(h.wg.Wait) // the last Cleanup to run
	return h
}

// BusURL is the "mem://..." URL of the harness's bundled broker. A
// transport opened on it directly injects no faults; use Transport.
func (h *Harness) BusURL() string { return h.busURL }

// Dir is the test's temporary folder, which holds the databases.
func (h *Harness) Dir() string { return h.dir }

// DBURL is the SQLite URL of a service's database in Dir.
func (h *Harness) DBURL(service string) string {
	return "sqlite:" + filepath.Join(h.dir, service+".db")
}

// Now is the virtual clock's time, as handlers.WithClock takes it.
func (h *Harness) Now() time.Time { return h.Clock.Now() }

// Transport connects to the harness's broker through the fault injection:
// every message a subscriber made from it delivers passes the faults. It
// is closed when the test ends. The service name is for the error only.
func (h *Harness) Transport(service string) (transport.Transport, error) {
	tr, err := transport.Open(h.busURL)
	if err != nil {
		return nil, fmt.Errorf("sagatest: transport for %s: %w", service, err)
	}
	ft := &faultTransport{Transport: tr, f: h.f}
	h.t.Cleanup(func() { _ = ft.Close() })
	return ft, nil
}

// DB opens (creating) the SQLite database of a service in Dir, closed when
// the test ends; the test fails if it cannot.
func (h *Harness) DB(service string) *outbox.DB {
	h.t.Helper()
	db, err := outbox.Open(context.Background(), h.DBURL(service))
	if err != nil {
		h.t.Fatalf("sagatest: database of %s: %v", service, err)
	}
	h.t.Cleanup(func() { _ = db.Close() })
	return db
}

// RetryPolicy is a retry policy for tests: two immediate retries and two
// redeliveries, all within milliseconds (they wait in real time).
func RetryPolicy() *handlers.RetryPolicy {
	return &handlers.RetryPolicy{Immediate: 2, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond,
		Multiplier: 2, MaxElapsed: time.Second, Delays: []time.Duration{20 * time.Millisecond, 50 * time.Millisecond}}
}

// Router makes a router for a service on the harness: its transport, its
// database (WithDB), the virtual clock (WithClock) and RetryPolicy, plus
// opts. Register handlers on it, then Run it.
func (h *Harness) Router(service string, opts ...handlers.Option) *handlers.Router {
	h.t.Helper()
	tr, err := h.Transport(service)
	if err != nil {
		h.t.Fatal(err)
	}
	opts = append([]handlers.Option{handlers.WithDB(h.DB(service)), handlers.WithClock(h.Clock.Now)}, opts...)
	r, err := handlers.NewRouter(handlers.Config{Service: service, Retry: RetryPolicy(),
		Relay: outbox.RelayConfig{PollInterval: 10 * time.Millisecond}}, tr, opts...)
	if err != nil {
		h.t.Fatalf("sagatest: router of %s: %v", service, err)
	}
	return r
}

// Run runs r until the test ends and returns once it consumes.
func (h *Harness) Run(r *handlers.Router) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	h.wg.Go(func() {
		defer close(finished)
		done <- r.Run(ctx)
	})
	h.t.Cleanup(func() { cancel(); <-finished }) // before its database closes
	select {
	case <-r.Running():
	case err := <-done:
		h.t.Fatalf("sagatest: router stopped: %v", err)
	}
}

// StartTracker runs a saga tracker for decl on the harness (its own
// database "saga-tracker", the virtual clock, deadlines checked every few
// milliseconds of real time) until the test ends, and Watches its store.
func (h *Harness) StartTracker(decl *saga.Saga) *saga.Tracker {
	h.t.Helper()
	tr, err := h.Transport(saga.TrackerService)
	if err != nil {
		h.t.Fatal(err)
	}
	t, err := saga.NewTracker(context.Background(), decl, h.DB(saga.TrackerService), tr, h.TrackerConfig())
	if err != nil {
		h.t.Fatalf("sagatest: tracker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	h.wg.Go(func() {
		defer close(finished)
		done <- t.Run(ctx)
	})
	h.t.Cleanup(func() { cancel(); <-finished }) // before its database closes
	select {
	case <-t.Running():
	case err := <-done:
		h.t.Fatalf("sagatest: tracker stopped: %v", err)
	}
	h.Watch(t.Store())
	return t
}

// TrackerConfig is the tracker configuration StartTracker uses, for a
// tracker started by other code (e.g. an application's own Start): the
// virtual clock, deadlines checked every 5 ms, the relay polling every
// 10 ms.
func (h *Harness) TrackerConfig() saga.TrackerConfig {
	return saga.TrackerConfig{Clock: h.Clock, DeadlineInterval: 5 * time.Millisecond,
		Relay: outbox.RelayConfig{PollInterval: 10 * time.Millisecond}}
}

// Watch makes store the one AwaitState and History read.
func (h *Harness) Watch(store *saga.Store) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.store = store
}

func (h *Harness) watched(t T) *saga.Store {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store == nil {
		t.Fatal("sagatest: no tracker: call StartTracker or Watch first")
	}
	return h.store
}

// AwaitState polls the tracker until instance sagaID is in state want,
// and returns it; after h.Wait the test fails with the instance's last
// state, its history and the deliveries held by faults.
func (h *Harness) AwaitState(t T, sagaID string, want saga.State) saga.Instance {
	t.Helper()
	st := h.watched(t)
	deadline := time.Now().Add(h.Wait)
	for {
		in, err := st.Get(context.Background(), "", sagaID)
		if err == nil && in.State == want {
			return in
		}
		if time.Now().After(deadline) {
			got := "no instance"
			if err == nil {
				got = fmt.Sprintf("%s at %q (%s); history:\n%s", in.State, in.Step, in.Reason, FormatHistory(in.History))
			} else if !errors.Is(err, saga.ErrNotFound) {
				got = err.Error()
			}
			t.Fatalf("saga %s: not %s within %v: %s\nheld: %v", sagaID, want, h.Wait, got, h.f.heldNow())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AwaitEvents polls the tracker until the event entries of instance
// sagaID are exactly events, in any order (two consumers of the tracker's
// queue may record two events in either order), and returns its history;
// after h.Wait the test fails with the events recorded.
func (h *Harness) AwaitEvents(t T, sagaID string, events ...string) []saga.Entry {
	t.Helper()
	want := slices.Sorted(slices.Values(events))
	deadline := time.Now().Add(h.Wait)
	for {
		in, err := h.watched(t).Get(context.Background(), "", sagaID)
		got := slices.Sorted(slices.Values(Events(in.History)))
		if err == nil && slices.Equal(got, want) {
			return in.History
		}
		if time.Now().After(deadline) {
			t.Fatalf("saga %s: events %q (%v), want %q\nheld: %v", sagaID, got, err, want, h.f.heldNow())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// History returns instance sagaID's history in time order; the test
// fails if there is none.
func (h *Harness) History(t T, sagaID string) []saga.Entry {
	t.Helper()
	in, err := h.watched(t).Get(context.Background(), "", sagaID)
	if err != nil {
		t.Fatalf("sagatest: history of %s: %v", sagaID, err)
	}
	return in.History
}

// FormatHistory writes a history one entry a line: kind, event, step.
func FormatHistory(history []saga.Entry) string {
	var b strings.Builder
	for _, e := range history {
		fmt.Fprintf(&b, "  %s %s %s %s\n", e.Kind, e.Event, e.Step, e.Error)
	}
	return b.String()
}

// Events returns the event names of history's event entries, in order.
func Events(history []saga.Entry) []string {
	var out []string
	for _, e := range history {
		if e.Kind == saga.EventEntry {
			out = append(out, e.Event)
		}
	}
	return out
}

// Duplicate delivers each of the next times deliveries matching m twice
// (the same message), the second after the consumer acked the first.
func (h *Harness) Duplicate(m Match, times int) {
	h.inject(&rule{fault: Duplicated, match: m, left: times})
}

// Drop loses each of the next times deliveries matching m before the
// consumer sees it; the broker redelivers it.
func (h *Harness) Drop(m Match, times int) { h.inject(&rule{fault: Dropped, match: m, left: times}) }

// Delay holds each of the next times deliveries matching m until the
// virtual clock has advanced by d from its arrival. The consumer takes
// nothing else from its queue meanwhile (its one delivery in flight).
func (h *Harness) Delay(m Match, d time.Duration, times int) {
	if d <= 0 {
		h.t.Helper()
		h.t.Fatalf("sagatest: Delay(%s) by %v: want a positive duration", m, d)
	}
	h.inject(&rule{fault: Delayed, match: m, left: times, delay: d})
}

// Reorder holds the next delivery matching first until a delivery
// matching then has been acked, so that the consumers see then before
// first. If then was acked already, nothing is held. then must be able to
// arrive while first is held: on another queue, or on a queue with several
// consumers (a tracker has one per event), never caused by first.
func (h *Harness) Reorder(first, then Match) {
	h.inject(&rule{fault: Reordered, match: first, left: 1, then: then})
}

// CrashAfterCommit lets the consumer handle each of the next times
// deliveries matching m (a transactional handler commits, and acks), then
// fails that ack on its way to the broker, which redelivers the message,
// as after a crash between commit and ack.
func (h *Harness) CrashAfterCommit(m Match, times int) {
	h.inject(&rule{fault: Crashed, match: m, left: times})
}

func (h *Harness) inject(r *rule) {
	if r.left < 1 {
		h.t.Helper()
		h.t.Fatalf("sagatest: %s on %s %d times: want at least once", r.fault, r.match, r.left)
	}
	h.f.add(r)
}

// Injected returns the faults injected so far, in order.
func (h *Harness) Injected() []Injection { return h.f.injections() }

// Deliveries returns the deliveries matching m that reached the fault
// injection so far (a redelivered message counts again), in order of
// arrival; their Message is nil.
func (h *Harness) Deliveries(m Match) []Delivery { return h.f.deliveries(m) }

// AwaitDeliveries waits until at least n deliveries matching m arrived,
// and returns them all; the test fails after h.Wait. A fault's second
// delivery (a redelivery, a duplicate) may come after the saga has ended,
// so count deliveries with it rather than with Deliveries.
func (h *Harness) AwaitDeliveries(t T, m Match, n int) []Delivery {
	t.Helper()
	deadline := time.Now().Add(h.Wait)
	for {
		got := h.f.deliveries(m)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("sagatest: %d deliveries matching %s within %v, want %d\nheld: %v", len(got), m, h.Wait, n, h.f.heldNow())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AwaitInjected waits until n faults of kind f were injected (in all),
// and returns them; the test fails after h.Wait.
func (h *Harness) AwaitInjected(t T, f Fault, n int) []Injection {
	t.Helper()
	deadline := time.Now().Add(h.Wait)
	for {
		var got []Injection
		for _, in := range h.f.injections() {
			if in.Fault == f {
				got = append(got, in)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("sagatest: %d %s faults injected within %v, want %d; injected: %v", len(got), f, h.Wait, n, h.f.injections())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The span recorder is installed once per test binary as the global
// tracer provider, which Troupe's tracing uses; spans are told apart by
// their traces' saga ids, so harnesses of parallel tests share it. A test
// that installs a tracer provider of its own hides the spans made
// meanwhile from it.
var (
	recorderOnce sync.Once
	recorder     *tracetest.SpanRecorder
)

func installRecorder() {
	recorderOnce.Do(func() {
		recorder = tracetest.NewSpanRecorder()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder)))
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	})
}

// Spans returns the ended spans of the traces that touch sagaID (a span
// of the trace has its troupe.saga_id).
func (h *Harness) Spans(sagaID string) []sdktrace.ReadOnlySpan {
	all := recorder.Ended()
	traces := map[trace.TraceID]bool{}
	for _, s := range all {
		for _, a := range s.Attributes() {
			if a.Key == tracing.SagaIDKey && a.Value.AsString() == sagaID {
				traces[s.SpanContext().TraceID()] = true
			}
		}
	}
	var out []sdktrace.ReadOnlySpan
	for _, s := range all {
		if traces[s.SpanContext().TraceID()] {
			out = append(out, s)
		}
	}
	return out
}

// AssertTraceChain waits until the traces of sagaID hold a chain of spans
// named names, each the child of the one before (the first anywhere), and
// fails the test after h.Wait with the spans it saw. Spans in between are
// not allowed: name each link (e.g. "publish order.placed" between
// "outbox wait order.placed" and "process order.placed").
func (h *Harness) AssertTraceChain(t T, sagaID string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(h.Wait)
	for {
		spans := h.Spans(sagaID)
		err := chain(spans, names)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sagatest: trace of saga %s: %v", sagaID, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chain finds names as a parent -> child path in spans.
func chain(spans []sdktrace.ReadOnlySpan, names []string) error {
	if len(names) == 0 {
		return nil
	}
	var walk func(s sdktrace.ReadOnlySpan, i int) int // how far the path from s gets
	walk = func(s sdktrace.ReadOnlySpan, i int) int {
		best := i + 1
		if best == len(names) {
			return best
		}
		for _, c := range spans {
			if c.Name() == names[i+1] && c.Parent().SpanID() == s.SpanContext().SpanID() {
				best = max(best, walk(c, i+1))
			}
		}
		return best
	}
	got := 0
	for _, s := range spans {
		if s.Name() == names[0] {
			got = max(got, walk(s, 0))
		}
	}
	if got == len(names) {
		return nil
	}
	var seen []string
	for _, s := range spans {
		seen = append(seen, s.Name())
	}
	return fmt.Errorf("the chain stops before %q (after %q); spans: %q", names[got], names[:got], seen)
}
