package saga_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/troupehq/troupe/saga"
)

// trip is the test saga: a trip booked flight, hotel, car, started by an
// external gateway (no initiating step), with a mailer listening.
func trip() *saga.Saga {
	return &saga.Saga{
		Name:  "trip",
		Start: "trip.requested",
		Steps: []saga.Step{
			{Name: "flight", Service: "flights", Trigger: "trip.requested", Success: "flight.booked", Failure: "flight.failed",
				Compensation: &saga.Compensation{On: []string{"hotel.failed", "hotel.cancelled"}, Done: "flight.cancelled"}},
			{Name: "hotel", Service: "hotels", Trigger: "flight.booked", Success: "hotel.booked", Failure: "hotel.failed",
				Compensation: &saga.Compensation{On: []string{"car.failed"}, Done: "hotel.cancelled"}},
			{Name: "car", Service: "cars", Trigger: "hotel.booked", Success: "car.booked", Failure: "car.failed",
				NoCompensation: "last step"},
		},
		Listeners: []saga.Listener{
			{Name: "mailer", Service: "mail", On: []string{"car.booked", "flight.cancelled"}, Emits: []string{"mail.sent"}},
		},
		Completed:   []string{"car.booked"},
		Compensated: []string{"flight.cancelled"},
		Failed:      []string{"flight.failed"},
	}
}

// defect is what a test expects of one DefectError.
type defect struct {
	kind        saga.Defect
	step, event string
}

func defectsOf(err error) []defect {
	var out []defect
	for _, d := range saga.Defects(err) {
		out = append(out, defect{d.Defect, d.Step + d.Listener, d.Event})
	}
	return out
}

func TestValidateValid(t *testing.T) {
	if err := trip().Validate(); err != nil {
		t.Fatalf("trip: %v", err)
	}
}

func TestValidateDefects(t *testing.T) {
	tests := []struct {
		name string
		give func(s *saga.Saga)
		want []defect
	}{
		{"no name", func(s *saga.Saga) { s.Name = "" }, []defect{{saga.Malformed, "", ""}}},
		{"bad start name", func(s *saga.Saga) { s.Start = "Trip Requested" }, []defect{{saga.Malformed, "", "Trip Requested"}}},
		{"no steps", func(s *saga.Saga) {
			s.Steps = nil
			s.Listeners = nil
			s.Completed = []string{"x.done"}
			s.Compensated = nil
			s.Failed = nil
		},
			[]defect{{saga.Malformed, "", ""}, {saga.Malformed, "", "x.done"}}},
		{"duplicate step", func(s *saga.Saga) { s.Steps[2].Name = "hotel" }, []defect{{saga.Malformed, "hotel", ""}}},
		{"no service", func(s *saga.Saga) { s.Steps[1].Service = "" }, []defect{{saga.Malformed, "hotel", ""}}},
		{"no success", func(s *saga.Saga) { s.Steps[1].Success = "" }, []defect{{saga.Malformed, "hotel", ""}}},
		{"trigger missing after the first step", func(s *saga.Saga) { s.Steps[1].Trigger = "" }, []defect{{saga.Malformed, "hotel", ""}}},
		{"initiating step not emitting start", func(s *saga.Saga) { s.Steps[0].Trigger = "" },
			[]defect{{saga.Malformed, "flight", "flight.booked"}}},
		{"event with two meanings", func(s *saga.Saga) { s.Steps[2].Failure = "hotel.failed" },
			[]defect{{saga.Malformed, "car", "hotel.failed"}}},
		{"step emits the start", func(s *saga.Saga) { s.Steps[2].Failure = "trip.requested" },
			[]defect{{saga.Malformed, "car", "trip.requested"}}},
		{"step emits its trigger", func(s *saga.Saga) { s.Steps[2].Failure = "hotel.booked" },
			[]defect{{saga.Malformed, "car", "hotel.booked"}, {saga.Malformed, "car", "hotel.booked"}}},
		{"both compensation and a reason", func(s *saga.Saga) { s.Steps[1].NoCompensation = "pivot" }, []defect{{saga.Malformed, "hotel", ""}}},
		{"compensation without events", func(s *saga.Saga) { s.Steps[1].Compensation.On = nil }, []defect{{saga.Malformed, "hotel", ""}}},
		{"compensation without done", func(s *saga.Saga) { s.Steps[1].Compensation.Done = "" },
			[]defect{{saga.Malformed, "hotel", ""}}},
		{"no completed", func(s *saga.Saga) { s.Completed = nil }, []defect{{saga.Malformed, "", ""}}},
		{"ending emitted by nobody", func(s *saga.Saga) { s.Failed = []string{"trip.lost"} }, []defect{{saga.Malformed, "", "trip.lost"}}},
		{"ending twice", func(s *saga.Saga) { s.Failed = []string{"car.booked"} }, []defect{{saga.Malformed, "", "car.booked"}}},
		{"ending triggers a step", func(s *saga.Saga) { s.Completed = []string{"hotel.booked"} },
			[]defect{{saga.Malformed, "car", "hotel.booked"}}},
		{"listener on a foreign event", func(s *saga.Saga) { s.Listeners[0].On = []string{"user.created"} },
			[]defect{{saga.Malformed, "mailer", "user.created"}}},
		{"listener emitting a trigger", func(s *saga.Saga) { s.Listeners[0].Emits = []string{"car.failed"} },
			[]defect{{saga.Malformed, "mailer", "car.failed"}}},
		{"every problem at once", func(s *saga.Saga) { s.Name = ""; s.Steps[0].Service = "Flights"; s.Completed = nil },
			[]defect{{saga.Malformed, "", ""}, {saga.Malformed, "flight", ""}, {saga.Malformed, "", ""}}},

		{"no compensation and no reason", func(s *saga.Saga) {
			s.Steps[1].Compensation = nil
			s.Steps[0].Compensation.On = []string{"hotel.failed"}
		},
			[]defect{{saga.Uncompensated, "hotel", ""}, {saga.DeadEnd, "car", "car.failed"},
				{saga.Uncompensated, "car", "car.failed"}}},
		{"failure that skips a compensation", func(s *saga.Saga) { s.Steps[0].Compensation.On = []string{"hotel.failed"} },
			[]defect{{saga.DeadEnd, "hotel", "hotel.cancelled"}, {saga.DeadEnd, "car", "car.failed"},
				{saga.Uncompensated, "car", "car.failed"}}},
		{"failure with no path to an end", func(s *saga.Saga) {
			s.Steps[1].Compensation.On = []string{"car.declined"}
			s.Steps[2].Failure = "car.failed"
		},
			[]defect{{saga.Unreachable, "hotel", "car.declined"}, {saga.DeadEnd, "car", "car.failed"},
				{saga.Uncompensated, "car", "car.failed"}, {saga.Uncompensated, "car", "car.failed"}}},
		{"success with no path to an end", func(s *saga.Saga) { s.Steps[2].Trigger = "hotel.confirmed" },
			[]defect{{saga.Unreachable, "car", "hotel.confirmed"}, {saga.DeadEnd, "hotel", "hotel.booked"}}},
		{"cycle through compensations", func(s *saga.Saga) { s.Steps[1].Compensation.On = []string{"car.failed", "flight.cancelled"} },
			[]defect{{saga.Cycle, "hotel", "flight.cancelled"}}},
		{"cycle on the success path", func(s *saga.Saga) {
			s.Steps = append(s.Steps, saga.Step{Name: "upgrade", Service: "hotels", Trigger: "hotel.upgraded", Success: "flight.rebooked", NoCompensation: "nothing to undo"},
				saga.Step{Name: "rebook", Service: "flights", Trigger: "flight.rebooked", Success: "hotel.upgraded", NoCompensation: "nothing to undo"})
		}, []defect{{saga.Cycle, "upgrade", "hotel.upgraded"}, {saga.Unreachable, "upgrade", "hotel.upgraded"},
			{saga.Unreachable, "rebook", "flight.rebooked"}, {saga.DeadEnd, "upgrade", "flight.rebooked"}, {saga.DeadEnd, "rebook", "hotel.upgraded"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := trip()
			tt.give(s)
			err := s.Validate()
			if got := defectsOf(err); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("defects\n got %v\nwant %v\nerror:\n%v", got, tt.want, err)
			}
		})
	}
}

func TestDefectErrorNamesSagaStepAndEvent(t *testing.T) {
	s := trip()
	s.Steps[2].Failure = "car.lost"
	err := s.Validate()
	want := "saga trip: step car: event car.lost: dead end: the failure has no path to an end"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want it to contain %q", err, want)
	}
	d, ok := errors.AsType[*saga.DefectError](err)
	if !ok || d.Saga != "trip" {
		t.Fatalf("errors.AsType: %v %v", d, ok)
	}
}

func TestTransitions(t *testing.T) {
	s := trip()
	tests := []struct {
		give string
		want []string
	}{
		{"trip.requested", []string{"saga started", "step started flight"}},
		{"flight.booked", []string{"step succeeded flight", "step started hotel"}},
		{"flight.failed", []string{"step failed flight", "saga failed"}},
		{"hotel.failed", []string{"step failed hotel", "compensation started flight"}},
		{"car.failed", []string{"step failed car", "compensation started hotel"}},
		{"hotel.cancelled", []string{"compensation done hotel", "compensation started flight"}},
		{"flight.cancelled", []string{"compensation done flight", "saga compensated"}},
		{"car.booked", []string{"step succeeded car", "saga completed"}},
		{"mail.sent", []string{"observed by mailer"}},
		{"user.created", nil},
		{"", nil},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			var got []string
			for _, tr := range s.Transitions(tt.give) {
				got = append(got, tr.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Transitions(%q) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

func TestTransitionsCoverEveryEvent(t *testing.T) {
	s := trip()
	for _, e := range s.Events() {
		if len(s.Transitions(e)) == 0 {
			t.Errorf("event %s has no transition", e)
		}
	}
	want := []string{"car.booked", "car.failed", "flight.booked", "flight.cancelled", "flight.failed", "hotel.booked",
		"hotel.cancelled", "hotel.failed", "mail.sent", "trip.requested"}
	if got := s.Events(); !slices.Equal(got, want) {
		t.Fatalf("Events() = %v, want %v", got, want)
	}
}

func TestStepAndServices(t *testing.T) {
	s := trip()
	if st, ok := s.Step("hotel"); !ok || st.Service != "hotels" {
		t.Fatalf("Step(hotel) = %+v, %v", st, ok)
	}
	if _, ok := s.Step("boat"); ok {
		t.Fatal("Step(boat) found")
	}
	if got, want := s.Services(), []string{"flights", "hotels", "cars", "mail"}; !slices.Equal(got, want) {
		t.Fatalf("Services() = %v, want %v", got, want)
	}
}

func TestKindAndDefectStrings(t *testing.T) {
	tests := []struct {
		give fmt.Stringer
		want string
	}{
		{saga.SagaStarted, "saga started"},
		{saga.Observed, "observed"},
		{saga.Kind(0), "Kind(0)"},
		{saga.Kind(99), "Kind(99)"},
		{saga.Malformed, "malformed"},
		{saga.Undeclared, "undeclared"},
		{saga.Defect(0), "Defect(0)"},
	}
	for _, tt := range tests {
		if got := tt.give.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestNilSaga(t *testing.T) {
	var s *saga.Saga
	if err := s.Validate(); err == nil {
		t.Fatal("nil saga validated")
	}
	if err := saga.Check(nil, saga.Registry{}); err == nil {
		t.Fatal("nil saga checked")
	}
	var b strings.Builder
	if err := saga.WriteMermaid(&b, nil); err == nil {
		t.Fatal("nil saga drawn")
	}
}
