package shop

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"

	"github.com/troupehq/troupe/saga"
)

// The live page's graph of one saga instance, drawn as SVG on the server:
//
//	start  ──▶ step ──▶ step ──▶ … ──▶ completed
//	                 ╲ (failure)
//	compensated ◀── undo ◀── undo
//
// the steps in a row in declaration order, each compensation ("undo
// <step>") below its step, the endings at both ends. Each node carries
// classes for the page's style sheet: its class of node (step, undo, end),
// how far the instance got there (pending, started, done, failed), and
// "current" on the node of the instance's current step.

const (
	graphBoxW   = 124
	graphBoxH   = 50
	graphColW   = 232
	graphMargin = 16
	graphRow0   = 34
	graphRow1   = 168
)

// graphNode is one box of the graph.
type graphNode struct {
	id, label, sub string
	col, row       int
	classes        []string
}

// graphEdge is an arrow between two boxes, labelled with its event.
type graphEdge struct {
	from, to, label, class string
}

// instanceFacts is what an instance's history says about each step.
type instanceFacts struct {
	started, succeeded, failed, compStarted, compDone map[string]bool
	completed, compensated                            bool
	compDeadLetter                                    bool // the last dead letter was a compensation's
}

func factsOf(s *saga.Saga, history []saga.Entry) instanceFacts {
	f := instanceFacts{started: map[string]bool{}, succeeded: map[string]bool{}, failed: map[string]bool{},
		compStarted: map[string]bool{}, compDone: map[string]bool{}}
	for _, e := range history {
		switch e.Kind {
		case saga.StepDeadLetter:
			f.compDeadLetter = false
		case saga.CompensationDeadLetter:
			f.compDeadLetter = true
		}
		for _, tr := range s.Transitions(e.Event) {
			switch tr.Kind {
			case saga.StepStarted:
				f.started[tr.Step] = true
			case saga.StepSucceeded:
				f.succeeded[tr.Step] = true
			case saga.StepFailed:
				f.failed[tr.Step] = true
			case saga.CompensationStarted:
				f.compStarted[tr.Step] = true
			case saga.CompensationDone:
				f.compDone[tr.Step] = true
			case saga.SagaCompleted:
				f.completed = true
			case saga.SagaCompensated:
				f.compensated = true
			}
		}
	}
	return f
}

// currentNode is the id of the node of the instance's current step: the
// compensation of in.Step while the instance compensates (or has), the
// step itself otherwise; "" when it has none.
func currentNode(s *saga.Saga, in saga.Instance, f instanceFacts) string {
	i := slices.IndexFunc(s.Steps, func(st saga.Step) bool { return st.Name == in.Step })
	if i < 0 {
		return ""
	}
	undo := s.Steps[i].Compensation != nil && (f.compStarted[in.Step] || f.compDone[in.Step])
	switch in.State {
	case saga.Compensating, saga.Compensated, saga.TimedOut:
		if undo && !f.failed[in.Step] {
			return fmt.Sprintf("c%d", i)
		}
	case saga.Failed:
		if undo && f.compDeadLetter {
			return fmt.Sprintf("c%d", i)
		}
	}
	return fmt.Sprintf("s%d", i)
}

// graphOf lays out s's graph with in's progress.
func graphOf(s *saga.Saga, in saga.Instance) ([]graphNode, []graphEdge) {
	f := factsOf(s, in.History)
	cur := currentNode(s, in, f)
	end := func(reached bool) string {
		if reached {
			return "reached"
		}
		return "pending"
	}
	nodes := []graphNode{{id: "start", label: s.Name, sub: "start", col: 0, row: 0, classes: []string{"end", "reached"}}}
	var edges []graphEdge
	lastUndo := "" // the undo node left of the current column
	for i, st := range s.Steps {
		id := fmt.Sprintf("s%d", i)
		state := "pending"
		switch {
		case f.failed[st.Name]:
			state = "failed"
		case f.succeeded[st.Name]:
			state = "done"
		case f.started[st.Name]:
			state = "started"
		}
		nodes = append(nodes, graphNode{id: id, label: st.Name, sub: st.Service, col: i + 1, row: 0, classes: []string{"step", state}})
		if i == 0 {
			edges = append(edges, graphEdge{"start", id, st.Trigger, "success"})
		} else {
			edges = append(edges, graphEdge{fmt.Sprintf("s%d", i-1), id, st.Trigger, "success"})
		}
		if st.Compensation != nil {
			cid := fmt.Sprintf("c%d", i)
			cstate := "pending"
			switch {
			case f.compDone[st.Name]:
				cstate = "done"
			case f.compStarted[st.Name] && (f.succeeded[st.Name] || f.started[st.Name]):
				cstate = "started"
			}
			nodes = append(nodes, graphNode{id: cid, label: "undo " + st.Name, sub: st.Service, col: i + 1, row: 1, classes: []string{"undo", cstate}})
			if lastUndo != "" {
				edges = append(edges, graphEdge{cid, lastUndo, st.Compensation.Done, "compensation"})
			} else {
				edges = append(edges, graphEdge{cid, "compensated", st.Compensation.Done, "compensation"})
			}
			lastUndo = cid
		}
		// A failure starts the compensations that listen to it.
		for j, other := range s.Steps {
			if st.Failure != "" && other.Compensation != nil && slices.Contains(other.Compensation.On, st.Failure) {
				edges = append(edges, graphEdge{id, fmt.Sprintf("c%d", j), st.Failure, "failure"})
			}
		}
	}
	last := len(s.Steps)
	edges = append(edges, graphEdge{fmt.Sprintf("s%d", last-1), "completed", s.Steps[last-1].Success, "success"})
	nodes = append(nodes,
		graphNode{id: "completed", label: "completed", col: last + 1, row: 0, classes: []string{"end", end(f.completed)}},
		graphNode{id: "compensated", label: "compensated", col: 0, row: 1, classes: []string{"end", end(f.compensated)}})
	for i := range nodes {
		if nodes[i].id == cur {
			nodes[i].classes = append(nodes[i].classes, "current")
		}
	}
	return nodes, edges
}

// writeGraphSVG writes the graph of instance in of saga s as an SVG
// document.
func writeGraphSVG(w io.Writer, s *saga.Saga, in saga.Instance) error {
	nodes, edges := graphOf(s, in)
	cols := len(s.Steps) + 2
	width := 2*graphMargin + (cols-1)*graphColW + graphBoxW
	height := graphRow1 + graphBoxH + graphMargin
	pos := map[string]graphNode{}
	for _, n := range nodes {
		pos[n.id] = n
	}
	p := &svgPrinter{w: w}
	p.printf(`<svg xmlns="http://www.w3.org/2000/svg" class="saga-graph" viewBox="0 0 %d %d" role="img" aria-label="%s">`+"\n",
		width, height, html.EscapeString("saga "+s.Name+" of "+in.ID))
	p.printf(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>` + "\n")
	for _, e := range edges {
		a, ok1 := pos[e.from]
		b, ok2 := pos[e.to]
		if !ok1 || !ok2 {
			continue
		}
		x1, y1, x2, y2 := edgeEnds(a, b)
		p.printf(`<g class="edge %s"><line x1="%d" y1="%d" x2="%d" y2="%d" marker-end="url(#arrow)"/>`, e.class, x1, y1, x2, y2)
		if e.label != "" {
			// Along a row, centred above the arrow; across rows, below and right of
			// its middle.
			anchor, lx, ly := "middle", (x1+x2)/2, (y1+y2)/2-6
			if a.row != b.row {
				anchor, lx, ly = "start", (x1+x2)/2+8, (y1+y2)/2+14
			}
			p.printf(`<text x="%d" y="%d" text-anchor="%s">%s</text>`, lx, ly, anchor, html.EscapeString(e.label))
		}
		p.printf("</g>\n")
	}
	for _, n := range nodes {
		x, y := nodeXY(n)
		p.printf(`<g class="node %s" data-node="%s"><rect x="%d" y="%d" width="%d" height="%d" rx="8"/>`,
			strings.Join(n.classes, " "), n.id, x, y, graphBoxW, graphBoxH)
		if n.sub != "" {
			p.printf(`<text class="label" x="%d" y="%d">%s</text><text class="sub" x="%d" y="%d">%s</text>`,
				x+graphBoxW/2, y+22, html.EscapeString(n.label), x+graphBoxW/2, y+39, html.EscapeString(n.sub))
		} else {
			p.printf(`<text class="label" x="%d" y="%d">%s</text>`, x+graphBoxW/2, y+30, html.EscapeString(n.label))
		}
		p.printf("</g>\n")
	}
	p.printf("</svg>\n")
	return p.err
}

func nodeXY(n graphNode) (int, int) {
	y := graphRow0
	if n.row == 1 {
		y = graphRow1
	}
	return graphMargin + n.col*graphColW, y
}

// edgeEnds returns where an arrow from a to b starts and ends: between
// the facing sides of boxes in one row, from bottom to top across rows.
func edgeEnds(a, b graphNode) (x1, y1, x2, y2 int) {
	ax, ay := nodeXY(a)
	bx, by := nodeXY(b)
	switch {
	case a.row == b.row && ax < bx:
		return ax + graphBoxW, ay + graphBoxH/2, bx, by + graphBoxH/2
	case a.row == b.row:
		return ax, ay + graphBoxH/2, bx + graphBoxW, by + graphBoxH/2
	case a.row < b.row:
		return ax + graphBoxW/2, ay + graphBoxH, bx + graphBoxW/2, by
	default:
		return ax + graphBoxW/2, ay, bx + graphBoxW/2, by + graphBoxH
	}
}

// svgPrinter keeps the first write error.
type svgPrinter struct {
	w   io.Writer
	err error
}

func (p *svgPrinter) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}
