package handlers

import (
	"slices"
	"strings"

	"github.com/troupehq/troupe/transport/bus"
)

// HandlerInfo describes one registered handler: what the router consumes.
// It is what package saga checks a declared choreography against.
type HandlerInfo struct {
	// Service is the router's service.
	Service string
	// Name is the handler's name, unique in its service.
	Name string
	// Queue is the handler's work queue, "<service>.<name>".
	Queue string
	// Events are the event names the handler consumes (one today: its
	// event type's name).
	Events []string
	// Tx is true for a transactional handler (HandleTx).
	Tx bool
}

// Service returns the router's service name. Safe for concurrent use.
func (r *Router) Service() string { return r.cfg.Service }

// Handlers returns the handlers registered so far, sorted by name; the
// result is a copy. Read-only and safe for concurrent use, also while the
// router runs.
func (r *Router) Handlers() []HandlerInfo {
	r.mu.Lock()
	out := make([]HandlerInfo, len(r.regs))
	for i, h := range r.regs {
		h.Events = slices.Clone(h.Events)
		out[i] = h
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b HandlerInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// record keeps a registered handler for Handlers.
func (r *Router) record(reg registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regs = append(r.regs, HandlerInfo{
		Service: r.cfg.Service, Name: reg.name, Queue: reg.queue, Events: []string{reg.event}, Tx: reg.tx,
	})
}

// Topology returns the bus topology of the handlers registered so far:
// each handler's work queue, bound to its events, with the retry queues of
// the router's policy — what Run declares. A process that publishes before
// this service consumes (the broker drops an event no queue is bound for)
// declares it ahead with transport.Transport.Declare; declaring twice is
// harmless. Safe for concurrent use.
func (r *Router) Topology() bus.Topology {
	t := bus.Topology{Exchange: r.cfg.Exchange}
	for _, h := range r.Handlers() {
		t.Queues = append(t.Queues, bus.Queue{Name: h.Queue, Events: h.Events, RetryDelays: slices.Clone(r.retry.Delays)})
	}
	return t
}
