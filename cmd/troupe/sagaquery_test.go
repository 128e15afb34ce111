package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// trackedDB records a few checkout instances in a tracker database, as the
// tracker would from the bus: o1 completed, o2 compensating, f1 parked on
// a dead-lettered refund whose letter is in payment.refund.dlq of busURL.
func trackedDB(t *testing.T, busURL string) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tracker.db")
	db, err := outbox.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tr, err := transport.Open(busURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	s, err := loadSaga("")
	if err != nil {
		t.Fatal(err)
	}
	tk, err := saga.NewTracker(ctx, s, db, tr, saga.TrackerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	handle := func(id, event string, payload any) *message.Message {
		n++
		b, _ := json.Marshal(payload)
		m := message.NewMessage(strings.Repeat("0", 8)+"-"+id+"-"+event+"-"+string(rune('a'+n)), b)
		m.Metadata.Set(envelope.EventKey, event)
		m.Metadata.Set(envelope.SagaIDKey, id)
		m.Metadata.Set(envelope.ProducedAtKey, at.Add(time.Duration(n)*time.Second).Format(time.RFC3339Nano))
		if err := tk.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, e := range []string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed"} {
		handle("o1", e, nil)
	}
	handle("o2", "order.placed", nil)
	handle("o2", "payment.failed", map[string]string{"reason": "card declined"})
	handle("f1", "order.placed", nil)
	handle("f1", "payment.captured", nil)
	failed := handle("f1", "inventory.failed", map[string]string{"reason": "out of stock"})
	// The refund dead-lettered: the letter waits in its queue.
	must(t, tr.Declare(ctx, bus.Topology{Queues: []bus.Queue{{Name: "payment.refund", Events: []string{"inventory.failed"}}}}))
	pub, err := tr.NewPublisher(bus.PublisherConfig{ToQueue: true, Mandatory: true})
	must(t, err)
	letter := message.NewMessage("letter-1", failed.Payload)
	for k, v := range failed.Metadata {
		letter.Metadata.Set(k, v)
	}
	letter.Metadata.Set(envelope.QueueKey, "payment.refund")
	must(t, pub.Publish("payment.refund.dlq", letter))
	handle("f1", handlers.DeadLetteredEvent, handlers.DeadLettered{Service: "payment", Handler: "refund", Queue: "payment.refund",
		DeadLetterQueue: "payment.refund.dlq", Event: "inventory.failed", MessageID: "letter-1", Error: "refund gateway down", Attempts: 3})
	return "sqlite:" + path
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSagaQueriesAndActions(t *testing.T) {
	busURL := "mem://cli-saga-actions"
	db := trackedDB(t, busURL)
	troupe := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	out, err := troupe("saga", "list", "-db", db)
	must(t, err)
	for _, want := range []string{"o1  completed     confirm", "o2  compensating  place", "f1  failed        charge", "refund gateway down", "3 instances"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	out, err = troupe("saga", "list", "-db", db, "-state", "compensating")
	must(t, err)
	if !strings.Contains(out, "o2") || strings.Contains(out, "o1") || !strings.Contains(out, "1 instances") {
		t.Errorf("list -state compensating:\n%s", out)
	}
	out, err = troupe("saga", "show", "f1", "-db", db)
	must(t, err)
	for _, want := range []string{"saga checkout f1: failed at step charge: refund gateway down",
		"event                     inventory.failed  step failed reserve; compensation started charge — out of stock",
		"compensation_dead_letter  inventory.failed  compensation of step charge dead-lettered in payment.refund.dlq after 3 runs — refund gateway down"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out, err = troupe("saga", "resume", "f1", "-db", db, "-bus", busURL, "-by", "alice", "-note", "gateway back")
	must(t, err)
	if !strings.Contains(out, "saga checkout f1: compensating at step charge") ||
		!strings.Contains(out, "resumed by alice: dead letter letter-1 replayed from payment.refund.dlq — gateway back") {
		t.Errorf("resume:\n%s", out)
	}
	c, err := dlq.Dial(busURL)
	must(t, err)
	left, err := dlq.List(t.Context(), c, "payment.refund.dlq")
	if err != nil || len(left) != 0 {
		t.Errorf("dead letters left after resume: %d, %v", len(left), err)
	}
	out, err = troupe("saga", "resolve", "o2", "-db", db, "-by", "bob")
	must(t, err)
	if !strings.Contains(out, "saga checkout o2: resolved") || !strings.Contains(out, "resolved by bob (was compensating)") {
		t.Errorf("resolve:\n%s", out)
	}
	tests := []struct {
		give []string
		want string
	}{
		{[]string{"saga", "list"}, "give the tracker's database"},
		{[]string{"saga", "list", "-db", "sqlite:" + filepath.Join(t.TempDir(), "none.db")}, "no such file"},
		{[]string{"saga", "list", "-db", db, "-state", "lost"}, `unknown state "lost"`},
		{[]string{"saga", "show", "-db", db}, "give one saga id"},
		{[]string{"saga", "show", "-db", db, "nope"}, "no such instance"},
		{[]string{"saga", "skip", "-db", db, "o1"}, "already ended"},
		{[]string{"saga", "skip", "-db", db, "f1"}, "not parked"},
		{[]string{"saga", "resume", "-db", db, "f1"}, "give the bus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give[1:], " "), func(t *testing.T) {
			out, err := troupe(tt.give...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q\n%s", err, tt.want, out)
			}
		})
	}
}
