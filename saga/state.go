package saga

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// State is where an instance of a saga is.
type State string

// The states of an instance. Which one an instance is in is derived from
// the set of its history entries, not from their order: see [Derive].
const (
	// Running: started, no step failed, no ending seen.
	Running State = "running"
	// Completed: one of the saga's Completed events was seen.
	Completed State = "completed"
	// Compensating: a step failed or a compensation started, no ending
	// seen yet.
	Compensating State = "compensating"
	// Compensated: one of the saga's Compensated events was seen.
	Compensated State = "compensated"
	// Failed: a step's or a compensation's message went to a dead-letter
	// queue and no operator settled it yet, or a Failed event was seen.
	// The instance is parked: nothing moves it on but an operator
	// (resume, skip, resolve) or the missing event itself.
	Failed State = "failed"
	// TimedOut: the instance missed a deadline (the tracker emitted
	// TimedOutEvent) and its compensation has not ended yet.
	TimedOut State = "timed_out"
	// Resolved: an operator declared the instance settled by hand.
	Resolved State = "resolved"
)

// States lists every state, for validation of a query.
var States = []State{Running, Completed, Compensating, Compensated, Failed, TimedOut, Resolved}

// EntryKind is what a history entry records.
type EntryKind string

// The kinds of history entries.
const (
	// EventEntry: an event of the saga, as consumed from the bus.
	EventEntry EntryKind = "event"
	// StepDeadLetter: the message that triggers a step went to a
	// dead-letter queue (handlers.DeadLettered).
	StepDeadLetter EntryKind = "step_dead_letter"
	// CompensationDeadLetter: the message that starts a compensation went
	// to a dead-letter queue.
	CompensationDeadLetter EntryKind = "compensation_dead_letter"
	// TimedOutEntry: a deadline was missed and TimedOutEvent emitted.
	TimedOutEntry EntryKind = "timed_out"
	// ResumeEntry, SkipEntry and ResolveEntry are operator actions.
	ResumeEntry  EntryKind = "resume"
	SkipEntry    EntryKind = "skip"
	ResolveEntry EntryKind = "resolve"
)

// Entry is one line of an instance's history.
type Entry struct {
	// Seq orders the entries as the tracker recorded them.
	Seq int64 `json:"seq"`
	// At is when it happened: the event's production time, the
	// deadline's check, the operator's action.
	At time.Time `json:"at"`
	// RecordedAt is when the tracker recorded it.
	RecordedAt time.Time `json:"recorded_at"`
	Kind       EntryKind `json:"kind"`
	// Event is the event consumed, emitted (saga.timed_out) or
	// dead-lettered.
	Event string `json:"event,omitempty"`
	// MessageID is the message recorded (for a dead letter: the
	// handlers.DeadLettered announcement; for an action: its own id).
	MessageID string `json:"message_id"`
	// CausationID is the message that caused it; for a dead letter, the
	// dead letter's own message id.
	CausationID string `json:"causation_id,omitempty"`
	// Step is the step concerned, if one is.
	Step string `json:"step,omitempty"`
	// Meaning says what the entry meant for the instance ("step failed
	// charge; compensation started place").
	Meaning string `json:"meaning,omitempty"`
	// Error is the reason: a failure event's "reason" field, a dead
	// letter's error, a missed deadline.
	Error string `json:"error,omitempty"`
	// Actor is who did an operator action.
	Actor string `json:"actor,omitempty"`
	// Queue is the dead-letter queue of a dead letter.
	Queue string `json:"queue,omitempty"`
	// TraceID is the W3C trace id (32 hex digits) of the message's trace
	// context (its traceparent), when it had one: the trace to look the
	// entry up in a tracing UI.
	TraceID string `json:"trace_id,omitempty"`
}

// Status is what Derive concludes from a history.
type Status struct {
	State State
	// Step is the current step: the furthest started while running, the
	// compensation under way while compensating, the step whose message
	// is dead-lettered while failed, the last step when completed.
	Step string
	// Reason explains a failed, timed-out or compensating instance.
	Reason    string
	StartedAt time.Time
	// DeadlineAt is the next deadline of a running instance (zero: none)
	// and Deadline what it bounds ("saga", "step charge").
	DeadlineAt time.Time
	Deadline   string
}

// facts is what a history says, independent of its order.
type facts struct {
	steps                                                  []stepFacts // as s.Steps
	completed, compensated, sagaFailed, resolved, timedOut bool
	startAt, firstAt                                       time.Time
	failure                                                *Entry // unsettled dead letter
	reason, timeoutReason                                  string
}

// stepFacts is what a history says of one step.
type stepFacts struct {
	started, succeeded, failed, compStarted, compDone, skipped bool
	triggered                                                  bool      // startAt is set
	startAt                                                    time.Time // the earliest trigger's production time
}

// step returns the facts of the step named name, nil for a name the saga
// does not declare (which no rule reads).
func (f *facts) step(s *Saga, name string) *stepFacts {
	for i := range s.Steps {
		if s.Steps[i].Name == name {
			return &f.steps[i]
		}
	}
	return nil
}

// Derive computes an instance's status from its history. The rule, which
// makes the result independent of the order in which events arrive
// (payment.captured recorded before order.placed gives the same status
// once both are in), is a precedence over the set of entries:
//
//  1. completed, if a Completed event is in the set;
//  2. compensated, if a Compensated event is;
//  3. failed, if a Failed event is;
//  4. resolved, if an operator resolved the instance;
//  5. failed, if a dead letter of the instance is unsettled: no operator
//     resumed or skipped it since (operator actions and dead letters are
//     ordered by Seq, the order the tracker recorded them; they happen one
//     after another, not concurrently), and the event proving that its
//     step or compensation ran after all is not in the set;
//  6. timed_out, if a deadline was missed;
//  7. compensating, if a step failed or a compensation started;
//  8. running otherwise.
//
// A compensation counts as started only for a step that started (a
// timeout does not undo a step that never ran), and as pending only for a
// step that did not fail (a failed step has nothing to undo). Deadlines are computed
// from the production times of the Start event and of each step's
// trigger, so they too do not depend on arrival order. Pure; safe for
// concurrent use.
func Derive(s *Saga, history []Entry) Status {
	f := collect(s, history)
	st := Status{StartedAt: f.startAt}
	if st.StartedAt.IsZero() {
		st.StartedAt = f.firstAt
	}
	switch {
	case f.completed:
		st.State = Completed
	case f.compensated:
		st.State = Compensated
	case f.sagaFailed:
		st.State, st.Reason = Failed, f.reason
	case f.resolved:
		st.State = Resolved
	case f.failure != nil:
		st.State, st.Step, st.Reason = Failed, f.failure.Step, f.failure.Error
		return st
	case f.timedOut:
		st.State, st.Reason = TimedOut, f.timeoutReason
	case f.anyStepFailed() || f.anyCompensation():
		st.State, st.Reason = Compensating, f.reason
	default:
		st.State = Running
	}
	st.Step = f.currentStep(s, st.State)
	if st.State == Running {
		st.DeadlineAt, st.Deadline = f.nextDeadline(s, st.StartedAt)
	}
	return st
}

func collect(s *Saga, history []Entry) *facts {
	f := &facts{steps: make([]stepFacts, len(s.Steps))}
	h := history
	bySeq := func(a, b Entry) int { return cmp.Compare(a.Seq, b.Seq) }
	if !slices.IsSortedFunc(h, bySeq) {
		h = slices.Clone(history)
		slices.SortFunc(h, bySeq)
	}
	for i := range h {
		e := &h[i]
		if f.firstAt.IsZero() || e.At.Before(f.firstAt) {
			f.firstAt = e.At
		}
		switch e.Kind {
		case EventEntry:
			f.event(s, e)
		case TimedOutEntry:
			f.timedOut, f.timeoutReason = true, e.Error
			f.event(s, e)
		case StepDeadLetter, CompensationDeadLetter:
			f.failure = e
		case ResumeEntry:
			f.failure = nil
		case SkipEntry:
			f.failure = nil
			if st := f.step(s, e.Step); st != nil {
				st.skipped = true
			}
		case ResolveEntry:
			f.resolved = true
		}
	}
	if d := f.failure; d != nil {
		st := f.step(s, d.Step)
		settled := st != nil && (d.Kind == CompensationDeadLetter && st.compDone ||
			d.Kind == StepDeadLetter && (st.succeeded || st.failed))
		if settled {
			f.failure = nil
		}
	}
	return f
}

// event adds what an event means.
func (f *facts) event(s *Saga, e *Entry) {
	if e.Error != "" && e.Kind == EventEntry && f.reason == "" {
		f.reason = e.Error
	}
	s.eachTransition(e.Event, func(tr Transition) {
		switch tr.Kind {
		case SagaStarted:
			if f.startAt.IsZero() || e.At.Before(f.startAt) {
				f.startAt = e.At
			}
			return
		case SagaCompleted:
			f.completed = true
			return
		case SagaCompensated:
			f.compensated = true
			return
		case SagaFailed:
			f.sagaFailed = true
			return
		}
		st := f.step(s, tr.Step)
		if st == nil {
			return
		}
		switch tr.Kind {
		case StepStarted:
			st.started = true
			if !st.triggered || e.At.Before(st.startAt) {
				st.triggered, st.startAt = true, e.At
			}
		case StepSucceeded:
			st.succeeded = true
		case StepFailed:
			st.failed = true
		case CompensationStarted:
			st.compStarted = true
		case CompensationDone:
			st.compDone = true
		}
	})
}

// anyStepFailed reports whether a step's failure event is in the history.
func (f *facts) anyStepFailed() bool {
	return slices.ContainsFunc(f.steps, func(st stepFacts) bool { return st.failed })
}

// ran reports whether the step started, in any way.
func (st *stepFacts) ran() bool {
	return st.started || st.succeeded || st.failed
}

func (f *facts) anyCompensation() bool {
	for i := range f.steps {
		st := &f.steps[i]
		if st.compDone || st.compStarted && st.ran() {
			return true
		}
	}
	return false
}

func (f *facts) currentStep(s *Saga, state State) string {
	steps := s.Steps
	switch state {
	case Completed:
		return steps[len(steps)-1].Name
	case Running:
		for i := len(steps) - 1; i >= 0; i-- {
			if f.steps[i].ran() {
				return steps[i].Name
			}
		}
		return ""
	}
	// Compensations run backwards: the pending one furthest along is
	// under way; with none pending, the last one done.
	for i := len(steps) - 1; i >= 0; i-- {
		st := &f.steps[i]
		if st.compStarted && st.ran() && !st.failed && !st.compDone && !st.skipped {
			return steps[i].Name
		}
	}
	for i := range steps {
		if f.steps[i].compDone || f.steps[i].skipped {
			return steps[i].Name
		}
	}
	for i := len(steps) - 1; i >= 0; i-- {
		if f.steps[i].failed {
			return steps[i].Name
		}
	}
	return ""
}

// nextDeadline returns the earliest deadline of a running instance.
func (f *facts) nextDeadline(s *Saga, startedAt time.Time) (time.Time, string) {
	var at time.Time
	var what string
	consider := func(t time.Time, w string) {
		if at.IsZero() || t.Before(at) {
			at, what = t, w
		}
	}
	if s.Deadline > 0 && !startedAt.IsZero() {
		consider(startedAt.Add(s.Deadline), "saga")
	}
	for i, st := range s.Steps {
		sf := &f.steps[i]
		if st.Deadline > 0 && sf.triggered && !sf.succeeded && !sf.failed {
			consider(sf.startAt.Add(st.Deadline), "step "+st.Name)
		}
	}
	return at, what
}

// meaning describes the transitions of an event.
func meaning(trs []Transition) string {
	parts := make([]string, len(trs))
	for i, t := range trs {
		parts[i] = t.String()
	}
	return strings.Join(parts, "; ")
}
