package saga

import (
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Events the tracker emits, through its outbox, with the saga id of the
// instance in their metadata.
const (
	// TimedOutEvent is emitted when an instance misses a deadline (Saga.
	// Deadline or Step.Deadline); its payload is a [Timeout]. Under
	// choreography the tracker does not undo anything itself: the services
	// whose steps must be undone consume it, so a saga with deadlines lists
	// it in the Compensation.On of those steps.
	TimedOutEvent = "saga.timed_out"
	// FailedEvent is the alert emitted when an instance is parked in state
	// failed (a compensation dead-lettered); its payload is a [Failure].
	FailedEvent = "saga.failed"
)

// Saga declares a choreographed workflow: the event that starts it, its
// steps in order, the services that only listen, and the events that end
// it. Events are named by their routing keys (handlers.Event.EventName);
// write them from the Go types, e.g. shop.OrderPlaced{}.EventName(), so
// that a renamed event type cannot drift from its saga.
//
// A Saga is a plain value: declare it as a literal or load it from JSON
// (ParseJSON, ReadFile). Its methods only read it, so it is safe for
// concurrent use as long as nobody modifies it.
type Saga struct {
	// Name names the saga, in lower-case words ("checkout").
	Name string `json:"name"`
	// Start is the event that starts an instance ("order.placed").
	Start string `json:"start"`
	// Steps are the steps in their order on the success path. The first
	// step may have no Trigger: it is the initiating step, run by plain
	// code (an HTTP handler), and its Success must be Start. Otherwise
	// Start is emitted outside the saga and triggers the first step.
	Steps []Step `json:"steps"`
	// Listeners are services that react to the saga's events without
	// taking part in its outcome (notifications, audit).
	Listeners []Listener `json:"listeners,omitempty"`
	// Completed are the events that end an instance successfully.
	// At least one is required.
	Completed []string `json:"completed"`
	// Compensated are the events that end an instance after its completed
	// steps were undone (or when the first step failed and nothing needed
	// undoing).
	Compensated []string `json:"compensated,omitempty"`
	// Failed are the events that end an instance unsuccessfully without
	// undoing it (e.g. an alert emitted when a compensation gives up).
	Failed []string `json:"failed,omitempty"`
	// Deadline bounds an instance from its Start event to an ending; 0
	// means none. A running instance that misses it times out: the
	// tracker emits TimedOutEvent (JSON: a duration, "2m0s").
	Deadline time.Duration `json:"deadline,omitempty"`
}

// Step is one step of a saga: a handler of Service that consumes Trigger
// and emits Success or Failure, and, if a later step fails, the
// compensation that undoes it.
type Step struct {
	// Name names the step, unique in the saga ("charge").
	Name string `json:"name"`
	// Service runs the step ("payment").
	Service string `json:"service"`
	// Trigger is the event whose handler runs the step; empty only for
	// the initiating first step (see Saga.Steps).
	Trigger string `json:"trigger,omitempty"`
	// Success is the event the step emits when it succeeds. Required.
	Success string `json:"success"`
	// Failure is the event the step emits when it fails for a business
	// reason (a declined card); empty when it cannot fail that way.
	Failure string `json:"failure,omitempty"`
	// Compensation undoes the step after a later step failed.
	Compensation *Compensation `json:"compensation,omitempty"`
	// NoCompensation, when the step needs no compensation, says why:
	// a pivot step (after it the saga only goes forward), the last
	// step, a step with nothing to undo. A step must declare either a
	// Compensation or NoCompensation.
	NoCompensation string `json:"no_compensation,omitempty"`
	// Deadline bounds the step from its Trigger to its Success or
	// Failure; 0 means none. It needs a Trigger (JSON: a duration).
	Deadline time.Duration `json:"deadline,omitempty"`
}

// Compensation is how a step is undone under choreography: its service
// consumes one of the On events (usually the failure of the next step, or
// the event proving that the next step's compensation ran), undoes its
// work and emits Done.
type Compensation struct {
	// On are the events that start the compensation. At least one.
	On []string `json:"on"`
	// Done is the event that proves the compensation ran. Required.
	Done string `json:"done"`
}

// Listener is a service that consumes some of the saga's events but does
// not change its outcome, such as a notifier. Its events are checked and
// drawn; the events it emits never trigger a step or end the saga.
type Listener struct {
	// Name names the listener, unique among the saga's listeners.
	Name string `json:"name"`
	// Service runs the listener.
	Service string `json:"service"`
	// On are the saga events it consumes. At least one.
	On []string `json:"on"`
	// Emits are the events it emits, if any.
	Emits []string `json:"emits,omitempty"`
}

// Kind is what an event means for a saga instance. Kinds start at one.
type Kind int

// The transitions an event can make.
const (
	// SagaStarted: the event is the saga's Start.
	SagaStarted Kind = iota + 1
	// StepStarted: the event triggers the step.
	StepStarted
	// StepSucceeded: the event is the step's Success.
	StepSucceeded
	// StepFailed: the event is the step's Failure.
	StepFailed
	// CompensationStarted: the event starts the step's compensation.
	CompensationStarted
	// CompensationDone: the event proves the step's compensation ran.
	CompensationDone
	// SagaCompleted: the event is one of the saga's Completed events.
	SagaCompleted
	// SagaCompensated: the event is one of the saga's Compensated events.
	SagaCompensated
	// SagaFailed: the event is one of the saga's Failed events.
	SagaFailed
	// Observed: a listener emitted the event; the state does not change.
	Observed
)

var kindNames = [...]string{"", "saga started", "step started", "step succeeded", "step failed",
	"compensation started", "compensation done", "saga completed", "saga compensated", "saga failed", "observed"}

// String names the kind ("step failed").
func (k Kind) String() string {
	if k <= 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Transition is one meaning of an event for a saga instance.
type Transition struct {
	Kind Kind
	// Step is the step concerned; empty for the saga-level kinds
	// (SagaStarted, SagaCompleted, SagaCompensated, SagaFailed) and for
	// Observed.
	Step string
	// Listener is the listener that emitted an Observed event.
	Listener string
}

func (t Transition) String() string {
	switch {
	case t.Step != "":
		return t.Kind.String() + " " + t.Step
	case t.Listener != "":
		return t.Kind.String() + " by " + t.Listener
	}
	return t.Kind.String()
}

// Transitions returns what event means for an instance of the saga, nil
// when the event is not the saga's. One event may mean several things:
// in the checkout, "inventory.failed" is both "step reserve failed" and
// "compensation of step charge started". The order is fixed: what the
// event ends (a step's success or failure, a compensation done), then the
// saga-level kinds, then what it starts (steps, compensations), then
// Observed; within each group, in declaration order. Read-only.
func (s *Saga) Transitions(event string) []Transition {
	var out []Transition
	s.eachTransition(event, func(t Transition) { out = append(out, t) })
	return out
}

// eachTransition calls visit with each transition event causes, in the
// order Transitions lists them, without allocating.
func (s *Saga) eachTransition(event string, visit func(Transition)) {
	if event == "" {
		return
	}
	for _, st := range s.Steps {
		switch event {
		case st.Success:
			visit(Transition{Kind: StepSucceeded, Step: st.Name})
		case st.Failure:
			visit(Transition{Kind: StepFailed, Step: st.Name})
		}
		if st.Compensation != nil && st.Compensation.Done == event {
			visit(Transition{Kind: CompensationDone, Step: st.Name})
		}
	}
	if event == s.Start {
		visit(Transition{Kind: SagaStarted})
	}
	for _, e := range s.Completed {
		if e == event {
			visit(Transition{Kind: SagaCompleted})
		}
	}
	for _, e := range s.Compensated {
		if e == event {
			visit(Transition{Kind: SagaCompensated})
		}
	}
	for _, e := range s.Failed {
		if e == event {
			visit(Transition{Kind: SagaFailed})
		}
	}
	for _, st := range s.Steps {
		if st.Trigger == event {
			visit(Transition{Kind: StepStarted, Step: st.Name})
		}
		if st.Compensation != nil && slices.Contains(st.Compensation.On, event) {
			visit(Transition{Kind: CompensationStarted, Step: st.Name})
		}
	}
	for _, l := range s.Listeners {
		if slices.Contains(l.Emits, event) {
			visit(Transition{Kind: Observed, Listener: l.Name})
		}
	}
}

// Events returns every event the saga names, sorted. Read-only.
func (s *Saga) Events() []string {
	var all []string
	add := func(es ...string) {
		for _, e := range es {
			if e != "" {
				all = append(all, e)
			}
		}
	}
	add(s.Start)
	for _, st := range s.Steps {
		add(st.Trigger, st.Success, st.Failure)
		if st.Compensation != nil {
			add(st.Compensation.On...)
			add(st.Compensation.Done)
		}
	}
	for _, l := range s.Listeners {
		add(l.On...)
		add(l.Emits...)
	}
	for _, end := range s.ends() {
		add(end.event)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// Step returns the step called name. Read-only.
func (s *Saga) Step(name string) (Step, bool) {
	for _, st := range s.Steps {
		if st.Name == name {
			return st, true
		}
	}
	return Step{}, false
}

// Services returns the services of the steps and listeners, in order of
// first appearance. Read-only.
func (s *Saga) Services() []string {
	var out []string
	for _, st := range s.Steps {
		if !slices.Contains(out, st.Service) {
			out = append(out, st.Service)
		}
	}
	for _, l := range s.Listeners {
		if !slices.Contains(out, l.Service) {
			out = append(out, l.Service)
		}
	}
	return out
}

// hasDeadline reports whether the saga or a step declares a deadline: then
// the tracker emits TimedOutEvent for it.
func (s *Saga) hasDeadline() bool {
	return s.Deadline > 0 || slices.ContainsFunc(s.Steps, func(st Step) bool { return st.Deadline > 0 })
}

type end struct {
	event string
	kind  Kind
}

// ends lists the ending events with their kinds, Completed first.
func (s *Saga) ends() []end {
	var out []end
	for _, e := range s.Completed {
		out = append(out, end{e, SagaCompleted})
	}
	for _, e := range s.Compensated {
		out = append(out, end{e, SagaCompensated})
	}
	for _, e := range s.Failed {
		out = append(out, end{e, SagaFailed})
	}
	return out
}

// nameRE is the shape of every name in a declaration: lower-case words
// separated by dots, as handlers requires of event names.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$`)
