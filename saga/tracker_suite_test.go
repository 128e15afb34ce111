package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// checkout is the shop's checkout with deadlines: the reservation must
// answer within a minute and the whole saga within ten, and a timeout
// starts the refund (the payment service consumes saga.timed_out).
func checkout() *saga.Saga {
	return &saga.Saga{
		Name: "checkout", Start: "order.placed", Deadline: 10 * time.Minute,
		Steps: []saga.Step{
			{Name: "place", Service: "order", Success: "order.placed",
				Compensation: &saga.Compensation{On: []string{"payment.failed", "payment.refunded"}, Done: "order.cancelled"}},
			{Name: "charge", Service: "payment", Trigger: "order.placed", Success: "payment.captured", Failure: "payment.failed",
				Compensation: &saga.Compensation{On: []string{"inventory.failed", saga.TimedOutEvent}, Done: "payment.refunded"}},
			{Name: "reserve", Service: "inventory", Trigger: "payment.captured", Success: "inventory.reserved", Failure: "inventory.failed",
				NoCompensation: "pivot", Deadline: time.Minute},
			{Name: "confirm", Service: "order", Trigger: "inventory.reserved", Success: "order.confirmed", NoCompensation: "last step"},
		},
		Listeners:   []saga.Listener{{Name: "notify", Service: "notify", On: []string{"order.confirmed", "order.cancelled"}, Emits: []string{"notification.sent"}}},
		Completed:   []string{"order.confirmed"},
		Compensated: []string{"order.cancelled"},
	}
}

// fakeClock is a clock moved by hand. Safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var busSeq atomic.Int64

// rig is one test's bus, database and tracker. Its exchange and queue
// prefix are its own, so that rigs sharing a RabbitMQ keep apart.
type rig struct {
	t        *testing.T
	s        *saga.Saga
	dbURL    string
	busURL   string
	exchange string
	prefix   string
	clock    *fakeClock
	tr       transport.Transport
	pub      message.Publisher
	db       *outbox.DB
	tk       *saga.Tracker
	stop     context.CancelFunc
	done     chan error
	probes   map[string]<-chan *message.Message
}

// newRig makes a rig on the bus at busURL, a private bundled broker when
// empty.
func newRig(t *testing.T, dbURL, busURL string) *rig {
	t.Helper()
	n := busSeq.Add(1)
	if busURL == "" {
		busURL = fmt.Sprintf("mem://saga-tracker-test-%d", n)
	}
	unique := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e9, n)
	r := &rig{t: t, s: checkout(), dbURL: dbURL, clock: newClock(), busURL: busURL,
		exchange: "bus." + unique, prefix: unique + ".", probes: map[string]<-chan *message.Message{}}
	tr, err := transport.Open(r.busURL)
	if err != nil {
		t.Fatal(err)
	}
	r.tr = tr
	if r.pub, err = tr.NewPublisher(bus.PublisherConfig{Exchange: r.exchange}); err != nil {
		t.Fatal(err)
	}
	// Probes see what the tracker emits.
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: r.prefix + "probe", Exchange: r.exchange})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	for _, ev := range []string{saga.TimedOutEvent, saga.FailedEvent} {
		ch, err := sub.Subscribe(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		r.probes[ev] = ch
	}
	r.start()
	t.Cleanup(func() {
		r.halt()
		cancel()
		_ = sub.Close()
		_ = tr.Close()
	})
	return r
}

// start opens the database and runs a tracker.
func (r *rig) start() {
	r.t.Helper()
	db, err := outbox.Open(context.Background(), r.dbURL)
	if err != nil {
		r.t.Fatal(err)
	}
	tk, err := saga.NewTracker(context.Background(), r.s, db, r.tr, saga.TrackerConfig{
		Exchange: r.exchange, QueuePrefix: r.prefix,
		Clock: r.clock, DeadlineInterval: 5 * time.Millisecond, Relay: outbox.RelayConfig{PollInterval: 10 * time.Millisecond}})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.db, r.tk, r.stop, r.done = db, tk, cancel, make(chan error, 1)
	go func() { r.done <- tk.Run(ctx) }()
	select {
	case <-tk.Running():
	case err := <-r.done:
		r.t.Fatal(err)
	}
}

// halt stops the tracker and closes its database: a crash-free restart.
func (r *rig) halt() {
	if r.tk == nil {
		return
	}
	r.stop()
	if err := <-r.done; err != nil {
		r.t.Error(err)
	}
	if err := r.db.Close(); err != nil {
		r.t.Error(err)
	}
	r.tk = nil
}

// msg builds an event of saga id as a service would emit it.
func (r *rig) msg(id, event string, payload any) *message.Message {
	r.t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		r.t.Fatal(err)
	}
	return eventMessage(r.clock, id, event, b)
}

// eventMessage is event of instance id with payload, as a service emits
// it, produced a millisecond after the previous one on clock, so that the
// timeline has an order whatever the arrival order.
func eventMessage(clock *fakeClock, id, event string, payload []byte) *message.Message {
	clock.Advance(time.Millisecond)
	m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), payload)
	m.Metadata.Set(envelope.EventKey, event)
	m.Metadata.Set(envelope.SagaIDKey, id)
	m.Metadata.Set(envelope.CausationIDKey, "cause-of-"+event)
	m.Metadata.Set(envelope.ProducedAtKey, clock.Now().Format(time.RFC3339Nano))
	return m
}

func (r *rig) publish(ms ...*message.Message) {
	r.t.Helper()
	for _, m := range ms {
		if err := r.pub.Publish(m.Metadata.Get(envelope.EventKey), m); err != nil {
			r.t.Fatal(err)
		}
	}
}

func (r *rig) send(id string, events ...string) {
	r.t.Helper()
	for _, ev := range events {
		r.publish(r.msg(id, ev, map[string]string{"order_id": id}))
	}
}

// await polls until instance id is in state with step and has n history
// entries (any number when n < 0).
func (r *rig) await(id string, state saga.State, step string, n int) saga.Instance {
	r.t.Helper()
	var in saga.Instance
	testutil.Eventually(r.t, 30*time.Second, func() error {
		var err error
		in, err = r.tk.Store().Get(context.Background(), "", id)
		switch {
		case err != nil:
			return err
		case in.State != state || in.Step != step || n >= 0 && len(in.History) != n:
			return fmt.Errorf("%s: state %s step %q with %d entries, want %s %q with %d", id, in.State, in.Step, len(in.History), state, step, n)
		}
		return nil
	})
	return in
}

// probe waits for an event the tracker emitted for id.
func (r *rig) probe(event, id string) *message.Message {
	r.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-r.probes[event]:
			m.Ack()
			if m.Metadata.Get(envelope.SagaIDKey) == id {
				return m
			}
		case <-timeout:
			r.t.Fatalf("no %s for %s", event, id)
			return nil
		}
	}
}

// runTrackerSuite is the tracker's conformance suite, run on SQLite and
// (integration) PostgreSQL; newURL returns an empty database's URL, busURL
// is the bus ("" for a private bundled broker per case).
func runTrackerSuite(t *testing.T, busURL string, newURL func(t *testing.T) string) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *rig)
	}{
		{"Happy", testHappy},
		{"Declined", testDeclined},
		{"OutOfStock", testOutOfStock},
		{"TimedOut", testTimedOut},
		{"OutOfOrder", testOutOfOrder},
		{"Duplicates", testDuplicates},
		{"Restart", testRestart},
		{"DeadlineAfterRestart", testDeadlineAfterRestart},
		{"FailedCompensation", testFailedCompensation},
		{"Replicas", testReplicas},
		{"Ignored", testIgnored},
		{"Batch", testBatch},
		{"IdsNotUTF8", testIdsNotUTF8},
		{"TextWithNULs", testTextWithNULs},
		{"SagaIDsNoStoreKeeps", testSagaIDsNoStoreKeeps},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newRig(t, newURL(t), busURL))
		})
	}
}

func testHappy(t *testing.T, r *rig) {
	// The entries keep the trace id of a valid traceparent, and none of
	// a malformed one.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	placed := r.msg("o1", "order.placed", map[string]string{"order_id": "o1"})
	placed.Metadata.Set(envelope.TraceParentKey, "00-"+traceID+"-00f067aa0ba902b7-01")
	r.publish(placed)
	r.await("o1", saga.Running, "charge", 1)
	captured := r.msg("o1", "payment.captured", map[string]string{"order_id": "o1"})
	captured.Metadata.Set(envelope.TraceParentKey, "00-not-a-trace-01")
	r.publish(captured)
	r.send("o1", "inventory.reserved")
	r.await("o1", saga.Running, "confirm", 3)
	r.send("o1", "order.confirmed", "notification.sent")
	in := r.await("o1", saga.Completed, "confirm", 5)
	want := []string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent"}
	for i, e := range in.History {
		if e.Event != want[i] || e.Kind != saga.EventEntry || e.MessageID == "" || e.CausationID != "cause-of-"+want[i] {
			t.Errorf("entry %d = %+v, want event %s with its ids", i, e, want[i])
		}
	}
	if in.History[0].TraceID != traceID || in.History[1].TraceID != "" {
		t.Errorf("trace ids = %q, %q; want %q and none", in.History[0].TraceID, in.History[1].TraceID, traceID)
	}
	if in.History[0].Meaning != "step succeeded place; saga started; step started charge" {
		t.Errorf("meaning = %q", in.History[0].Meaning)
	}
	if in.DeadlineAt != nil {
		t.Errorf("completed instance has a deadline %v", in.DeadlineAt)
	}
}

func testDeclined(t *testing.T, r *rig) {
	r.send("o2", "order.placed")
	r.publish(r.msg("o2", "payment.failed", map[string]string{"reason": "card declined"}))
	in := r.await("o2", saga.Compensating, "place", 2)
	if in.Reason != "card declined" || in.History[1].Error != "card declined" {
		t.Errorf("reason = %q, entry error %q: want the failure's reason", in.Reason, in.History[1].Error)
	}
	r.send("o2", "order.cancelled")
	r.await("o2", saga.Compensated, "place", 3)
}

func testOutOfStock(t *testing.T, r *rig) {
	r.send("o3", "order.placed", "payment.captured")
	r.publish(r.msg("o3", "inventory.failed", map[string]string{"reason": "out of stock: pear"}))
	r.await("o3", saga.Compensating, "charge", 3)
	r.send("o3", "payment.refunded")
	r.await("o3", saga.Compensating, "place", 4)
	r.send("o3", "order.cancelled")
	in := r.await("o3", saga.Compensated, "place", 5)
	if in.Reason != "" {
		t.Errorf("compensated instance keeps reason %q", in.Reason)
	}
}

func testTimedOut(t *testing.T, r *rig) {
	r.send("o4", "order.placed", "payment.captured")
	in := r.await("o4", saga.Running, "reserve", 2)
	if in.DeadlineAt == nil || in.Deadline != "step reserve" || !in.DeadlineAt.Equal(r.clock.Now().Add(time.Minute)) {
		t.Fatalf("deadline = %v %q, want the reservation's minute", in.DeadlineAt, in.Deadline)
	}
	if n, err := r.tk.CheckDeadlines(context.Background()); err != nil || n != 0 {
		t.Fatalf("CheckDeadlines before the deadline = %d, %v", n, err)
	}
	r.clock.Advance(time.Minute)
	in = r.await("o4", saga.TimedOut, "charge", 3)
	e := in.History[2]
	if e.Kind != saga.TimedOutEntry || e.Event != saga.TimedOutEvent || e.MessageID == "" {
		t.Errorf("timeout entry = %+v", e)
	}
	m := r.probe(saga.TimedOutEvent, "o4")
	if m.UUID != e.MessageID {
		t.Errorf("emitted %s, recorded %s", m.UUID, e.MessageID)
	}
	var to saga.Timeout
	if err := json.Unmarshal(m.Payload, &to); err != nil || to.Deadline != "step reserve" || to.Step != "reserve" {
		t.Errorf("saga.timed_out payload %+v (%v)", to, err)
	}
	// The payment service refunds on saga.timed_out; the order cancels.
	r.send("o4", "payment.refunded")
	r.await("o4", saga.TimedOut, "place", 4)
	r.send("o4", "order.cancelled")
	r.await("o4", saga.Compensated, "place", 5)
	if n, err := r.tk.CheckDeadlines(context.Background()); err != nil || n != 0 {
		t.Errorf("CheckDeadlines after the end = %d, %v", n, err)
	}
}

func testOutOfOrder(t *testing.T, r *rig) {
	// The capture is recorded before the order: the reservation has
	// started, whatever came first.
	placed, captured := r.msg("o5", "order.placed", nil), r.msg("o5", "payment.captured", nil)
	r.publish(captured)
	in := r.await("o5", saga.Running, "reserve", 1)
	r.publish(placed)
	in = r.await("o5", saga.Running, "reserve", 2)
	if want, _ := time.Parse(time.RFC3339Nano, placed.Metadata.Get(envelope.ProducedAtKey)); !in.StartedAt.Equal(want) {
		t.Errorf("started at %v, want order.placed's time", in.StartedAt)
	}
	// The ending first, then the failure and the refund: compensated.
	r.send("o5", "order.cancelled")
	r.await("o5", saga.Compensated, "place", 3)
	r.send("o5", "payment.refunded", "inventory.failed")
	r.await("o5", saga.Compensated, "place", 5)
	// The same events in reverse order give the same status.
	evs := []string{"order.cancelled", "payment.refunded", "inventory.failed", "payment.captured", "order.placed"}
	r.send("o6", evs...)
	r.await("o6", saga.Compensated, "place", 5)
}

func testDuplicates(t *testing.T, r *rig) {
	placed := r.msg("o7", "order.placed", nil)
	r.publish(placed, placed)
	captured := r.msg("o7", "payment.captured", nil)
	r.publish(captured)
	r.await("o7", saga.Running, "reserve", 2)
	// A redelivery after the state moved on changes nothing either.
	r.send("o7", "inventory.reserved")
	r.await("o7", saga.Running, "confirm", 3)
	r.publish(captured, placed)
	r.send("o7", "order.confirmed")
	in := r.await("o7", saga.Completed, "confirm", 4)
	seen := map[string]bool{}
	for _, e := range in.History {
		if seen[e.MessageID] {
			t.Errorf("message %s recorded twice", e.MessageID)
		}
		seen[e.MessageID] = true
	}
}

func testRestart(t *testing.T, r *rig) {
	for i := range 20 {
		r.send(fmt.Sprintf("r%d", i), "order.placed", "payment.captured")
	}
	r.halt()
	// Events keep arriving while the tracker is down; they wait in its
	// queue.
	for i := range 20 {
		r.send(fmt.Sprintf("r%d", i), "inventory.reserved", "order.confirmed")
	}
	r.start()
	for i := range 20 {
		r.await(fmt.Sprintf("r%d", i), saga.Completed, "confirm", 4)
	}
}

func testDeadlineAfterRestart(t *testing.T, r *rig) {
	r.send("o8", "order.placed", "payment.captured")
	r.await("o8", saga.Running, "reserve", 2)
	r.halt()
	r.clock.Advance(2 * time.Minute)
	r.start()
	r.await("o8", saga.TimedOut, "charge", 3)
	r.probe(saga.TimedOutEvent, "o8")
	// The saga deadline (ten minutes) counts from order.placed's
	// production time, also across a restart.
	r.send("o9", "order.placed")
	r.await("o9", saga.Running, "charge", 1)
	r.halt()
	r.clock.Advance(10 * time.Minute)
	r.start()
	in := r.await("o9", saga.TimedOut, "charge", 2)
	if in.Reason == "" || in.History[1].Error == "" {
		t.Errorf("timeout without its reason: %+v", in)
	}
}

// deadLetter is the announcement a handlers router makes WithDeadLetterEvents.
func (r *rig) deadLetter(id, service, event, errText string) *message.Message {
	dead := r.msg(id, event, nil)
	m := r.msg(id, handlers.DeadLetteredEvent, handlers.DeadLettered{Service: r.prefix + service, Handler: "h", Queue: service + ".h",
		DeadLetterQueue: service + ".h.dlq", Event: event, MessageID: dead.UUID, Error: errText, ErrorKind: "permanent", Attempts: 3})
	m.Metadata.Set(envelope.CausationIDKey, dead.UUID)
	return m
}

func testFailedCompensation(t *testing.T, r *rig) {
	ctx := context.Background()
	st := r.tk.Store()
	r.send("f1", "order.placed", "payment.captured", "inventory.failed")
	r.await("f1", saga.Compensating, "charge", 3)
	if _, err := st.Act(ctx, "", "f1", saga.Resume, "ops", "", r.clock.Now(), nil); !errors.Is(err, saga.ErrNoRedriver) {
		t.Errorf("resume without a redriver: %v", err)
	}
	var replayed []saga.Entry
	rd := func(_ context.Context, e saga.Entry, actor string, _ time.Time) error {
		replayed = append(replayed, e)
		return nil
	}
	if _, err := st.Act(ctx, "", "f1", saga.Resume, "ops", "", r.clock.Now(), rd); !errors.Is(err, saga.ErrNotParked) {
		t.Errorf("resume of a compensating instance: %v, want ErrNotParked", err)
	}
	dl := r.deadLetter("f1", "payment", "inventory.failed", "refund gateway down")
	r.publish(dl)
	in := r.await("f1", saga.Failed, "charge", 4)
	if in.Reason != "refund gateway down" || in.History[3].Kind != saga.CompensationDeadLetter || in.History[3].Queue != "payment.h.dlq" {
		t.Errorf("parked instance = %+v", in)
	}
	alert := r.probe(saga.FailedEvent, "f1")
	var f saga.Failure
	if err := json.Unmarshal(alert.Payload, &f); err != nil || f.Step != "charge" || f.Reason != "refund gateway down" {
		t.Errorf("saga.failed payload %+v (%v)", f, err)
	}
	// Resume replays the dead letter and records who did it.
	if _, err := st.Act(ctx, "", "f1", saga.Resume, " ", "", r.clock.Now(), rd); !errors.Is(err, saga.ErrNoActor) {
		t.Errorf("resume without actor: %v", err)
	}
	in, err := st.Act(ctx, "", "f1", saga.Resume, "alice", "gateway back", r.clock.Now(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != saga.Compensating || len(replayed) != 1 || replayed[0].CausationID != dl.Metadata.Get(envelope.CausationIDKey) {
		t.Fatalf("after resume: state %s, replayed %+v", in.State, replayed)
	}
	last := in.History[len(in.History)-1]
	if last.Kind != saga.ResumeEntry || last.Actor != "alice" || last.Error != "gateway back" || !last.At.Equal(r.clock.Now()) {
		t.Errorf("resume entry = %+v", last)
	}
	// It fails again: parked again, a second alert; skip it.
	r.publish(r.deadLetter("f1", "payment", "inventory.failed", "refund gateway down again"))
	r.await("f1", saga.Failed, "charge", 6)
	r.probe(saga.FailedEvent, "f1")
	in, err = st.Act(ctx, "", "f1", saga.Skip, "bob", "refunded by hand", r.clock.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != saga.Compensating || in.Step != "charge" || in.History[len(in.History)-1].Actor != "bob" {
		t.Errorf("after skip: %+v", in)
	}
	// Nothing cancels the order by itself: the operator resolves.
	in, err = st.Act(ctx, "", "f1", saga.Resolve, "carol", "order cancelled by phone", r.clock.Now(), nil)
	if err != nil || in.State != saga.Resolved {
		t.Fatalf("resolve: %v, %+v", err, in)
	}
	if _, err := st.Act(ctx, "", "f1", saga.Resolve, "carol", "", r.clock.Now(), nil); !errors.Is(err, saga.ErrEnded) {
		t.Errorf("resolve twice: %v, want ErrEnded", err)
	}
	// A dead letter of a forward step parks it too; its event settles it.
	r.send("f2", "order.placed")
	r.publish(r.deadLetter("f2", "payment", "order.placed", "charge crashed"))
	r.await("f2", saga.Failed, "charge", 2)
	r.send("f2", "payment.captured")
	r.await("f2", saga.Running, "reserve", 3)
	if _, err := st.Act(ctx, "", "nope", saga.Resolve, "carol", "", r.clock.Now(), nil); !errors.Is(err, saga.ErrNotFound) {
		t.Errorf("unknown instance: %v", err)
	}
}

func testReplicas(t *testing.T, r *rig) {
	// A second tracker on the same database and queue: they share the work.
	db, err := outbox.Open(context.Background(), r.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tk2, err := saga.NewTracker(context.Background(), r.s, db, r.tr, saga.TrackerConfig{Exchange: r.exchange, QueuePrefix: r.prefix, Clock: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tk2.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-tk2.Running()
	const n = 30
	for i := range n {
		r.send(fmt.Sprintf("p%d", i), "order.placed", "payment.captured", "inventory.reserved", "order.confirmed")
	}
	for i := range n {
		r.await(fmt.Sprintf("p%d", i), saga.Completed, "confirm", 4)
	}
	ins, err := r.tk.Store().List(context.Background(), saga.Query{State: saga.Completed, Limit: 1000})
	if err != nil || len(ins) != n {
		t.Errorf("List(completed) = %d instances, %v; want %d", len(ins), err, n)
	}
}

func testIgnored(t *testing.T, r *rig) {
	// No saga id, a listener's dead letter, another saga's timeout: nothing.
	m := r.msg("", "order.placed", nil)
	m.Metadata.Set(envelope.SagaIDKey, "")
	r.publish(m, r.deadLetter("i1", "notify", "order.confirmed", "smtp down"),
		r.msg("i1", saga.TimedOutEvent, saga.Timeout{Saga: "another", ID: "i1", Deadline: "saga"}))
	r.send("i1", "order.placed")
	r.await("i1", saga.Running, "charge", 1)
	ins, err := r.tk.Store().List(context.Background(), saga.Query{})
	if err != nil || len(ins) != 1 {
		t.Errorf("List = %+v, %v; want only i1", ins, err)
	}
	if _, err := r.tk.Store().List(context.Background(), saga.Query{State: "lost"}); err == nil {
		t.Error("List with an unknown state: no error")
	}
}

// testBatch records several instances' events, a redelivery and a message
// of no saga in one HandleBatch call, as Run does with the messages its
// consumers hold at once; a batch that fails records nothing.
func testBatch(t *testing.T, r *rig) {
	ctx := context.Background()
	placed := r.msg("b1", "order.placed", nil)
	noSaga := r.msg("b1", "order.placed", nil)
	noSaga.Metadata.Set(envelope.SagaIDKey, "")
	batch := []*message.Message{
		placed, r.msg("b2", "order.placed", nil), r.msg("b1", "payment.captured", nil), placed, noSaga,
		r.msg("b2", "payment.failed", map[string]string{"reason": "declined"}), r.msg("b1", "inventory.reserved", nil),
	}
	if err := r.tk.HandleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	r.await("b1", saga.Running, "confirm", 3)
	in := r.await("b2", saga.Compensating, "place", 2)
	if in.Reason != "declined" {
		t.Errorf("b2's reason %q, want declined", in.Reason)
	}
	// A later batch: a redelivery of an event recorded before changes
	// nothing; more instances than one statement writes (32) are all
	// recorded, with their updated_at.
	later := []*message.Message{placed, r.msg("b1", "order.confirmed", nil)}
	for i := range 40 {
		later = append(later, r.msg(fmt.Sprintf("c%d", i), "order.placed", nil))
	}
	if err := r.tk.HandleBatch(ctx, later); err != nil {
		t.Fatal(err)
	}
	in = r.await("b1", saga.Completed, "confirm", 4)
	if got := in.History[3].Event; got != "order.confirmed" {
		t.Errorf("b1's last entry is %s, want order.confirmed", got)
	}
	for i := range 40 {
		in := r.await(fmt.Sprintf("c%d", i), saga.Running, "charge", 1)
		if !in.UpdatedAt.Equal(in.History[0].RecordedAt) {
			t.Errorf("%s updated at %v, want its entry's record time %v", in.ID, in.UpdatedAt, in.History[0].RecordedAt)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.tk.HandleBatch(cancelled, []*message.Message{r.msg("b3", "order.placed", nil), r.msg("b4", "order.placed", nil)}); err == nil {
		t.Fatal("a batch in a cancelled context was recorded")
	}
	for _, id := range []string{"b3", "b4"} {
		if in, err := r.tk.Store().Get(ctx, "", id); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("%s after a failed batch: %+v, %v; want no instance", id, in, err)
		}
	}
}

// testIdsNotUTF8: a message whose id and causation id are not UTF-8 (the
// bus carries any bytes) is recorded once, with U+FFFD for each run of bad
// bytes, however often it comes; PostgreSQL refused such text, and every
// redelivery failed again.
func testIdsNotUTF8(t *testing.T, r *rig) {
	ctx := context.Background()
	m := r.msg("u1", "order.placed", nil)
	m.UUID = "m-\xff\xfe"
	m.Metadata.Set(envelope.CausationIDKey, "c-\xc3")
	for i := range 2 {
		if err := r.tk.Handle(ctx, m); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	in := r.await("u1", saga.Running, "charge", 1)
	if e := in.History[0]; e.MessageID != "m-\uFFFD" || e.CausationID != "c-\uFFFD" {
		t.Fatalf("recorded message %q caused by %q", e.MessageID, e.CausationID)
	}
}

// testTextWithNULs: ids and a reason holding a NUL (valid UTF-8, which
// PostgreSQL still refuses) are recorded with U+FFFD in its place, once,
// however often the message comes, and do not hold up the messages
// recorded with them in one batch.
func testTextWithNULs(t *testing.T, r *rig) {
	ctx := context.Background()
	m := r.msg("n1", "order.placed", nil)
	m.UUID = "m-\x00"
	m.Metadata.Set(envelope.CausationIDKey, "c-\x00")
	other := r.msg("n2", "order.placed", nil)
	for i := range 2 {
		if err := r.tk.HandleBatch(ctx, []*message.Message{m, other}); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	in := r.await("n1", saga.Running, "charge", 1)
	if e := in.History[0]; e.MessageID != "m-\uFFFD" || e.CausationID != "c-\uFFFD" {
		t.Fatalf("recorded message %q caused by %q", e.MessageID, e.CausationID)
	}
	r.await("n2", saga.Running, "charge", 1)
}

// testSagaIDsNoStoreKeeps: a message whose saga id holds a NUL or is over
// MaxInstanceID bytes names no instance: it is not recorded, and the
// batch it came in is recorded without it. An id of MaxInstanceID bytes
// is recorded.
func testSagaIDsNoStoreKeeps(t *testing.T, r *rig) {
	ctx := context.Background()
	long := strings.Repeat("i", saga.MaxInstanceID+1)
	batch := []*message.Message{r.msg("nul\x00id", "order.placed", nil), r.msg(long, "order.placed", nil), r.msg("k1", "order.placed", nil)}
	if err := r.tk.HandleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	r.await("k1", saga.Running, "charge", 1)
	for _, id := range []string{"nul\x00id", long} {
		if in, err := r.tk.Store().Get(ctx, "", id); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("saga id of %d bytes: %+v, %v; want no instance", len(id), in.ID, err)
		}
	}
	longest := strings.Repeat("i", saga.MaxInstanceID)
	if err := r.tk.Handle(ctx, r.msg(longest, "order.placed", nil)); err != nil {
		t.Fatalf("a saga id of %d bytes: %v", len(longest), err)
	}
	r.await(longest, saga.Running, "charge", 1)
}
