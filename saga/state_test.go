package saga_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/saga"
)

// entries makes a history of events, produced a second apart.
func entries(events ...string) []saga.Entry {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	out := make([]saga.Entry, len(events))
	for i, e := range events {
		out[i] = saga.Entry{Seq: int64(i + 1), At: t0.Add(time.Duration(i) * time.Second), Kind: saga.EventEntry, Event: e, MessageID: fmt.Sprint(i)}
	}
	return out
}

func TestDerive(t *testing.T) {
	s := checkout()
	tests := []struct {
		give      []string
		wantState saga.State
		wantStep  string
	}{
		{nil, saga.Running, ""},
		{[]string{"order.placed"}, saga.Running, "charge"},
		{[]string{"order.placed", "payment.captured"}, saga.Running, "reserve"},
		{[]string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed"}, saga.Completed, "confirm"},
		{[]string{"order.placed", "payment.failed"}, saga.Compensating, "place"},
		{[]string{"order.placed", "payment.failed", "order.cancelled"}, saga.Compensated, "place"},
		{[]string{"order.placed", "payment.captured", "inventory.failed"}, saga.Compensating, "charge"},
		{[]string{"order.placed", "payment.captured", "inventory.failed", "payment.refunded"}, saga.Compensating, "place"},
		{[]string{"payment.captured"}, saga.Running, "reserve"},
		{[]string{"notification.sent"}, saga.Running, ""},
		// saga.timed_out undoes a charge under way, not one that never ran.
		{[]string{"order.placed", saga.TimedOutEvent}, saga.Compensating, "charge"},
		{[]string{saga.TimedOutEvent}, saga.Running, ""},
		// The timed-out charge was abandoned (payment.failed): nothing to
		// refund, the order's cancellation is the last compensation.
		{[]string{"order.placed", saga.TimedOutEvent, "payment.failed"}, saga.Compensating, "place"},
		{[]string{"order.placed", saga.TimedOutEvent, "payment.failed", "order.cancelled"}, saga.Compensated, "place"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.give), func(t *testing.T) {
			got := saga.Derive(s, entries(tt.give...))
			if got.State != tt.wantState || got.Step != tt.wantStep {
				t.Errorf("Derive = %s %q, want %s %q", got.State, got.Step, tt.wantState, tt.wantStep)
			}
		})
	}
}

// TestDeriveOrderIndependent checks the rule's promise: every arrival
// order of a set of events gives the same status.
func TestDeriveOrderIndependent(t *testing.T) {
	s := checkout()
	sets := [][]string{
		{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent"},
		{"order.placed", "payment.captured", "inventory.failed", "payment.refunded", "order.cancelled"},
		{"order.placed", "payment.captured", "inventory.failed", "payment.refunded"},
		{"order.placed", "payment.failed"},
	}
	for _, set := range sets {
		base := entries(set...)
		want := saga.Derive(s, base)
		permute(len(base), func(p []int) {
			h := make([]saga.Entry, len(base))
			for i, j := range p {
				h[i] = base[j]
				h[i].Seq = int64(i + 1) // recorded in this order
			}
			if got := saga.Derive(s, h); got != want {
				t.Errorf("order %v of %v: %+v, want %+v", p, set, got, want)
			}
		})
	}
}

// permute calls f with every permutation of 0..n-1 (Heap's algorithm).
func permute(n int, f func([]int)) {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	var gen func(k int)
	gen = func(k int) {
		if k <= 1 {
			f(p)
			return
		}
		for i := range k {
			gen(k - 1)
			if k%2 == 0 {
				p[i], p[k-1] = p[k-1], p[i]
			} else {
				p[0], p[k-1] = p[k-1], p[0]
			}
		}
	}
	gen(n)
}

func TestValidateDeadlines(t *testing.T) {
	tests := []struct {
		name string
		give func(s *saga.Saga)
		want string
	}{
		{"negative saga deadline", func(s *saga.Saga) { s.Deadline = -time.Second }, "saga checkout: malformed: negative deadline -1s"},
		{"negative step deadline", func(s *saga.Saga) { s.Steps[1].Deadline = -time.Second }, "saga checkout: step charge: malformed: negative deadline -1s"},
		{"deadline on the initiating step", func(s *saga.Saga) { s.Steps[0].Deadline = time.Second },
			"saga checkout: step place: malformed: a step deadline runs from the step's trigger, and the step has none"},
		{"timeout without a deadline", func(s *saga.Saga) { s.Deadline, s.Steps[2].Deadline = 0, 0 },
			"saga checkout: step charge: event saga.timed_out: unreachable: the compensation event is emitted by no step"},
		{"a step emits the timeout", func(s *saga.Saga) { s.Steps[3].Success = saga.TimedOutEvent },
			"saga checkout: step confirm: event saga.timed_out: malformed: the tracker emits this event; a step cannot be its success"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := checkout()
			tt.give(s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v\nwant %q", err, tt.want)
			}
		})
	}
	if err := checkout().Validate(); err != nil {
		t.Errorf("the test checkout: %v", err)
	}
}

// TestDeriveReadsOnlyDerivableFields: the tracker reads only Seq, At,
// Kind, Event, Step and Error of a history to derive its status again, so
// Derive must give the same status whatever the other fields hold.
func TestDeriveReadsOnlyDerivableFields(t *testing.T) {
	s := checkout()
	dead := func(h []saga.Entry, kind saga.EntryKind, step, err string) []saga.Entry {
		last := h[len(h)-1]
		return append(h, saga.Entry{Seq: last.Seq + 1, At: last.At.Add(time.Second), Kind: kind, Event: "x", Step: step, Error: err})
	}
	histories := [][]saga.Entry{
		entries("order.placed", "payment.captured", "inventory.reserved", "order.confirmed"),
		entries("order.placed", "payment.captured", "inventory.failed", "payment.refunded", "order.cancelled"),
		entries("order.placed", saga.TimedOutEvent, "payment.failed"),
		dead(entries("order.placed"), saga.StepDeadLetter, "charge", "gateway down"),
		dead(dead(entries("order.placed"), saga.StepDeadLetter, "charge", "gateway down"), saga.ResumeEntry, "charge", ""),
		dead(dead(entries("order.placed"), saga.StepDeadLetter, "charge", "gateway down"), saga.SkipEntry, "charge", ""),
		dead(entries("order.placed", "payment.captured", "inventory.failed"), saga.CompensationDeadLetter, "charge", "refund refused"),
	}
	derivable := map[string]bool{"Seq": true, "At": true, "Kind": true, "Event": true, "Step": true, "Error": true}
	for _, h := range histories {
		full := make([]saga.Entry, len(h))
		slim := make([]saga.Entry, len(h))
		for i, e := range h {
			f, sl := reflect.ValueOf(&full[i]).Elem(), reflect.ValueOf(&slim[i]).Elem()
			f.Set(reflect.ValueOf(e))
			for j := range f.NumField() {
				name := f.Type().Field(j).Name
				switch {
				case derivable[name]:
					sl.Field(j).Set(f.Field(j))
				case f.Field(j).Kind() == reflect.String:
					f.Field(j).SetString(fmt.Sprintf("%s of entry %d", name, i))
				case f.Field(j).Type() == reflect.TypeFor[time.Time]():
					f.Field(j).Set(reflect.ValueOf(e.At.Add(time.Hour)))
				}
			}
		}
		if got, want := saga.Derive(s, slim), saga.Derive(s, full); !reflect.DeepEqual(got, want) {
			t.Errorf("from the derivable fields %+v, from all %+v", got, want)
		}
	}
}

// BenchmarkDerive derives the status of a happy checkout's history after
// each of its events, as the tracker does when it records them.
func BenchmarkDerive(b *testing.B) {
	s := checkout()
	h := entries("order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent")
	b.ReportAllocs()
	for b.Loop() {
		for n := 1; n <= len(h); n++ {
			saga.Derive(s, h[:n])
		}
	}
}
