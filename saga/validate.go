package saga

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Defect classifies a problem found by Validate or Check. Defects start
// at one.
type Defect int

// The defect classes.
const (
	// Malformed: a field is missing, malformed or duplicated, or two
	// roles collide (two steps emit the same event).
	Malformed Defect = iota + 1
	// Unconsumed: a step's trigger, a compensation's event or a
	// listener's event that no handler of the declared service consumes.
	Unconsumed
	// Uncompensated: a step with neither Compensation nor NoCompensation,
	// or a failure whose path never starts the compensation of a step
	// that completed before it.
	Uncompensated
	// DeadEnd: an event from which no path leads to an ending event;
	// a failure with no path to an end is one.
	DeadEnd
	// Cycle: events that lead back to themselves.
	Cycle
	// Unreachable: a trigger or compensation event that the saga never
	// emits, or that no path from Start reaches.
	Unreachable
	// Undeclared: a handler of one of the saga's services consumes one of
	// its events, but the declaration does not say so.
	Undeclared
)

var defectNames = [...]string{"", "malformed", "unconsumed", "uncompensated", "dead end", "cycle", "unreachable", "undeclared"}

// String names the defect ("dead end").
func (d Defect) String() string {
	if d <= 0 || int(d) >= len(defectNames) {
		return fmt.Sprintf("Defect(%d)", int(d))
	}
	return defectNames[d]
}

// DefectError is one problem of a declaration, naming the saga and, where
// they apply, the step (or listener) and event. Validate and Check join
// them with errors.Join; match one with errors.AsType[*DefectError] or
// list them with Defects.
type DefectError struct {
	Saga     string
	Step     string
	Listener string
	Event    string
	Defect   Defect
	Detail   string
}

func (e *DefectError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "saga %s: ", e.Saga)
	if e.Step != "" {
		fmt.Fprintf(&b, "step %s: ", e.Step)
	}
	if e.Listener != "" {
		fmt.Fprintf(&b, "listener %s: ", e.Listener)
	}
	if e.Event != "" {
		fmt.Fprintf(&b, "event %s: ", e.Event)
	}
	fmt.Fprintf(&b, "%s: %s", e.Defect, e.Detail)
	return b.String()
}

// Defects returns the DefectErrors in err (as returned by Validate or
// Check), in order.
func Defects(err error) []*DefectError {
	var out []*DefectError
	var walk func(error)
	walk = func(err error) {
		if d, ok := err.(*DefectError); ok {
			out = append(out, d)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// Validate checks the declaration by itself and reports every problem,
// joined: malformed or missing fields and names, a step with no
// compensation (unless NoCompensation says why), events emitted by two
// steps, ending events that no step emits, and then, once the fields are
// well-formed, the paths: an event with no path to an end (a failure
// that leads nowhere), a cycle, a step that Start never reaches, a
// failure that never starts the compensation of a step completed before
// it. Read-only; safe for concurrent use.
func (s *Saga) Validate() error {
	if s == nil {
		return errNilSaga
	}
	v := &validator{s: s}
	v.fields()
	// The paths mean something only once the fields are well-formed.
	if !v.malformed() {
		f := newFlow(s)
		v.paths(f)
		v.compensations(f)
	}
	return errors.Join(v.errs...)
}

var errNilSaga = errors.New("saga: nil declaration")

type validator struct {
	s    *Saga
	errs []error
}

func (v *validator) malformed() bool {
	return slices.ContainsFunc(v.errs, func(err error) bool { return err.(*DefectError).Defect == Malformed })
}

func (v *validator) add(d Defect, step, event, format string, args ...any) {
	v.errs = append(v.errs, &DefectError{Saga: v.s.Name, Step: step, Event: event, Defect: d, Detail: fmt.Sprintf(format, args...)})
}

func (v *validator) addListener(listener, event, format string, args ...any) {
	v.errs = append(v.errs, &DefectError{Saga: v.s.Name, Listener: listener, Event: event, Defect: Malformed, Detail: fmt.Sprintf(format, args...)})
}

// name checks a required name field.
func (v *validator) name(step, field, value string) {
	switch {
	case value == "":
		v.add(Malformed, step, "", "%s is required", field)
	case !nameRE.MatchString(value):
		v.add(Malformed, step, "", "%s %q is not lower-case words separated by dots", field, value)
	}
}

// event checks an event name (which may be optional).
func (v *validator) event(step, field, value string, required bool) {
	switch {
	case value == "" && required:
		v.add(Malformed, step, "", "%s event is required", field)
	case value != "" && !nameRE.MatchString(value):
		v.add(Malformed, step, value, "%s event is not lower-case words separated by dots", field)
	}
}

// role is who emits an event, for the uniqueness check.
type role struct {
	step, what string
}

func (v *validator) fields() {
	s := v.s
	v.name("", "saga name", s.Name)
	v.event("", "start", s.Start, true)
	if len(s.Steps) == 0 {
		v.add(Malformed, "", "", "no steps")
	}
	emitters := map[string]role{}
	emit := func(event string, r role) {
		if event == "" {
			return
		}
		if prev, ok := emitters[event]; ok {
			v.add(Malformed, r.step, event, "is both the %s of step %s and the %s of step %s; each event has one meaning", prev.what, prev.step, r.what, r.step)
			return
		}
		emitters[event] = r
	}
	steps := map[string]bool{}
	for i, st := range s.Steps {
		v.step(i, st, steps)
		emit(st.Success, role{st.Name, "success"})
		emit(st.Failure, role{st.Name, "failure"})
		if st.Compensation != nil {
			emit(st.Compensation.Done, role{st.Name, "compensation done"})
		}
	}
	if len(s.Steps) > 0 && s.Steps[0].Trigger != "" {
		if r, ok := emitters[s.Start]; ok {
			v.add(Malformed, r.step, s.Start, "the start event is also the %s of step %s; give the first step no trigger to make it the initiating step", r.what, r.step)
		}
	}
	v.listeners(emitters)
	v.endings(emitters)
	v.deadlines(emitters)
}

// deadlines checks the deadlines: none negative, a step deadline only on a
// triggered step, and TimedOutEvent emitted by no step (the tracker emits
// it; a saga without deadlines that consumes it is told by the path
// check that no step emits it).
func (v *validator) deadlines(emitters map[string]role) {
	s := v.s
	if s.Deadline < 0 {
		v.add(Malformed, "", "", "negative deadline %v", s.Deadline)
	}
	for _, st := range s.Steps {
		switch {
		case st.Deadline < 0:
			v.add(Malformed, st.Name, "", "negative deadline %v", st.Deadline)
		case st.Deadline > 0 && st.Trigger == "":
			v.add(Malformed, st.Name, "", "a step deadline runs from the step's trigger, and the step has none")
		}
	}
	if r, ok := emitters[TimedOutEvent]; ok {
		v.add(Malformed, r.step, TimedOutEvent, "the tracker emits this event; a step cannot be its %s", r.what)
	}
}

func (v *validator) step(i int, st Step, seen map[string]bool) {
	v.name(st.Name, "step name", st.Name)
	if st.Name == "" {
		st.Name = fmt.Sprintf("#%d", i+1)
	}
	if seen[st.Name] {
		v.add(Malformed, st.Name, "", "duplicate step name")
	}
	seen[st.Name] = true
	v.name(st.Name, "service", st.Service)
	switch {
	case st.Trigger == "" && i > 0:
		v.add(Malformed, st.Name, "", "trigger event is required (only the first step may be the initiating step, without one)")
	case st.Trigger == "" && st.Success != v.s.Start:
		v.add(Malformed, st.Name, st.Success, "the initiating step (no trigger) must succeed with the start event %s", v.s.Start)
	}
	v.event(st.Name, "trigger", st.Trigger, false)
	v.event(st.Name, "success", st.Success, true)
	v.event(st.Name, "failure", st.Failure, false)
	if st.Trigger != "" && (st.Trigger == st.Success || st.Trigger == st.Failure) {
		v.add(Malformed, st.Name, st.Trigger, "the step emits its own trigger")
	}
	c := st.Compensation
	switch {
	case c != nil && st.NoCompensation != "":
		v.add(Malformed, st.Name, "", "declares both a compensation and NoCompensation (%q)", st.NoCompensation)
	case c == nil && st.NoCompensation == "":
		v.add(Uncompensated, st.Name, "", "no compensation: declare one, or NoCompensation with the reason none is needed (a pivot or the last step)")
	case c != nil:
		if len(c.On) == 0 {
			v.add(Malformed, st.Name, "", "compensation has no event that starts it")
		}
		for j, e := range c.On {
			v.event(st.Name, "compensation", e, true)
			if slices.Contains(c.On[:j], e) {
				v.add(Malformed, st.Name, e, "compensation event listed twice")
			}
			if e == st.Trigger {
				v.add(Malformed, st.Name, e, "the step's trigger also starts its compensation")
			}
		}
		v.event(st.Name, "compensation done", c.Done, true)
	}
}

func (v *validator) listeners(emitters map[string]role) {
	s := v.s
	// A listener may consume what another listener emits (the order
	// service recording notify's notification.sent, say): such events
	// follow the saga without changing its outcome.
	byListeners := map[string][]string{}
	for _, l := range s.Listeners {
		for _, e := range l.Emits {
			byListeners[e] = append(byListeners[e], l.Name)
		}
	}
	stepEvent := func(e string) bool {
		_, ok := emitters[e]
		return ok || e == s.Start
	}
	inSaga := func(l Listener, e string) bool {
		if stepEvent(e) {
			return true
		}
		for _, name := range byListeners[e] {
			if name != l.Name {
				return true
			}
		}
		return false
	}
	seen := map[string]bool{}
	for _, l := range s.Listeners {
		if !nameRE.MatchString(l.Name) {
			v.addListener(l.Name, "", "listener name %q is not lower-case words separated by dots", l.Name)
		}
		if seen[l.Name] {
			v.addListener(l.Name, "", "duplicate listener name")
		}
		seen[l.Name] = true
		if !nameRE.MatchString(l.Service) {
			v.addListener(l.Name, "", "service %q is not lower-case words separated by dots", l.Service)
		}
		if len(l.On) == 0 {
			v.addListener(l.Name, "", "consumes no event")
		}
		for _, e := range l.On {
			if !inSaga(l, e) {
				v.addListener(l.Name, e, "is not an event of the saga (the start, a step's success, failure or compensation done, or another listener's)")
			}
		}
		for _, e := range l.Emits {
			switch {
			case !nameRE.MatchString(e):
				v.addListener(l.Name, e, "emitted event is not lower-case words separated by dots")
			case stepEvent(e):
				v.addListener(l.Name, e, "a listener may not emit an event of the saga's steps")
			case v.drives(e):
				v.addListener(l.Name, e, "a listener's event may not start a step or a compensation")
			}
		}
	}
}

// drives reports whether event starts a step or a compensation.
func (v *validator) drives(event string) bool {
	for _, st := range v.s.Steps {
		if st.Trigger == event || (st.Compensation != nil && slices.Contains(st.Compensation.On, event)) {
			return true
		}
	}
	return false
}

func (v *validator) endings(emitters map[string]role) {
	s := v.s
	if len(s.Completed) == 0 {
		v.add(Malformed, "", "", "no completed event: declare the event that ends the saga successfully")
	}
	seen := map[string]Kind{}
	for _, end := range s.ends() {
		if k, ok := seen[end.event]; ok {
			v.add(Malformed, "", end.event, "ends the saga twice (%s and %s)", k, end.kind)
			continue
		}
		seen[end.event] = end.kind
		if _, ok := emitters[end.event]; !ok {
			v.add(Malformed, "", end.event, "%s event is not emitted by any step (as success, failure or compensation done)", end.kind)
		}
		for _, st := range s.Steps {
			if st.Trigger == end.event {
				v.add(Malformed, st.Name, end.event, "the step is triggered by an event that ends the saga (%s)", end.kind)
			}
		}
	}
}

// paths checks what the event graph allows: every event reaches an end,
// no cycle, every trigger reachable from Start.
func (v *validator) paths(g *flow) {
	for _, c := range g.cycles() {
		v.add(Cycle, c.step, c.event, "consuming it closes a loop of events: %s", strings.Join(c.path, " -> "))
	}
	reach := g.reachable(v.s.Start)
	for _, st := range v.s.Steps {
		if st.Trigger != "" && !reach[st.Trigger] {
			v.add(Unreachable, st.Name, st.Trigger, "no path from the start event %s leads to this trigger", v.s.Start)
		}
		if st.Compensation != nil {
			for _, e := range st.Compensation.On {
				if !g.emitted(e) {
					v.add(Unreachable, st.Name, e, "the compensation event is emitted by no step")
				}
			}
		}
	}
	for _, st := range v.s.Steps {
		v.deadEnd(g, st.Name, st.Success, "the success")
		v.deadEnd(g, st.Name, st.Failure, "the failure")
		if st.Compensation != nil {
			v.deadEnd(g, st.Name, st.Compensation.Done, "the compensation done event")
		}
	}
}

func (v *validator) deadEnd(g *flow, step, event, what string) {
	if event == "" {
		return
	}
	for e := range g.reachable(event) {
		if g.isEnd(e) {
			return
		}
	}
	v.add(DeadEnd, step, event, "%s has no path to an end (no step, compensation or ending consumes what follows it)", what)
}

// compensations checks that each failure starts, on its way to an end,
// the compensation of every compensable step completed before the
// failing step.
func (v *validator) compensations(g *flow) {
	for _, st := range v.s.Steps {
		if st.Failure == "" {
			continue
		}
		after := g.reachable(st.Failure)
		for _, prev := range g.before(st) {
			c := prev.Compensation
			if c == nil {
				continue
			}
			started := slices.ContainsFunc(c.On, func(e string) bool { return after[e] })
			if !started {
				v.add(Uncompensated, st.Name, st.Failure, "the failure never starts the compensation of step %s (%s), which completed before it", prev.Name, prev.Service)
			}
		}
	}
}
