package saga_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport/envelope"
)

// actionScenario is an instance of the checkout saga to act on: the events
// it has seen, in order, and the event whose message the payment service
// then dead-lettered ("" for none).
type actionScenario struct {
	name       string
	events     []string
	deadLetter string
	state      saga.State
	parked     bool
}

// actionScenarios are the instances FuzzActionRequest acts on, one state
// each; a fuzzed byte picks one.
var actionScenarios = []actionScenario{
	{name: "running", events: []string{"order.placed"}, state: saga.Running},
	{name: "compensating", events: []string{"order.placed", "payment.failed"}, state: saga.Compensating},
	{name: "step parked", events: []string{"order.placed"}, deadLetter: "order.placed", state: saga.Failed, parked: true},
	{name: "compensation parked", events: []string{"order.placed", "payment.captured", "inventory.failed"},
		deadLetter: "inventory.failed", state: saga.Failed, parked: true},
	{name: "completed", events: []string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed"}, state: saga.Completed},
	{name: "compensated", events: []string{"order.placed", "payment.failed", "order.cancelled"}, state: saga.Compensated},
}

// actionFixture is a checkout tracker's store on a temporary SQLite
// database, served by HTTPHandler with a redriver that records its calls.
type actionFixture struct {
	tk       *saga.Tracker
	clock    *fakeClock
	handler  http.Handler
	redriven []saga.Entry
}

func newActionFixture(f *testing.F) *actionFixture {
	f.Helper()
	ctx := context.Background()
	db := openFuzzDB(f)
	// The tracker never runs: its instances are recorded by HandleBatch,
	// so it needs no bus.
	fx := &actionFixture{clock: newClock()}
	var err error
	if fx.tk, err = saga.NewTracker(ctx, checkout(), db, nil, saga.TrackerConfig{Clock: fx.clock}); err != nil {
		f.Fatal(err)
	}
	rd := func(_ context.Context, e saga.Entry, _ string, _ time.Time) error {
		fx.redriven = append(fx.redriven, e)
		return nil
	}
	fx.handler = saga.HTTPHandler(fx.tk.Store(), rd, fx.clock)
	return fx
}

// instance records a new instance of sc under a fresh id and returns it.
// It also returns the id of the dead letter, if sc has one.
func (fx *actionFixture) instance(t *testing.T, sc actionScenario) (saga.Instance, string) {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	var msgs []*message.Message
	for _, ev := range sc.events {
		msgs = append(msgs, fx.msg(id, ev, map[string]string{"order_id": id}))
	}
	var dead string
	if sc.deadLetter != "" {
		dead = uuid.Must(uuid.NewV7()).String()
		m := fx.msg(id, handlers.DeadLetteredEvent, handlers.DeadLettered{Service: "payment", Handler: "h", Queue: "payment.h",
			DeadLetterQueue: "payment.h.dlq", Event: sc.deadLetter, MessageID: dead, Error: "gateway down", ErrorKind: "permanent", Attempts: 3})
		m.Metadata.Set(envelope.CausationIDKey, dead)
		msgs = append(msgs, m)
	}
	if err := fx.tk.HandleBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	in, err := fx.tk.Store().Get(context.Background(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != sc.state {
		t.Fatalf("scenario %s: instance in state %s, want %s", sc.name, in.State, sc.state)
	}
	return in, dead
}

// msg builds an event of instance id, produced a millisecond after the
// previous one.
func (fx *actionFixture) msg(id, event string, payload any) *message.Message {
	b, _ := json.Marshal(payload)
	return eventMessage(fx.clock, id, event, b)
}

// chunkReader hands out at most n bytes per Read, as a network does.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// newChunkReader reads b in chunks of n bytes, all at once when n is 0.
func newChunkReader(b []byte, n uint8) io.Reader {
	if n == 0 {
		return bytes.NewReader(b)
	}
	return &chunkReader{b: b, n: int(n)}
}

// parseActionBody reads body as HTTPHandler documents it, independently
// of the handler's code: one JSON object, at most 64 KiB, nothing after
// it, whose members are "actor" and "note" (strings or null). As
// encoding/json does, names match case-insensitively, a repeated member's
// last value wins and null leaves a field unset (a null body, all
// fields). ok is false for any other body.
func parseActionBody(body []byte) (req saga.ActionRequest, ok bool) {
	if len(body) > 1<<16 || !json.Valid(body) {
		return req, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	switch tok, _ := dec.Token(); tok {
	case nil:
		return req, true
	case json.Delim('{'):
	default:
		return req, false
	}
	for dec.More() {
		tok, _ := dec.Token()
		name, _ := tok.(string)
		var v *string
		if err := dec.Decode(&v); err != nil {
			return req, false
		}
		var field *string
		switch {
		case strings.EqualFold(name, "actor"):
			field = &req.Actor
		case strings.EqualFold(name, "note"):
			field = &req.Note
		default:
			return req, false
		}
		if v != nil {
			*field = *v
		}
	}
	return req, true
}

// refusal is an answer HTTPHandler documents for a request it refuses:
// the status and what the error says.
type refusal struct {
	status int
	says   string
}

// refusals lists every documented reason to refuse the request; the
// handler may give any one of them (the docs fix no order). None means
// the action must succeed.
func refusals(sc actionScenario, a saga.Action, found, bodyOK bool, req saga.ActionRequest) []refusal {
	var out []refusal
	known := a == saga.Resume || a == saga.Skip || a == saga.Resolve
	if !known {
		out = append(out, refusal{http.StatusNotFound, "no action"})
	}
	switch {
	case !bodyOK:
		out = append(out, refusal{http.StatusBadRequest, "body: "})
	case strings.TrimSpace(req.Actor) == "":
		out = append(out, refusal{http.StatusBadRequest, saga.ErrNoActor.Error()})
	}
	ended := slices.Contains([]saga.State{saga.Completed, saga.Compensated, saga.Resolved}, sc.state)
	switch {
	case !found:
		out = append(out, refusal{http.StatusNotFound, saga.ErrNotFound.Error()})
	case ended:
		out = append(out, refusal{http.StatusConflict, saga.ErrEnded.Error()})
	case (a == saga.Resume || a == saga.Skip) && !sc.parked:
		out = append(out, refusal{http.StatusConflict, saga.ErrNotParked.Error()})
	}
	return out
}

// FuzzActionRequest posts arbitrary operator actions to HTTPHandler: the
// action, the instance id (a fresh instance's, or with a suffix, an
// unknown one), the ?saga= filter and the body (read in chunks) are
// fuzzed, against a real store. A request that the docs say to refuse
// (unknown action, malformed body or one with unknown fields or trailing
// data, no actor, unknown instance, action that does not apply) gets a
// 4xx whose JSON error says which, and leaves the instance and the dead
// letters alone; any other gets 200 with the instance afterwards, its
// history one entry longer (who, the note) and the state the action
// documents. No request gets a 5xx.
func FuzzActionRequest(f *testing.F) {
	fx := newActionFixture(f)
	const (
		running, compensating, stepParked, compParked, completed, compensated = 0, 1, 2, 3, 4, 5
	)
	seeds := []struct {
		scenario                 uint8
		idSuffix, action, filter string
		body                     string
		chunk                    uint8
	}{
		{compParked, "", "resume", "", `{"actor": "alice", "note": "gateway back"}`, 0},
		{stepParked, "", "skip", "checkout", `{"actor": "bob", "note": "charged by hand"}`, 1},
		{compParked, "", "skip", "", `{"Actor": " carol ", "NOTE": null}`, 3},
		{running, "", "resolve", "", `{"actor": "dave", "actor": "erin"}`, 0},
		{compensating, "", "resolve", "checkout", "\t{\"actor\": \"fay\"}\n", 2},
		{completed, "", "resolve", "", `{"actor": "alice"}`, 0},
		{compensated, "", "skip", "", `{"actor": "alice"}`, 0},
		{running, "", "resume", "", `{"actor": "alice"}`, 0},
		{compParked, "x", "resume", "", `{"actor": "alice"}`, 0},
		{compParked, "", "resume", "other", `{"actor": "alice"}`, 0},
		{compParked, "", "explode", "", `{"actor": "alice"}`, 0},
		{compParked, "", "Resume", "", `{"actor": "alice"}`, 0},
		{compParked, "", "", "", `{"actor": "alice"}`, 0},
		{compParked, "", "..", "", `{"actor": "alice"}`, 0},
		{compParked, "/../y", "skip", "", `{"actor": "alice"}`, 0},
		{compParked, "", "skip", "", `{}`, 0},
		{compParked, "", "skip", "", `{"actor": " \t"}`, 0},
		{compParked, "", "skip", "", `{"actor": "alice", "unknown": 1}`, 0},
		{compParked, "", "skip", "", `{"actor": 1}`, 0},
		{compParked, "", "skip", "", `{"actor": "alice"`, 1},
		{compParked, "", "skip", "", `{"actor": "alice"} trailing`, 0},
		{compParked, "", "skip", "", `{"actor": "alice"}{"actor": "bob"}`, 0},
		{compParked, "", "skip", "", `{"actor": "alice"}]`, 0},
		// Found by the fuzzer: the handler ignored what followed the object.
		{compensating, "", "resolve", "checkout", ` {}00`, 2},
		{compParked, "", "skip", "", ``, 0},
		{compParked, "", "skip", "", `null`, 0},
		{compParked, "", "skip", "", `[]`, 0},
		{compParked, "", "skip", "", `"alice"`, 0},
		{compParked, "", "skip", "", "{\"actor\": \"a\xffb\x00\"}", 0},
		{compParked, "", "resolve", "", `{"actor": "alice", "note": "` + strings.Repeat("n", 1<<16) + `"}`, 0},
	}
	for _, s := range seeds {
		f.Add(s.scenario, s.idSuffix, s.action, s.filter, []byte(s.body), s.chunk)
	}
	f.Fuzz(func(t *testing.T, scenario uint8, idSuffix, action, filter string, body []byte, chunk uint8) {
		ctx := context.Background()
		sc := actionScenarios[int(scenario)%len(actionScenarios)]
		before, dead := fx.instance(t, sc)
		fx.redriven = nil
		fx.clock.Advance(time.Second)

		// The instance's id is a UUID: with a suffix it names none.
		id := before.ID + idSuffix
		req := httptest.NewRequest(http.MethodPost, "/", newChunkReader(body, chunk))
		req.URL = &url.URL{
			Path:     "/sagas/" + id + "/" + action,
			RawPath:  "/sagas/" + url.PathEscape(id) + "/" + url.PathEscape(action),
			RawQuery: url.Values{"saga": {filter}}.Encode(),
		}
		rec := httptest.NewRecorder()
		fx.handler.ServeHTTP(rec, req)

		after, err := fx.tk.Store().Get(ctx, "", before.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if action == "" || action == "." || action == ".." {
			// The mux answers for a path with no action segment.
			if rec.Code < 300 {
				t.Fatalf("action %q: status %d", action, rec.Code)
			}
			assertUntouched(t, fx, before, after)
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("status %d: content type %q", rec.Code, ct)
		}
		parsed, bodyOK := parseActionBody(body)
		found := idSuffix == "" && (filter == "" || filter == "checkout")
		refused := refusals(sc, saga.Action(action), found, bodyOK, parsed)
		if rec.Code != http.StatusOK {
			assertRefusal(t, rec, refused)
			assertUntouched(t, fx, before, after)
			return
		}
		if len(refused) > 0 {
			t.Fatalf("accepted; want one of %v", refused)
		}
		want, err := json.Marshal(after)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.TrimSuffix(rec.Body.Bytes(), []byte("\n")); !bytes.Equal(got, want) {
			t.Fatalf("answer\n%s\nwant the instance afterwards\n%s", got, want)
		}
		assertActed(t, fx, saga.Action(action), parsed, before, after, dead)
	})
}

// assertRefusal checks that a refused request's answer is a JSON error
// that gives one of the documented reasons.
func assertRefusal(t *testing.T, rec *httptest.ResponseRecorder, refused []refusal) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Fatalf("status %d: answer %q is not a JSON error (%v)", rec.Code, rec.Body, err)
	}
	for _, r := range refused {
		if rec.Code == r.status && strings.Contains(e.Error, r.says) {
			return
		}
	}
	t.Fatalf("status %d %q; want one of %v", rec.Code, e.Error, refused)
}

// assertUntouched checks that a refused request changed nothing.
func assertUntouched(t *testing.T, fx *actionFixture, before, after saga.Instance) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("refused, yet the instance changed\nbefore %+v\nafter  %+v", before, after)
	}
	if len(fx.redriven) != 0 {
		t.Fatalf("refused, yet dead letters were replayed: %+v", fx.redriven)
	}
}

// assertActed checks that an accepted action did what the docs say.
func assertActed(t *testing.T, fx *actionFixture, a saga.Action, req saga.ActionRequest, before, after saga.Instance, dead string) {
	t.Helper()
	n := len(before.History)
	if len(after.History) != n+1 || !reflect.DeepEqual(after.History[:n], before.History) {
		t.Fatalf("history\n%+v\nwant one entry more than\n%+v", after.History, before.History)
	}
	actor := strings.TrimSpace(req.Actor)
	last := after.History[n]
	kinds := map[saga.Action]saga.EntryKind{saga.Resume: saga.ResumeEntry, saga.Skip: saga.SkipEntry, saga.Resolve: saga.ResolveEntry}
	if last.Kind != kinds[a] || last.Actor != actor || last.Error != req.Note || !last.At.Equal(fx.clock.Now()) {
		t.Fatalf("%s by %q (%q): entry %+v", a, actor, req.Note, last)
	}
	var replayed []string
	for _, e := range fx.redriven {
		replayed = append(replayed, e.CausationID)
	}
	switch a {
	case saga.Resolve:
		if after.State != saga.Resolved || len(replayed) != 0 {
			t.Fatalf("resolve: state %s, replayed %v; want resolved, nothing replayed", after.State, replayed)
		}
	case saga.Skip:
		if after.State == saga.Failed || len(replayed) != 0 || last.CausationID != dead {
			t.Fatalf("skip: state %s, replayed %v, entry %+v; want out of failed, nothing replayed", after.State, replayed, last)
		}
	case saga.Resume:
		if after.State == saga.Failed || !slices.Equal(replayed, []string{dead}) || last.CausationID != dead {
			t.Fatalf("resume: state %s, replayed %v, entry %+v; want out of failed, %s replayed", after.State, replayed, last, dead)
		}
	}
}
