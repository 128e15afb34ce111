package saga

import (
	"slices"
)

// flow is a saga's events as a graph: an edge leads from an event to each
// event that its consumer may emit (a step's trigger to its success and
// failure, a compensation's events to its done event).
type flow struct {
	s     *Saga
	next  map[string][]edge
	emits map[string]bool
	ends  map[string]bool
}

type edge struct {
	to, step string
}

func newFlow(s *Saga) *flow {
	f := &flow{s: s, next: map[string][]edge{}, emits: map[string]bool{s.Start: true}, ends: map[string]bool{}}
	link := func(from, to, step string) {
		if from != "" && to != "" {
			f.next[from] = append(f.next[from], edge{to, step})
		}
	}
	for _, st := range s.Steps {
		link(st.Trigger, st.Success, st.Name)
		link(st.Trigger, st.Failure, st.Name)
		f.emits[st.Success] = true
		f.emits[st.Failure] = true
		if c := st.Compensation; c != nil {
			for _, on := range c.On {
				link(on, c.Done, st.Name)
			}
			f.emits[c.Done] = true
		}
	}
	if s.hasDeadline() {
		f.emits[TimedOutEvent] = true // by the tracker
	}
	for _, end := range s.ends() {
		f.ends[end.event] = true
	}
	return f
}

func (f *flow) emitted(event string) bool { return f.emits[event] }

func (f *flow) isEnd(event string) bool { return f.ends[event] }

// reachable returns the events reachable from event, itself included.
func (f *flow) reachable(event string) map[string]bool {
	seen := map[string]bool{event: true}
	todo := []string{event}
	for len(todo) > 0 {
		e := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, n := range f.next[e] {
			if !seen[n.to] {
				seen[n.to] = true
				todo = append(todo, n.to)
			}
		}
	}
	return seen
}

// before returns the steps that have succeeded when st starts: walking
// back from its trigger through the steps whose success it is.
func (f *flow) before(st Step) []Step {
	var out []Step
	seen := map[string]bool{}
	for trigger := st.Trigger; trigger != "" && !seen[trigger]; {
		seen[trigger] = true
		i := slices.IndexFunc(f.s.Steps, func(p Step) bool { return p.Success == trigger })
		if i < 0 {
			break
		}
		out = append(out, f.s.Steps[i])
		trigger = f.s.Steps[i].Trigger
	}
	return out
}

// cycle is one loop of events, found at the edge that closes it.
type cycle struct {
	step, event string
	path        []string
}

// cycles finds the loops by depth-first search from every event in sorted
// order: each edge back into the search path closes one.
func (f *flow) cycles() []cycle {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var out []cycle
	var visit func(e string)
	visit = func(e string) {
		color[e] = grey
		stack = append(stack, e)
		for _, n := range f.next[e] {
			switch color[n.to] {
			case white:
				visit(n.to)
			case grey:
				i := slices.Index(stack, n.to)
				path := append(slices.Clone(stack[i:]), n.to)
				out = append(out, cycle{step: n.step, event: e, path: path})
			}
		}
		stack = stack[:len(stack)-1]
		color[e] = black
	}
	events := make([]string, 0, len(f.next))
	for e := range f.next {
		events = append(events, e)
	}
	slices.Sort(events)
	// Start first, so that a loop is reported from where the saga enters it.
	if i := slices.Index(events, f.s.Start); i > 0 {
		events = append([]string{f.s.Start}, slices.Delete(events, i, i+1)...)
	}
	for _, e := range events {
		if color[e] == white {
			visit(e)
		}
	}
	return out
}
