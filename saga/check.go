package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/strictjson"
)

// Registry is what the services really consume: their handlers and the
// events bound to each. Make one from the routers of this process
// (RegistryOf) or, when the services run as separate processes, from the
// registry files each of them writes (WriteRegistry, ReadRegistryFiles).
// Its JSON form is the registry file:
//
//	{"services": [{"service": "payment", "handlers": [{"name": "charge", "events": ["order.placed"]}]}]}
type Registry struct {
	Services []ServiceHandlers `json:"services"`
}

// ServiceHandlers are one service's handlers.
type ServiceHandlers struct {
	Service  string         `json:"service"`
	Handlers []HandlerEntry `json:"handlers"`
}

// HandlerEntry is one handler and the events it consumes.
type HandlerEntry struct {
	Name   string   `json:"name"`
	Events []string `json:"events"`
}

// RegistryOf returns what the routers have registered so far. Routers of
// the same service (replicas) merge. Safe to call while they run.
func RegistryOf(routers ...*handlers.Router) (Registry, error) {
	var reg Registry
	for _, r := range routers {
		sh := ServiceHandlers{Service: r.Service(), Handlers: []HandlerEntry{}}
		for _, h := range r.Handlers() {
			sh.Handlers = append(sh.Handlers, HandlerEntry{Name: h.Name, Events: h.Events})
		}
		if err := reg.add(sh, "router"); err != nil {
			return Registry{}, err
		}
	}
	return reg, nil
}

// WriteRegistry writes the registry file of the routers' services: call it
// at start-up in each service process, once its handlers are registered.
// Safe to call while the routers run.
func WriteRegistry(w io.Writer, routers ...*handlers.Router) error {
	reg, err := RegistryOf(routers...)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(reg, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadRegistry decodes one registry file, strictly: unknown fields,
// trailing data, empty or malformed names are errors. The result is
// sorted by service and handler.
func ReadRegistry(r io.Reader) (Registry, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var file Registry
	if err := dec.Decode(&file); err != nil {
		return Registry{}, fmt.Errorf("saga: registry: %w", err)
	}
	if err := strictjson.End(dec); err != nil {
		return Registry{}, fmt.Errorf("saga: registry: %w", err)
	}
	var reg Registry
	for _, sh := range file.Services {
		if err := reg.add(sh, "registry"); err != nil {
			return Registry{}, err
		}
	}
	return reg, nil
}

// ReadRegistryFiles reads and merges the registry files of several
// services. The same service in two files (replicas) merges; the same
// handler consuming different events in two files is an error.
func ReadRegistryFiles(paths ...string) (Registry, error) {
	var reg Registry
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return Registry{}, err
		}
		file, err := ReadRegistry(bytes.NewReader(b))
		if err != nil {
			return Registry{}, fmt.Errorf("%s: %w", p, err)
		}
		for _, sh := range file.Services {
			if err := reg.add(sh, p); err != nil {
				return Registry{}, err
			}
		}
	}
	return reg, nil
}

// add merges one service's handlers, keeping services and handlers sorted.
func (reg *Registry) add(sh ServiceHandlers, from string) error {
	if !nameRE.MatchString(sh.Service) {
		return fmt.Errorf("saga: %s: service name %q is not lower-case words separated by dots", from, sh.Service)
	}
	i, found := slices.BinarySearchFunc(reg.Services, sh.Service, func(s ServiceHandlers, name string) int { return strings.Compare(s.Service, name) })
	if !found {
		reg.Services = slices.Insert(reg.Services, i, ServiceHandlers{Service: sh.Service, Handlers: []HandlerEntry{}})
	}
	have := &reg.Services[i]
	for _, h := range sh.Handlers {
		if !nameRE.MatchString(h.Name) {
			return fmt.Errorf("saga: %s: service %s: handler name %q is not lower-case words separated by dots", from, sh.Service, h.Name)
		}
		events := slices.Sorted(slices.Values(h.Events))
		if len(events) == 0 {
			return fmt.Errorf("saga: %s: handler %s.%s consumes no event", from, sh.Service, h.Name)
		}
		for _, e := range events {
			if !nameRE.MatchString(e) {
				return fmt.Errorf("saga: %s: handler %s.%s: event name %q is not lower-case words separated by dots", from, sh.Service, h.Name, e)
			}
		}
		j, found := slices.BinarySearchFunc(have.Handlers, h.Name, func(e HandlerEntry, name string) int { return strings.Compare(e.Name, name) })
		switch {
		case !found:
			have.Handlers = slices.Insert(have.Handlers, j, HandlerEntry{Name: h.Name, Events: events})
		case !slices.Equal(have.Handlers[j].Events, events):
			return fmt.Errorf("saga: %s: handler %s.%s consumes %v here and %v elsewhere", from, sh.Service, h.Name, events, have.Handlers[j].Events)
		}
	}
	return nil
}

// consumers returns the "service.handler" names that consume event.
func (reg Registry) consumers(event string) []string {
	var out []string
	for _, sh := range reg.Services {
		for _, h := range sh.Handlers {
			if slices.Contains(h.Events, event) {
				out = append(out, sh.Service+"."+h.Name)
			}
		}
	}
	return out
}

// Check validates s and checks it against what the services really
// consume, reporting every problem joined, each a *DefectError naming the
// step (or listener) and event:
//   - Unconsumed: a step's trigger, an event that starts a compensation,
//     or a listener's event, that no handler of the declared service
//     consumes (the detail says which other services do, if any);
//   - Undeclared: a handler of one of the saga's services consumes an
//     event of the saga that the declaration does not give that service,
//     so the declaration (and its graph) misses a path;
//   - everything Validate reports.
//
// Call it at start-up, after every handler is registered; a process that
// runs only some services should check against the registry files of all.
// Read-only; safe for concurrent use.
func Check(s *Saga, reg Registry) error {
	if s == nil {
		return errNilSaga
	}
	errs := []error{s.Validate()}
	defect := func(step, listener, event string, d Defect, format string, args ...any) {
		errs = append(errs, &DefectError{Saga: s.Name, Step: step, Listener: listener, Event: event, Defect: d, Detail: fmt.Sprintf(format, args...)})
	}
	declared := map[[2]string]bool{} // (service, event) consumed by declaration
	consumed := func(step, listener, service, event, what string) {
		if event == "" {
			return
		}
		declared[[2]string{service, event}] = true
		all := reg.consumers(event)
		if slices.ContainsFunc(all, func(c string) bool { return strings.HasPrefix(c, service+".") }) {
			return
		}
		if len(all) == 0 {
			defect(step, listener, event, Unconsumed, "%s: no handler consumes it", what)
			return
		}
		defect(step, listener, event, Unconsumed, "%s: no handler of service %s consumes it (only %s)", what, service, strings.Join(all, ", "))
	}
	for _, st := range s.Steps {
		consumed(st.Name, "", st.Service, st.Trigger, "trigger")
		if st.Compensation != nil {
			for _, e := range st.Compensation.On {
				consumed(st.Name, "", st.Service, e, "compensation event")
			}
		}
	}
	for _, l := range s.Listeners {
		for _, e := range l.On {
			consumed("", l.Name, l.Service, e, "listened event")
		}
	}
	events := s.Events()
	for _, service := range s.Services() {
		for _, sh := range reg.Services {
			if sh.Service != service {
				continue
			}
			for _, h := range sh.Handlers {
				for _, e := range h.Events {
					if slices.Contains(events, e) && !declared[[2]string{service, e}] {
						defect("", "", e, Undeclared, "handler %s.%s consumes it, but the saga gives service %s no step, compensation or listener on it", service, h.Name, service)
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}
