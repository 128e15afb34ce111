package saga

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// The graph of a saga, as WriteMermaid and WriteDOT draw it:
//   - a node per step and per compensation ("undo <step>"), grouped by
//     service (a Mermaid subgraph, a DOT cluster), a node per listener,
//     a start node named after the saga, a "deadline missed" node (the
//     tracker, emitting saga.timed_out) when the saga has deadlines, and
//     a node per kind of ending (completed, compensated, failed);
//   - an edge per event from the node that emits it to each node that
//     consumes it, labelled with the event's name;
//   - the success path solid (green), failures dashed (red), the
//     compensation path thick (orange), listeners' events dotted (grey).
//
// The output depends only on the declaration, in its order, so it is
// stable across runs and fit for golden files and docs.

type edgeStyle int

const (
	plainEdge edgeStyle = iota + 1
	successEdge
	failureEdge
	compensationEdge
	listenerEdge
)

type nodeClass int

const (
	startNode nodeClass = iota + 1
	stepNode
	compensationNode
	listenerNode
	completedNode
	unsuccessfulNode // compensated or failed ending
	outputNode       // an event a listener emits that nobody in the saga consumes
)

type gnode struct {
	id, label string
	class     nodeClass
}

type gedge struct {
	from, to, label string
	style           edgeStyle
}

type drawing struct {
	s        *Saga
	endNode  map[string]string // ending event -> its node
	name     string
	top      []gnode   // nodes outside any service: start
	services []string  // in order of first appearance
	inside   [][]gnode // nodes of each service
	bottom   []gnode   // endings and outputs
	edges    []gedge
}

func draw(s *Saga) (*drawing, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("saga: cannot draw an invalid declaration: %w", err)
	}
	d := &drawing{s: s, name: s.Name, services: s.Services(), top: []gnode{{"start", s.Name, startNode}}, endNode: map[string]string{}}
	if s.hasDeadline() {
		d.top = append(d.top, gnode{"deadline", "deadline missed", startNode})
	}
	d.nodes()
	d.allEdges()
	return d, nil
}

// nodes places the steps, compensations and listeners in their services,
// and the endings below.
func (d *drawing) nodes() {
	s := d.s
	d.inside = make([][]gnode, len(d.services))
	in := func(service string, n gnode) {
		i := slices.Index(d.services, service)
		d.inside[i] = append(d.inside[i], n)
	}
	for i, st := range s.Steps {
		in(st.Service, gnode{fmt.Sprintf("s%d", i), st.Name, stepNode})
		if st.Compensation != nil {
			in(st.Service, gnode{fmt.Sprintf("c%d", i), "undo " + st.Name, compensationNode})
		}
	}
	for i, l := range s.Listeners {
		in(l.Service, gnode{fmt.Sprintf("l%d", i), l.Name, listenerNode})
	}
	for _, e := range []struct {
		events []string
		id     string
		class  nodeClass
	}{{s.Completed, "completed", completedNode}, {s.Compensated, "compensated", unsuccessfulNode}, {s.Failed, "failed", unsuccessfulNode}} {
		if len(e.events) > 0 {
			d.bottom = append(d.bottom, gnode{e.id, e.id, e.class})
		}
		for _, ev := range e.events {
			d.endNode[ev] = e.id
		}
	}
}

// allEdges draws each emitted event to its consumers, in declaration
// order.
func (d *drawing) allEdges() {
	s := d.s
	if len(s.Steps) > 0 && s.Steps[0].Trigger == "" {
		d.edges = append(d.edges, gedge{"start", "s0", "", plainEdge})
	} else {
		d.emit("start", s.Start, successEdge)
	}
	for i, st := range s.Steps {
		d.emit(fmt.Sprintf("s%d", i), st.Success, successEdge)
		d.emit(fmt.Sprintf("s%d", i), st.Failure, failureEdge)
		if st.Compensation != nil {
			d.emit(fmt.Sprintf("c%d", i), st.Compensation.Done, compensationEdge)
		}
	}
	for i, l := range s.Listeners {
		for _, e := range l.Emits {
			d.emit(fmt.Sprintf("l%d", i), e, listenerEdge)
		}
	}
	if s.hasDeadline() {
		d.emit("deadline", TimedOutEvent, failureEdge)
	}
}

// emit draws event from node from to each consumer, or to an output node
// when nothing in the saga consumes it.
func (d *drawing) emit(from, event string, style edgeStyle) {
	if event == "" {
		return
	}
	to := d.consumers(event)
	if len(to) == 0 {
		id := fmt.Sprintf("o%d", len(d.bottom))
		d.bottom = append(d.bottom, gnode{id, event, outputNode})
		to = []string{id}
	}
	for _, t := range to {
		d.edges = append(d.edges, gedge{from, t, event, style})
	}
}

// consumers returns the nodes that consume event: steps, compensations,
// listeners, then the ending.
func (d *drawing) consumers(event string) []string {
	s := d.s
	var out []string
	for i, st := range s.Steps {
		if st.Trigger == event {
			out = append(out, fmt.Sprintf("s%d", i))
		}
	}
	for i, st := range s.Steps {
		if st.Compensation != nil && slices.Contains(st.Compensation.On, event) {
			out = append(out, fmt.Sprintf("c%d", i))
		}
	}
	for i, l := range s.Listeners {
		if slices.Contains(l.On, event) {
			out = append(out, fmt.Sprintf("l%d", i))
		}
	}
	if id, ok := d.endNode[event]; ok {
		out = append(out, id)
	}
	return out
}

// Colours of the paths and nodes, shared by both formats.
const (
	green   = "#2e7d32"
	red     = "#c62828"
	orange  = "#ef6c00"
	grey    = "#757575"
	blue    = "#1565c0"
	stepBG  = "#e3f2fd"
	compBG  = "#fff3e0"
	lightBG = "#f5f5f5"
	okBG    = "#e8f5e9"
	badBG   = "#ffebee"
)

// WriteMermaid writes the saga's graph as a Mermaid flowchart (see the
// comment on the graph above for what it shows). An invalid declaration
// is refused with Validate's errors. Safe for concurrent use.
func WriteMermaid(w io.Writer, s *Saga) error {
	d, err := draw(s)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%%%% saga %s, drawn by package saga from its declaration\n", d.name)
	b.WriteString("flowchart LR\n")
	mnode := func(indent string, n gnode) {
		open, closing := "[", "]"
		switch n.class {
		case startNode, completedNode, unsuccessfulNode:
			open, closing = "([", "])"
		case outputNode:
			open, closing = "[/", "/]"
		}
		fmt.Fprintf(&b, "%s%s%s%s%s\n", indent, n.id, open, strconv.Quote(n.label), closing)
	}
	for _, n := range d.top {
		mnode("  ", n)
	}
	for i, svc := range d.services {
		fmt.Fprintf(&b, "  subgraph svc%d[%s]\n", i, strconv.Quote(svc))
		for _, n := range d.inside[i] {
			mnode("    ", n)
		}
		b.WriteString("  end\n")
	}
	for _, n := range d.bottom {
		mnode("  ", n)
	}
	arrows := map[edgeStyle]string{plainEdge: "-->", successEdge: "-->", failureEdge: "-.->", compensationEdge: "==>", listenerEdge: "-.->"}
	links := map[edgeStyle][]string{}
	for i, e := range d.edges {
		label := ""
		if e.label != "" {
			label = "|" + e.label + "|"
		}
		fmt.Fprintf(&b, "  %s %s%s %s\n", e.from, arrows[e.style], label, e.to)
		links[e.style] = append(links[e.style], strconv.Itoa(i))
	}
	mermaidStyles(&b, d, links)
	_, err = io.WriteString(w, b.String())
	return err
}

// WriteDOT writes the saga's graph in Graphviz's DOT language, one
// cluster per service (see the comment on the graph above for what it
// shows). An invalid declaration is refused with Validate's errors. Safe
// for concurrent use.
func WriteDOT(w io.Writer, s *Saga) error {
	d, err := draw(s)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "// saga %s, drawn by package saga from its declaration\n", d.name)
	fmt.Fprintf(&b, "digraph %s {\n", strconv.Quote(d.name))
	b.WriteString("  rankdir=LR;\n  fontname=\"Helvetica\";\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=10];\n")
	attrs := map[nodeClass]string{
		startNode:        `shape=oval, fillcolor="#ffffff", color="` + grey + `"`,
		stepNode:         `fillcolor="` + stepBG + `", color="` + blue + `"`,
		compensationNode: `fillcolor="` + compBG + `", color="` + orange + `"`,
		listenerNode:     `fillcolor="` + lightBG + `", color="` + grey + `", style="rounded,filled,dashed"`,
		completedNode:    `shape=oval, fillcolor="` + okBG + `", color="` + green + `"`,
		unsuccessfulNode: `shape=oval, fillcolor="` + badBG + `", color="` + red + `"`,
		outputNode:       `shape=note, fillcolor="` + lightBG + `", color="` + grey + `"`,
	}
	dnode := func(indent string, n gnode) {
		fmt.Fprintf(&b, "%s%s [label=%s, %s];\n", indent, strconv.Quote(n.id), strconv.Quote(n.label), attrs[n.class])
	}
	for _, n := range d.top {
		dnode("  ", n)
	}
	for i, svc := range d.services {
		fmt.Fprintf(&b, "  subgraph \"cluster_%d\" {\n    label=%s;\n    style=\"rounded,dashed\";\n    color=%q;\n", i, strconv.Quote(svc), grey)
		for _, n := range d.inside[i] {
			dnode("    ", n)
		}
		b.WriteString("  }\n")
	}
	for _, n := range d.bottom {
		dnode("  ", n)
	}
	styles := map[edgeStyle]string{
		plainEdge:        "",
		successEdge:      `, color="` + green + `"`,
		failureEdge:      `, style=dashed, color="` + red + `", fontcolor="` + red + `"`,
		compensationEdge: `, style=bold, color="` + orange + `", fontcolor="` + orange + `"`,
		listenerEdge:     `, style=dotted, color="` + grey + `", fontcolor="` + grey + `"`,
	}
	for _, e := range d.edges {
		fmt.Fprintf(&b, "  %s -> %s [label=%s%s];\n", strconv.Quote(e.from), strconv.Quote(e.to), strconv.Quote(e.label), styles[e.style])
	}
	b.WriteString("}\n")
	_, err = io.WriteString(w, b.String())
	return err
}

// mermaidStyles writes the node classes and the colours of the paths.
func mermaidStyles(b *strings.Builder, d *drawing, links map[edgeStyle][]string) {
	classes := []struct {
		name, style string
		class       nodeClass
	}{
		{"sagastart", "fill:#ffffff,stroke:" + grey, startNode},
		{"step", "fill:" + stepBG + ",stroke:" + blue, stepNode},
		{"compensation", "fill:" + compBG + ",stroke:" + orange, compensationNode},
		{"listener", "fill:" + lightBG + ",stroke:" + grey + ",stroke-dasharray:3 3", listenerNode},
		{"completedend", "fill:" + okBG + ",stroke:" + green, completedNode},
		{"unsuccessfulend", "fill:" + badBG + ",stroke:" + red, unsuccessfulNode},
		{"output", "fill:" + lightBG + ",stroke:" + grey, outputNode},
	}
	all := slices.Concat(d.top, slices.Concat(d.inside...), d.bottom)
	for _, c := range classes {
		var ids []string
		for _, n := range all {
			if n.class == c.class {
				ids = append(ids, n.id)
			}
		}
		if len(ids) > 0 {
			fmt.Fprintf(b, "  classDef %s %s\n  class %s %s\n", c.name, c.style, strings.Join(ids, ","), c.name)
		}
	}
	for _, l := range []struct {
		style edgeStyle
		css   string
	}{{successEdge, "stroke:" + green}, {failureEdge, "stroke:" + red}, {compensationEdge, "stroke:" + orange}, {listenerEdge, "stroke:" + grey + ",stroke-dasharray:2 4"}} {
		if ids := links[l.style]; len(ids) > 0 {
			fmt.Fprintf(b, "  linkStyle %s %s\n", strings.Join(ids, ","), l.css)
		}
	}
}
