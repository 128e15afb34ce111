package saga_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/envelope"
)

// FuzzTrackerMessage: the tracker records messages it consumes from the
// bus, untrusted bytes: a payload and the metadata it reads (event, saga
// id, W3C traceparent, causation id, production time). Each input is one
// such message, handed to a real tracker of the shop's checkout on SQLite
// after the well-formed events named in prior (comma-separated) of the
// same instance. The tracker either records the message — one entry with
// its message id, however often it is delivered, and the instance's row
// says what Derive says of the history — or skips it, as it does a message
// without a saga id (or with one that is not UTF-8); a declared event of
// the saga with a saga id is always recorded. An entry carries a trace
// id only when the traceparent is valid W3C, and then it is that one's. After each input the tracker
// records a well-formed order.placed of another instance. An input costs
// milliseconds (SQLite is behind it): for a long run, pass
// -fuzzminimizetime 0, or the minimizer holds a worker a minute on each
// input that finds new coverage.
func FuzzTrackerMessage(f *testing.F) {
	// One database and tracker per fuzz worker (each worker process runs
	// this function once); each input starts from an empty instance.
	r := newTrackerFuzzRig(f)
	for _, s := range trackerFuzzSeeds(f) {
		f.Add(s.payload, s.id, s.event, s.sagaID, s.traceparent, s.causation, s.producedAt, s.prior)
	}
	// Found by fuzzing: a saga id that is not UTF-8 was recorded, but its
	// history never read back (the store sends SQLite the ids as JSON,
	// which replaces the byte), so the redelivery failed on the history's
	// unique key and would be requeued for ever.
	f.Add([]byte(`{"order_id":"o-1"}`), "019a2f3c-8b1e-7c4d-9e5f-0a1b2c3d4e5f", "order.placed", "019a2f3c-8b1e\xad7c4d-9e5f-0a1b2c3d4e5f",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "2026-12-01T11:59:59.5Z", "")
	// Found by fuzzing: a production time before 1677 was recorded as
	// another (its Unix nanoseconds overflowed an int64): year 26 as 1780.
	f.Add([]byte(`{"order_id":"o-1"}`), "019a2f3c-8b1e-7c4d-9e5f-0a1b2c3d4e5f", "order.placed", "019a2f3c-8b1e-7c4d-9e5f-0a1b2c3d4e5f",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "0026-12-01T11:59:59.5Z", "")
	f.Fuzz(func(t *testing.T, payload []byte, id, event, sagaID, traceparent, causation, producedAt, prior string) {
		r.reset(t, sagaID, trackerFuzzAfterSaga)
		r.prior(t, sagaID, prior)
		msg := trackerFuzzMessage(id, payload, map[string]string{
			envelope.EventKey: event, envelope.SagaIDKey: sagaID, envelope.TraceParentKey: traceparent,
			envelope.CausationIDKey: causation, envelope.ProducedAtKey: producedAt,
		})
		r.handle(t, msg, r.declared(sagaID, event))
		// The tracker keeps working.
		after := trackerFuzzMessage(trackerFuzzAfterSaga, []byte(`{"order_id":"after"}`), map[string]string{
			envelope.EventKey: "order.placed", envelope.SagaIDKey: trackerFuzzAfterSaga,
			envelope.ProducedAtKey: r.clock.Now().Format(time.RFC3339Nano),
		})
		h := r.handle(t, after, true)
		if st := saga.Derive(r.s, h); sagaID != trackerFuzzAfterSaga && (len(h) != 1 || st.State != saga.Running || st.Step != "charge") {
			t.Fatalf("well-formed order.placed after the input: %+v, status %+v; want running at charge", h, st)
		}
	})
}

// trackerFuzzAfterSaga is the instance (and message id) of the
// well-formed order.placed handled after each input.
const trackerFuzzAfterSaga = "trackerfuzz-after"

// trackerFuzzRig is a fuzz worker's tracker of the shop's checkout.
type trackerFuzzRig struct {
	s     *saga.Saga
	clock *fakeClock
	db    *outbox.DB
	tk    *saga.Tracker
}

// openFuzzDB opens a tracker database for a fuzz worker, closed with it.
func openFuzzDB(f *testing.F) *outbox.DB {
	f.Helper()
	db, err := outbox.Open(context.Background(), "sqlite:"+f.TempDir()+"/tracker.db")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = db.Close() })
	return db
}

func newTrackerFuzzRig(f *testing.F) *trackerFuzzRig {
	f.Helper()
	ctx := context.Background()
	db := openFuzzDB(f)
	// Handle does not touch the bus; the tracker needs one all the same.
	tr, err := transport.Open(fmt.Sprintf("mem://saga-tracker-fuzz-%d", busSeq.Add(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = tr.Close() })
	r := &trackerFuzzRig{s: &shop.CheckoutSaga, clock: newClock(), db: db}
	r.tk, err = saga.NewTracker(ctx, r.s, db, tr, saga.TrackerConfig{Clock: r.clock})
	if err != nil {
		f.Fatal(err)
	}
	return r
}

// reset deletes instances a and b, so that an input does not depend on
// the ones before it. It writes the tracker's tables (migrate.go)
// directly: the store has no way to forget an instance.
func (r *trackerFuzzRig) reset(t *testing.T, a, b string) {
	t.Helper()
	for _, table := range []string{"troupe_saga_history", "troupe_sagas"} {
		if _, err := r.db.SQL().ExecContext(context.Background(), `DELETE FROM `+table+` WHERE saga = ? AND id IN (?, ?)`, r.s.Name, a, b); err != nil {
			t.Fatal(err)
		}
	}
}

// trackerFuzzInstance reports whether a saga id names an instance: the
// tracker skips a message without one, or with one no store keeps (not
// UTF-8, a NUL, over saga.MaxInstanceID bytes).
func trackerFuzzInstance(id string) bool {
	return id != "" && len(id) <= saga.MaxInstanceID && utf8.ValidString(id) && !strings.Contains(id, "\x00")
}

// keptAs is how the tracker keeps an id from the bus: U+FFFD for each run
// of bytes that is not UTF-8, and for each NUL (PostgreSQL refuses both).
func keptAs(id string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(id, "\uFFFD"), "\x00", "\uFFFD")
}

// declared reports whether the tracker must record an event of instance
// id: one the saga declares, but for saga.timed_out (recorded only when
// the payload names this saga) and dead-letter announcements (only those
// of a step's or compensation's message).
func (r *trackerFuzzRig) declared(id, event string) bool {
	return trackerFuzzInstance(id) && event != saga.TimedOutEvent && event != handlers.DeadLetteredEvent &&
		slices.Contains(r.s.Events(), event)
}

// prior records the well-formed events of instance id named in events
// (comma-separated, at most 8), in one batch, produced before the
// fuzzed message.
func (r *trackerFuzzRig) prior(t *testing.T, id, events string) {
	t.Helper()
	if events == "" {
		return
	}
	names := strings.Split(events, ",")
	names = names[:min(len(names), 8)]
	msgs := make([]*message.Message, len(names))
	for i, ev := range names {
		msgs[i] = trackerFuzzMessage(fmt.Sprintf("trackerfuzz-prior-%d", i), []byte(`{"order_id":"prior"}`), map[string]string{
			envelope.EventKey: ev, envelope.SagaIDKey: id,
			envelope.ProducedAtKey: r.clock.Now().Add(time.Duration(i-len(names)) * time.Second).Format(time.RFC3339Nano),
		})
	}
	if err := r.tk.HandleBatch(context.Background(), msgs); err != nil {
		t.Fatalf("well-formed events %q of instance %q: %v", events, id, err)
	}
	h := r.history(t, id)
	for _, m := range msgs {
		if n := trackerFuzzCount(h, m.UUID); n > 1 || n == 0 && r.declared(id, m.Metadata.Get(envelope.EventKey)) {
			t.Fatalf("well-formed %s of instance %q recorded %d times", m.Metadata.Get(envelope.EventKey), id, n)
		}
	}
	r.checkRow(t, id, h)
}

// handle delivers msg twice (a redelivery follows) and checks what the
// tracker recorded; must says it has to record msg. The database is
// local and healthy, so an error is a failure: the tracker would requeue
// the message for ever. It returns the instance's history.
func (r *trackerFuzzRig) handle(t *testing.T, msg *message.Message, must bool) []saga.Entry {
	t.Helper()
	ctx := context.Background()
	id := msg.Metadata.Get(envelope.SagaIDKey)
	before := r.history(t, id)
	for i := range 2 {
		if err := r.tk.Handle(ctx, msg); err != nil {
			t.Fatalf("delivery %d of message %q of instance %q: %v", i+1, msg.UUID, id, err)
		}
	}
	after := r.history(t, id)
	if !trackerFuzzInstance(id) && len(after) > 0 {
		t.Fatalf("message with saga id %q recorded: %+v", id, after)
	}
	mid := keptAs(msg.UUID) // as the tracker keeps it
	n, was := trackerFuzzCount(after, mid), trackerFuzzCount(before, mid)
	switch {
	case n > 1:
		t.Fatalf("message %q recorded %d times in %+v", msg.UUID, n, after)
	case must && n == 0:
		t.Fatalf("event %s of instance %q not recorded", msg.Metadata.Get(envelope.EventKey), id)
	case len(after) != len(before)+n-was:
		t.Fatalf("history went from %d to %d entries for one message", len(before), len(after))
	}
	for _, e := range before {
		if i := slices.IndexFunc(after, func(a saga.Entry) bool { return a.Seq == e.Seq }); i < 0 || !reflect.DeepEqual(after[i], e) {
			t.Fatalf("entry %+v changed or lost", e)
		}
	}
	if i := slices.IndexFunc(after, func(e saga.Entry) bool { return e.MessageID == mid }); i >= 0 && was == 0 {
		r.checkEntry(t, msg, after[i])
	}
	r.checkRow(t, id, after)
	return after
}

// checkEntry checks the entry recorded for msg against the message.
func (r *trackerFuzzRig) checkEntry(t *testing.T, msg *message.Message, e saga.Entry) {
	t.Helper()
	md := msg.Metadata
	tp := md.Get(envelope.TraceParentKey)
	want, valid, plain := trackerFuzzTraceParent(tp)
	if e.TraceID != "" && (!valid || e.TraceID != want) || plain && e.TraceID != want {
		t.Fatalf("traceparent %q recorded as trace id %q", tp, e.TraceID)
	}
	if md.Get(envelope.EventKey) == handlers.DeadLetteredEvent {
		if e.Kind != saga.StepDeadLetter && e.Kind != saga.CompensationDeadLetter || e.Step == "" {
			t.Fatalf("dead letter recorded as %+v", e)
		}
		return
	}
	if e.Kind != saga.EventEntry || e.Event != md.Get(envelope.EventKey) || e.CausationID != keptAs(md.Get(envelope.CausationIDKey)) {
		t.Fatalf("message %+v recorded as %+v", md, e)
	}
	// A production time the store cannot keep (Unix nanoseconds in an
	// int64) is as unreadable as a malformed one: the tracker's clock.
	at, err := time.Parse(time.RFC3339Nano, md.Get(envelope.ProducedAtKey))
	if err != nil || at.Before(trackerFuzzMinTime) || at.After(trackerFuzzMaxTime) {
		at = r.clock.Now()
	}
	if !e.At.Equal(at) {
		t.Fatalf("produced at %q recorded at %v", md.Get(envelope.ProducedAtKey), e.At)
	}
}

// checkRow checks that instance id's row, as recorded (Store.Get derives
// the status again, so it reads the table), is what Derive says of its
// history, and that there is no row without a history.
func (r *trackerFuzzRig) checkRow(t *testing.T, id string, history []saga.Entry) {
	t.Helper()
	var got saga.Status
	var state string
	var started int64
	var deadlineAt sql.NullInt64
	err := r.db.QueryRow(context.Background(), `SELECT state, step, reason, started_at, deadline_at, deadline
		FROM troupe_sagas WHERE saga = ? AND id = ?`, r.s.Name, id).Scan(&state, &got.Step, &got.Reason, &started, &deadlineAt, &got.Deadline)
	switch {
	case errors.Is(err, sql.ErrNoRows) && len(history) == 0:
		return
	case err != nil:
		t.Fatalf("instance %q with %d entries: %v", id, len(history), err)
	case len(history) == 0:
		t.Fatalf("instance %q has a row (%s) and no history", id, state)
	}
	got.State, got.StartedAt = saga.State(state), time.Unix(0, started).UTC()
	if deadlineAt.Valid {
		got.DeadlineAt = time.Unix(0, deadlineAt.Int64).UTC()
	}
	// The store keeps a time beyond Unix nanoseconds (a deadline after
	// 2262) as the nearest one it can.
	want := saga.Derive(r.s, history)
	want.StartedAt, want.DeadlineAt = trackerFuzzKept(want.StartedAt), trackerFuzzKept(want.DeadlineAt)
	if got.State != want.State || got.Step != want.Step || got.Reason != want.Reason || !got.StartedAt.Equal(want.StartedAt) ||
		!got.DeadlineAt.Equal(want.DeadlineAt) || got.Deadline != want.Deadline {
		t.Fatalf("instance %q recorded as %+v, its history %+v derives %+v", id, got, history, want)
	}
}

// history is instance id's history; none when there is no such instance.
func (r *trackerFuzzRig) history(t *testing.T, id string) []saga.Entry {
	t.Helper()
	in, err := r.tk.Store().Get(context.Background(), r.s.Name, id)
	if errors.Is(err, saga.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("instance %q: %v", id, err)
	}
	return in.History
}

// trackerFuzzMinTime and trackerFuzzMaxTime bound the times the store
// keeps: Unix nanoseconds in an int64.
var trackerFuzzMinTime, trackerFuzzMaxTime = time.Unix(0, math.MinInt64).UTC(), time.Unix(0, math.MaxInt64).UTC()

// trackerFuzzKept is t as the store keeps it, the nearest time within
// bounds; the zero time (no deadline) stays zero.
func trackerFuzzKept(t time.Time) time.Time {
	switch {
	case t.IsZero():
		return t
	case t.Before(trackerFuzzMinTime):
		return trackerFuzzMinTime
	case t.After(trackerFuzzMaxTime):
		return trackerFuzzMaxTime
	}
	return t
}

// trackerFuzzCount is how many entries of h record message messageID.
func trackerFuzzCount(h []saga.Entry, messageID string) int {
	n := 0
	for _, e := range h {
		if e.MessageID == messageID {
			n++
		}
	}
	return n
}

// trackerFuzzMessage builds a message as the tracker consumes it.
func trackerFuzzMessage(id string, payload []byte, md map[string]string) *message.Message {
	m := message.NewMessage(id, payload)
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	return m
}

// trackerFuzzTraceParent parses a traceparent header as W3C Trace Context
// (https://www.w3.org/TR/trace-context/#traceparent-header) says: it
// returns its trace id and whether it is valid — lower-case hex fields,
// version not ff, trace id and parent id not all zeros, exactly 55
// characters in version 00 and at least 55 followed by "-" in a later
// one — and whether it is a plain version 00 header (flags sampled and
// random at most), which a parser must take.
func trackerFuzzTraceParent(tp string) (traceID string, valid, plain bool) {
	hex := func(s string) bool {
		return s != "" && strings.Trim(s, "0123456789abcdef") == ""
	}
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return "", false, false
	}
	version, id, parent, flags := tp[:2], tp[3:35], tp[36:52], tp[53:55]
	switch {
	case !hex(version) || !hex(id) || !hex(parent) || !hex(flags), version == "ff",
		strings.Trim(id, "0") == "", strings.Trim(parent, "0") == "",
		version == "00" && len(tp) != 55, len(tp) > 55 && tp[55] != '-':
		return "", false, false
	}
	return id, true, version == "00" && flags <= "03"
}

// trackerFuzzSeed is a message as the checkout's services emit it, or a
// malformed one.
type trackerFuzzSeed struct {
	payload                                                      []byte
	id, event, sagaID, traceparent, causation, producedAt, prior string
}

// trackerFuzzSeeds are the checkout's events as its services emit them
// (the saga id is order.placed's message id), each after the events that
// lead to it, and malformed variants.
func trackerFuzzSeeds(f *testing.F) []trackerFuzzSeed {
	f.Helper()
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	const (
		order = "019a2f3c-8b1e-7c4d-9e5f-0a1b2c3d4e5f"
		tp    = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		at    = "2026-12-01T11:59:59.5Z"
	)
	items := []shop.Item{{SKU: "apple", Quantity: 2, Price: 150}}
	event := func(id string, e handlers.Event, prior string) trackerFuzzSeed {
		return trackerFuzzSeed{payload: js(e), id: id, event: e.EventName(), sagaID: order, traceparent: tp,
			causation: order, producedAt: at, prior: prior}
	}
	dead := func(id, service, ev, prior string) trackerFuzzSeed {
		s := event(id, handlers.DeadLettered{Service: service, Handler: "h", Queue: service + ".h", DeadLetterQueue: service + ".h.dlq",
			Event: ev, MessageID: "dead-" + ev, Error: "gateway down", ErrorKind: "permanent", Attempts: 3}, prior)
		s.causation = "dead-" + ev
		return s
	}
	placed := event(order, shop.OrderPlaced{OrderID: "o-1", Customer: "ann", Items: items, Amount: 300, PaymentMethod: "card"}, "")
	placed.causation = ""
	seeds := []trackerFuzzSeed{
		placed,
		event("m-captured", shop.PaymentCaptured{OrderID: "o-1", Amount: 300, Items: items}, "order.placed"),
		event("m-declined", shop.PaymentFailed{OrderID: "o-1", Reason: "card declined"}, "order.placed"),
		event("m-out", shop.InventoryFailed{OrderID: "o-1", Reason: "out of stock: apple"}, "order.placed,payment.captured"),
		event("m-refunded", shop.PaymentRefunded{OrderID: "o-1", Amount: 300, Reason: "out of stock"}, "order.placed,payment.captured,inventory.failed"),
		event("m-reserved", shop.InventoryReserved{OrderID: "o-1"}, "order.placed,payment.captured"),
		event("m-confirmed", shop.OrderConfirmed{OrderID: "o-1"}, "order.placed,payment.captured,inventory.reserved"),
		event("m-cancelled", shop.OrderCancelled{OrderID: "o-1", Reason: "card declined"}, "order.placed,payment.failed"),
		event("m-sent", shop.NotificationSent{OrderID: "o-1", Kind: "confirmed"}, "order.placed,payment.captured,inventory.reserved,order.confirmed"),
		event("m-timeout", saga.Timeout{Saga: "checkout", ID: order, Deadline: "saga", DeadlineAt: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), Step: "charge"}, "order.placed"),
		event("m-timeout-other", saga.Timeout{Saga: "trip", ID: order, Deadline: "saga"}, "order.placed"),
		dead("m-dead-charge", shop.PaymentSvc, "order.placed", "order.placed"),
		dead("m-dead-refund", shop.PaymentSvc, "inventory.failed", "order.placed,payment.captured,inventory.failed"),
		dead("m-dead-notify", shop.NotifySvc, "order.confirmed", "order.placed,payment.captured,inventory.reserved,order.confirmed"),
	}
	malformed := []func(s *trackerFuzzSeed){
		func(s *trackerFuzzSeed) { s.sagaID = "" },
		func(s *trackerFuzzSeed) { s.payload = s.payload[:len(s.payload)/2] },
		func(s *trackerFuzzSeed) { s.payload = []byte(`{"reason":42,"saga":["checkout"]}`) },
		func(s *trackerFuzzSeed) { s.traceparent = strings.ToUpper(s.traceparent) },
		func(s *trackerFuzzSeed) { s.traceparent = "00-00000000000000000000000000000000-00f067aa0ba902b7-01" },
		func(s *trackerFuzzSeed) { s.traceparent = "ff" + s.traceparent[2:] },
		func(s *trackerFuzzSeed) { s.traceparent = "01" + s.traceparent[2:] + "-later" },
		func(s *trackerFuzzSeed) { s.traceparent += "-later" },
		func(s *trackerFuzzSeed) { s.traceparent = "00-not-a-trace-01" },
		func(s *trackerFuzzSeed) { s.producedAt = "yesterday" },
		func(s *trackerFuzzSeed) { s.event = "order.shipped" },
		func(s *trackerFuzzSeed) { s.id, s.prior = "", s.prior+",order.placed" },
	}
	// The checkout's deadline (2 minutes) after the last time the store
	// keeps: the instance's deadline_at overflowed to 1677, due at once.
	late := placed
	late.producedAt = "2262-04-11T23:46:00Z"
	seeds = append(seeds, late)
	for i, m := range malformed {
		// Each malformation of one of the checkout's events, in turn.
		s := seeds[i%len(seeds)]
		s.payload = slices.Clone(s.payload)
		m(&s)
		seeds = append(seeds, s)
	}
	return seeds
}
