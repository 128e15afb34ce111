package handlers_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// fuzzOrder is FuzzHandlerMessage's event: small, with the JSON kinds a
// payload can get wrong (string, number, bool, array).
type fuzzOrder struct {
	OrderID string   `json:"order_id"`
	Amount  int      `json:"amount"`
	Paid    bool     `json:"paid"`
	Items   []string `json:"items"`
}

// fuzzEvent is fuzzOrder's name.
const fuzzEvent = "fuzz.order"

func (fuzzOrder) EventName() string { return fuzzEvent }

// fuzzOutcome is what the fuzz handler returns once it has its event.
type fuzzOutcome uint8

const (
	fuzzOK        fuzzOutcome = iota + 1 // nil
	fuzzPermanent                        // a permanent error
	fuzzTransient                        // a transient error, every run
)

// Headers with which the harness steers and recognises its messages.
const (
	fuzzSeqKey     = "fuzz-seq"     // the input's number; "sentinel" for sentinels
	fuzzOutcomeKey = "fuzz-outcome" // a fuzzOutcome; absent means fuzzOK
	fuzzSentinel   = "sentinel"
)

var (
	errFuzzRefused     = errors.New("fuzz: order refused")
	errFuzzUnavailable = errors.New("fuzz: gateway unavailable")
)

// fuzzPolicy retries fast, so that a transient failure settles in a few
// milliseconds. MaxAttempts 5 is below the (1+1)*(1+2) = 6 runs the tiers
// would give, so the budget cuts the last delayed redelivery short.
var fuzzPolicy = handlers.RetryPolicy{
	Immediate: 1, InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, Multiplier: 2,
	MaxElapsed: time.Second, Delays: []time.Duration{time.Millisecond, 2 * time.Millisecond}, MaxAttempts: 5,
}

// fuzzInput is one message from the bus: its payload, the metadata the
// router reads, and what the handler will return.
type fuzzInput struct {
	payload []byte
	outcome fuzzOutcome
	md      map[string]string // the fuzzed keys, every one set
}

// fuzzedKeys are the metadata keys FuzzHandlerMessage fuzzes, in the order
// of its arguments. The router rewrites only attempts and delayed. It
// does not read the content type (its codec decides), so a content type
// that names another codec must change nothing.
var fuzzedKeys = []string{
	envelope.EventKey, envelope.ContentTypeKey, envelope.SagaIDKey, envelope.AttemptsKey,
	envelope.DelayedKey, envelope.TraceParentKey, envelope.TraceStateKey,
}

// FuzzHandlerMessage publishes an arbitrary message (payload and metadata)
// to a typed handler on the bundled broker and checks how it settles: an
// undecodable payload never reaches the handler and is dead-lettered at
// once as a decode error; a decodable one reaches it with what
// json.Unmarshal gives, once unless the handler fails transiently, and
// then within the retry budget before it is dead-lettered; the router
// keeps consuming afterwards. One router per fuzz worker serves every
// input; it is replaced after an input that fails, so that what that input
// left behind does not fail the next ones (and mislead minimisation).
func FuzzHandlerMessage(f *testing.F) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	tp := sdktrace.NewTracerProvider() // recording spans, exported nowhere
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	f.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		_ = tp.Shutdown(context.Background())
	})
	rig, err := newFuzzRig()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if rig != nil {
			rig.close()
		}
	})

	// outcome: 0 succeeds, 1 fails permanently, 2 transiently (modulo 3).
	const tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, s := range []struct {
		payload                             string
		outcome                             uint8
		event, ctype, saga, attempts, delay string
		traceparent, tracestate             string
	}{
		// Decodable.
		{payload: `{"order_id":"o1","amount":3,"paid":true,"items":["a","b"]}`, outcome: 0, event: "fuzz.order",
			ctype: "application/json", saga: "saga-1", traceparent: tp1, tracestate: "congo=t61rcWkgMzE"},
		{payload: `null`, outcome: 0},
		{payload: `{}`, outcome: 0, ctype: "application/xml"},
		{payload: ` {"ORDER_ID":"x","extra":{"a":[1,2]},"items":null} `, outcome: 0, attempts: "4", delay: "2"},
		{payload: `{"order_id":"\u00e9\ud800","amount":-0}`, outcome: 0, event: "other.event", traceparent: "00-zz"},
		{payload: `{"order_id":"p"}`, outcome: 1, saga: "saga-p"},
		{payload: `{"order_id":"t"}`, outcome: 2},
		{payload: `{"order_id":"t","amount":1}`, outcome: 2, attempts: "3", delay: "1", traceparent: tp1},
		{payload: `{"order_id":"t","amount":2}`, outcome: 2, attempts: "abc", delay: "x"},
		// Not a fuzzOrder.
		{payload: `{"order_id": `, outcome: 0},
		{payload: ``, outcome: 0, saga: "saga-empty"},
		{payload: `[]`, outcome: 1},
		{payload: `"order"`, outcome: 2},
		{payload: `{"amount":"3"}`, outcome: 0},
		{payload: `{"amount":1e400}`, outcome: 0, attempts: "7"},
		{payload: `{"paid":1}`, outcome: 2, attempts: "1"},
		{payload: `{} {}`, outcome: 0},
		{payload: "{\"order_id\":\"\xff\"}\x00", outcome: 0, event: "\xff", ctype: "text/plain", traceparent: tp1 + "-x"},
		// Count headers out of range. Before headerCount, a negative delayed
		// count made park index Delays[-1]: the panic was recovered, the
		// message nacked and redelivered, for ever. A negative attempts
		// count, or one that overflowed when runs were added, stretched the
		// budget and was reported below the runs made.
		{payload: `{}`, outcome: 2, delay: "-1"},
		{payload: `{}`, outcome: 2, attempts: "9223372036854775807"},
		{payload: `{}`, outcome: 2, attempts: "-3", delay: "-9223372036854775809"},
		{payload: `{`, outcome: 0, attempts: "-1"},
		{payload: `{}`, outcome: 2, attempts: "99999999999999999999", delay: "99999999999999999999"},
	} {
		f.Add([]byte(s.payload), s.outcome, s.event, s.ctype, s.saga, s.attempts, s.delay, s.traceparent, s.tracestate)
	}

	f.Fuzz(func(t *testing.T, payload []byte, outcome uint8,
		event, ctype, saga, attempts, delay, traceparent, tracestate string) {
		if rig == nil || rig.broken.Load() {
			if rig != nil {
				rig.close()
			}
			if rig, err = newFuzzRig(); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			if t.Failed() {
				rig.broken.Store(true)
			}
		})
		in := fuzzInput{payload: bytes.Clone(payload), outcome: fuzzOutcome(outcome%3 + 1), md: map[string]string{}}
		for i, v := range []string{event, ctype, saga, attempts, delay, traceparent, tracestate} {
			in.md[fuzzedKeys[i]] = v
		}
		tc, delta := rig.deliver(t, in)
		in.verify(t, tc, delta)
	})
}

// fuzzRun is one run of the fuzz handler.
type fuzzRun struct {
	seq string
	e   fuzzOrder
	md  map[string]string // the fuzzed keys as the handler saw them
}

// fuzzRig is a router with the fuzz handler on a bundled broker of its
// own, and what the harness watches: the handler's runs, the router's
// observations, the dead-letter queue and the dead-letter announcements.
// The fuzz function uses it from one goroutine at a time.
type fuzzRig struct {
	r         *handlers.Router
	pub       message.Publisher
	runs      chan fuzzRun
	obs       chan handlers.Observation
	letters   <-chan *message.Message
	announced <-chan *message.Message
	dropped   atomic.Int64 // runs or observations the channels had no room for
	broken    atomic.Bool  // an input failed: replace the rig
	seq       int
	stop      func()
}

var fuzzRigs atomic.Int64

func newFuzzRig() (*fuzzRig, error) {
	const service = "fuzz"
	exchange := "bus." + service
	tr, err := transport.Open(fmt.Sprintf("mem://handlers-fuzz-%d", fuzzRigs.Add(1)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &fuzzRig{runs: make(chan fuzzRun, 256), obs: make(chan handlers.Observation, 256)}
	done := make(chan error, 1)
	var started bool // Run was started: stop waits for it
	g.stop = func() {
		cancel()
		if started {
			<-done
		}
		_ = tr.Close()
	}
	fail := func(err error) (*fuzzRig, error) { g.stop(); return nil, err }
	g.r, err = handlers.NewRouter(handlers.Config{Service: service, Exchange: exchange, Retry: &fuzzPolicy,
		ShutdownTimeout: time.Second}, tr, handlers.WithDeadLetterEvents(), handlers.WithObserver(g.observe))
	if err != nil {
		return fail(err)
	}
	if err := handlers.Handle(g.r, "order", handlers.HandlerFunc[fuzzOrder](g.handle)); err != nil {
		return fail(err)
	}
	watch, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "fuzzwatch", Exchange: exchange})
	if err != nil {
		return fail(err)
	}
	if g.announced, err = watch.Subscribe(ctx, handlers.DeadLetteredEvent); err != nil {
		return fail(err)
	}
	if g.pub, err = tr.NewPublisher(bus.PublisherConfig{Exchange: exchange}); err != nil {
		return fail(err)
	}
	started = true
	go func() { done <- g.r.Run(ctx) }()
	select {
	case <-g.r.Running():
	case err := <-done:
		done <- err // for stop
		return fail(fmt.Errorf("router stopped: %w", err))
	}
	dlq, err := tr.NewSubscriber(bus.SubscriberConfig{Passive: true,
		QueueName: func(string) string { return bus.DeadLetterQueue(bus.WorkQueue(service, "order")) }})
	if err == nil {
		g.letters, err = dlq.Subscribe(ctx, "dlq")
	}
	if err != nil {
		return fail(err)
	}
	return g, nil
}

// close stops the router and closes the broker connection.
func (g *fuzzRig) close() { g.stop() }

// handle records the run and returns what the message's outcome header
// asks for.
func (g *fuzzRig) handle(ctx context.Context, e fuzzOrder) error {
	md := handlers.Metadata(ctx)
	run := fuzzRun{seq: md.Get(fuzzSeqKey), e: e, md: map[string]string{}}
	for _, k := range fuzzedKeys {
		run.md[k] = md.Get(k)
	}
	select {
	case g.runs <- run:
	default:
		g.dropped.Add(1)
	}
	switch md.Get(fuzzOutcomeKey) {
	case strconv.Itoa(int(fuzzPermanent)):
		return handlers.Permanent(errFuzzRefused)
	case strconv.Itoa(int(fuzzTransient)):
		return errFuzzUnavailable
	}
	return nil
}

func (g *fuzzRig) observe(_ context.Context, o handlers.Observation) {
	select {
	case g.obs <- o:
	default:
		g.dropped.Add(1)
	}
}

// fuzzTrace is what happened to one input's message.
type fuzzTrace struct {
	id, seq   string
	runs      []fuzzRun
	obs       []handlers.Observation
	letter    *message.Message
	announced *message.Message
	// sentinel is the id of a message published after the input settled;
	// sentinelDone is set when it was handled.
	sentinel     string
	sentinelDone bool
}

// deliver publishes in, waits until it settled (dead-lettered, or handled),
// then until a sentinel published after it was handled: every run and
// observation of in came before. It returns what happened and the change
// in the router's counters.
func (g *fuzzRig) deliver(t *testing.T, in fuzzInput) (*fuzzTrace, handlers.Stats) {
	t.Helper()
	g.seq++
	tc := &fuzzTrace{seq: strconv.Itoa(g.seq)}
	before := g.r.Stats()
	msg := message.NewMessage(watermill.NewUUID(), in.payload)
	for k, v := range in.md {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(fuzzSeqKey, tc.seq)
	msg.Metadata.Set(fuzzOutcomeKey, strconv.Itoa(int(in.outcome)))
	tc.id = msg.UUID
	must(t, g.pub.Publish(fuzzEvent, msg))
	var want fuzzOrder
	if json.Unmarshal(in.payload, &want) != nil || in.outcome != fuzzOK {
		g.collect(t, tc, func() bool { return tc.letter != nil && tc.announced != nil })
	} else {
		g.collect(t, tc, func() bool { return len(tc.obs) > 0 })
	}
	sentinel := message.NewMessage(watermill.NewUUID(), []byte(`{"order_id":"sentinel"}`))
	sentinel.Metadata.Set(fuzzSeqKey, fuzzSentinel)
	tc.sentinel = sentinel.UUID
	must(t, g.pub.Publish(fuzzEvent, sentinel))
	g.collect(t, tc, func() bool { return tc.sentinelDone })
	if n := g.dropped.Load(); n > 0 {
		t.Fatalf("the harness dropped %d runs or observations", n)
	}
	after := g.r.Stats()
	return tc, handlers.Stats{
		Handled: after.Handled - before.Handled, Duplicates: after.Duplicates - before.Duplicates,
		Retried: after.Retried - before.Retried, Delayed: after.Delayed - before.Delayed,
		DeadLettered: after.DeadLettered - before.DeadLettered,
	}
}

// collect records what happens to tc's message until done, failing on
// anything that concerns an earlier message, on a handler that keeps
// running, and after 10 s.
func (g *fuzzRig) collect(t *testing.T, tc *fuzzTrace, done func() bool) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	// A run is sent before its observation, but select may take the
	// observation first: runs still buffered belong to what was observed,
	// so they are read before returning.
	for !done() || len(g.runs) > 0 {
		select {
		case run := <-g.runs:
			switch run.seq {
			case tc.seq:
				tc.runs = append(tc.runs, run)
			case fuzzSentinel:
			default:
				t.Fatalf("message %s ran again after it settled", run.seq)
			}
			if limit := 4 * fuzzPolicy.MaxAttempts; len(tc.runs) > limit {
				t.Fatalf("handler ran %d times (budget %d): retried for ever; %s", len(tc.runs), fuzzPolicy.MaxAttempts, tc)
			}
		case o := <-g.obs:
			switch o.MessageID {
			case tc.id:
				tc.obs = append(tc.obs, o)
			case tc.sentinel:
				tc.sentinelDone = o.Outcome == handlers.Handled
				if !tc.sentinelDone {
					t.Fatalf("sentinel %v: %v", o.Outcome, o.Err)
				}
			default:
				t.Fatalf("observation of an earlier or unknown message: %+v", o)
			}
		case m := <-g.letters:
			m.Ack()
			if m.UUID != tc.id {
				t.Fatalf("dead letter %s (%s) is not the input's message", m.UUID, m.Metadata.Get(envelope.ErrorKey))
			}
			tc.letter = m
		case m := <-g.announced:
			m.Ack()
			tc.announced = m
		case <-timeout.C:
			t.Fatalf("not settled in 10 s: %s", tc)
		}
	}
}

func (tc *fuzzTrace) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d runs, observations:", len(tc.runs))
	for _, o := range tc.obs {
		fmt.Fprintf(&b, " %d(%v)", o.Outcome, o.Err)
	}
	fmt.Fprintf(&b, "; dead letter %t, announced %t", tc.letter != nil, tc.announced != nil)
	return b.String()
}

// verify is the oracle: what should have happened to in, given what did.
func (in fuzzInput) verify(t *testing.T, tc *fuzzTrace, delta handlers.Stats) {
	t.Helper()
	var want fuzzOrder
	decodeErr := json.Unmarshal(in.payload, &want)
	for _, run := range tc.runs {
		if !reflect.DeepEqual(run.e, want) {
			t.Errorf("handler got %#v, json.Unmarshal gives %#v", run.e, want)
		}
		for _, k := range fuzzedKeys {
			if k != envelope.AttemptsKey && k != envelope.DelayedKey && run.md[k] != in.md[k] {
				t.Errorf("handler saw %s = %q, published %q", k, run.md[k], in.md[k])
			}
		}
	}
	wantHandled := int64(1) // the sentinel
	switch {
	case decodeErr != nil:
		if len(tc.runs) != 0 || len(tc.obs) != 1 || tc.obs[0].Outcome != handlers.Parked {
			t.Fatalf("undecodable payload (%v): %s", decodeErr, tc)
		}
		de, ok := errors.AsType[*handlers.DecodeError](tc.obs[0].Err)
		if !ok || de.Event != fuzzEvent || de.Err.Error() != decodeErr.Error() {
			t.Errorf("parked for %v, want a DecodeError of %v", tc.obs[0].Err, decodeErr)
		}
		in.verifyLetter(t, tc, "decode", decodeErr.Error())
	case in.outcome == fuzzOK:
		if len(tc.runs) != 1 || len(tc.obs) != 1 || tc.obs[0].Outcome != handlers.Handled || tc.letter != nil {
			t.Fatalf("decodable payload, handler succeeds: %s", tc)
		}
		wantHandled++
	case in.outcome == fuzzPermanent:
		if len(tc.runs) != 1 || len(tc.obs) != 1 || tc.obs[0].Outcome != handlers.Parked {
			t.Fatalf("decodable payload, permanent failure: %s", tc)
		}
		in.verifyLetter(t, tc, "permanent", errFuzzRefused.Error())
	default:
		in.verifyTransient(t, tc)
		in.verifyLetter(t, tc, "transient", errFuzzUnavailable.Error())
	}
	wantDead := int64(0)
	if tc.letter != nil {
		wantDead = 1
	}
	if delta.Handled != wantHandled || delta.DeadLettered != wantDead || delta.Duplicates != 0 {
		t.Errorf("counters moved by %+v, want %d handled and %d dead-lettered", delta, wantHandled, wantDead)
	}
}

// verifyTransient checks the retries of a handler that always fails
// transiently: some runs, within the budget the attempts header leaves,
// and delayed redeliveries within the policy's, counting the delayed
// header's.
func (in fuzzInput) verifyTransient(t *testing.T, tc *fuzzTrace) {
	t.Helper()
	runs, deliveries := len(tc.runs), len(tc.obs)
	budget := fuzzPolicy.MaxAttempts
	if prior, err := strconv.Atoi(in.md[envelope.AttemptsKey]); err == nil && prior >= 0 {
		budget = max(1, budget-prior)
	}
	redeliveries := len(fuzzPolicy.Delays)
	if done, err := strconv.Atoi(in.md[envelope.DelayedKey]); err == nil && done >= 0 {
		redeliveries = max(0, redeliveries-done)
	}
	if runs < 1 || runs > budget || deliveries < 1 || deliveries > 1+redeliveries {
		t.Fatalf("transient failure: %d runs (at most %d) in %d deliveries (at most %d): %s",
			runs, budget, deliveries, 1+redeliveries, tc)
	}
	for _, o := range tc.obs {
		if o.Outcome != handlers.Parked || !errors.Is(o.Err, errFuzzUnavailable) {
			t.Errorf("delivery %v: %v, want parked for %v", o.Outcome, o.Err, errFuzzUnavailable)
		}
	}
}

// verifyLetter checks the dead letter of in and its announcement: the
// message as published, with the failure's kind and reason, the runs
// counted, and the fuzzed metadata the router does not own untouched.
func (in fuzzInput) verifyLetter(t *testing.T, tc *fuzzTrace, kind, reason string) {
	t.Helper()
	m := tc.letter
	if m == nil {
		t.Fatalf("no dead letter: %s", tc)
	}
	md := m.Metadata
	if !bytes.Equal(m.Payload, in.payload) {
		t.Errorf("dead letter payload %q, published %q", m.Payload, in.payload)
	}
	if got := md.Get(envelope.ErrorKindKey); got != kind {
		t.Errorf("error kind %q, want %q", got, kind)
	}
	if got := md.Get(envelope.ErrorKey); !strings.Contains(got, reason) {
		t.Errorf("error %q does not name %q", got, reason)
	}
	attempts, err := strconv.Atoi(md.Get(envelope.AttemptsKey))
	if err != nil || attempts < max(1, len(tc.runs)) {
		t.Errorf("attempts %q (published %q) do not count the %d runs here",
			md.Get(envelope.AttemptsKey), in.md[envelope.AttemptsKey], max(1, len(tc.runs)))
	}
	if md.Get(envelope.QueueKey) != bus.WorkQueue("fuzz", "order") || md.Get(envelope.HandlerKey) != "order" {
		t.Errorf("dead letter queue %q handler %q", md.Get(envelope.QueueKey), md.Get(envelope.HandlerKey))
	}
	for _, k := range fuzzedKeys {
		if k != envelope.AttemptsKey && k != envelope.DelayedKey && md.Get(k) != in.md[k] {
			t.Errorf("dead letter %s = %q, published %q", k, md.Get(k), in.md[k])
		}
	}
	var d handlers.DeadLettered
	if err := json.Unmarshal(tc.announced.Payload, &d); err != nil {
		t.Fatalf("announcement: %v", err)
	}
	want := handlers.DeadLettered{Service: "fuzz", Handler: "order", Queue: bus.WorkQueue("fuzz", "order"),
		DeadLetterQueue: bus.DeadLetterQueue(bus.WorkQueue("fuzz", "order")), MessageID: tc.id,
		Event: cmp.Or(in.md[envelope.EventKey], fuzzEvent), Error: md.Get(envelope.ErrorKey),
		ErrorKind: kind, Attempts: attempts}
	// The announcement is JSON, which turns invalid UTF-8 into U+FFFD.
	if b, err := json.Marshal(want); err != nil || json.Unmarshal(b, &want) != nil {
		t.Fatalf("announcement %+v does not round-trip: %v", want, err)
	}
	if d != want {
		t.Errorf("announcement %+v\nwant %+v", d, want)
	}
	amd := tc.announced.Metadata
	if got := amd.Get(envelope.SagaIDKey); got != cmp.Or(in.md[envelope.SagaIDKey], tc.announced.UUID) {
		t.Errorf("announcement saga %q, published %q", got, in.md[envelope.SagaIDKey])
	}
	if got := amd.Get(envelope.CausationIDKey); got != tc.id {
		t.Errorf("announcement caused by %q, want %s", got, tc.id)
	}
}
