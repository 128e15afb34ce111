package saga_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
)

// tripRegistry is what the trip's services consume when wired right.
func tripRegistry() saga.Registry {
	return saga.Registry{Services: []saga.ServiceHandlers{
		{Service: "cars", Handlers: []saga.HandlerEntry{{Name: "book", Events: []string{"hotel.booked"}}}},
		{Service: "flights", Handlers: []saga.HandlerEntry{
			{Name: "book", Events: []string{"trip.requested"}},
			{Name: "cancel-on-hotel-cancelled", Events: []string{"hotel.cancelled"}},
			{Name: "cancel-on-hotel-failed", Events: []string{"hotel.failed"}},
		}},
		{Service: "hotels", Handlers: []saga.HandlerEntry{
			{Name: "book", Events: []string{"flight.booked"}},
			{Name: "cancel", Events: []string{"car.failed"}},
		}},
		{Service: "mail", Handlers: []saga.HandlerEntry{
			{Name: "booked", Events: []string{"car.booked"}},
			{Name: "cancelled", Events: []string{"flight.cancelled"}},
		}},
		// A service outside the saga may consume anything.
		{Service: "audit", Handlers: []saga.HandlerEntry{{Name: "all", Events: []string{"hotel.failed"}}}},
	}}
}

// without returns reg less the handler service.name.
func without(reg saga.Registry, service, handler string) saga.Registry {
	var out saga.Registry
	for _, sh := range reg.Services {
		c := saga.ServiceHandlers{Service: sh.Service}
		for _, h := range sh.Handlers {
			if sh.Service != service || h.Name != handler {
				c.Handlers = append(c.Handlers, h)
			}
		}
		out.Services = append(out.Services, c)
	}
	return out
}

// with returns reg plus a handler.
func with(reg saga.Registry, service, handler, event string) saga.Registry {
	for i, sh := range reg.Services {
		if sh.Service == service {
			reg.Services[i].Handlers = append(reg.Services[i].Handlers, saga.HandlerEntry{Name: handler, Events: []string{event}})
		}
	}
	return reg
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		give func() saga.Registry
		want []defect
	}{
		{"wired right", tripRegistry, nil},
		{"trigger nobody consumes", func() saga.Registry { return without(tripRegistry(), "hotels", "book") },
			[]defect{{saga.Unconsumed, "hotel", "flight.booked"}}},
		{"compensation nobody consumes", func() saga.Registry { return without(tripRegistry(), "hotels", "cancel") },
			[]defect{{saga.Unconsumed, "hotel", "car.failed"}}},
		{"compensation consumed by another service only", func() saga.Registry {
			return without(tripRegistry(), "flights", "cancel-on-hotel-failed")
		}, []defect{{saga.Unconsumed, "flight", "hotel.failed"}}},
		{"listener event nobody consumes", func() saga.Registry { return without(tripRegistry(), "mail", "cancelled") },
			[]defect{{saga.Unconsumed, "mailer", "flight.cancelled"}}},
		{"service missing", func() saga.Registry {
			return without(without(without(tripRegistry(), "flights", "book"), "flights", "cancel-on-hotel-cancelled"), "flights", "cancel-on-hotel-failed")
		}, []defect{{saga.Unconsumed, "flight", "trip.requested"}, {saga.Unconsumed, "flight", "hotel.failed"}, {saga.Unconsumed, "flight", "hotel.cancelled"}}},
		{"undeclared consumer in a saga service", func() saga.Registry { return with(tripRegistry(), "cars", "peek", "flight.failed") },
			[]defect{{saga.Undeclared, "", "flight.failed"}}},
		{"saga service consuming a foreign event", func() saga.Registry { return with(tripRegistry(), "cars", "other", "user.created") }, nil},
		{"empty registry", func() saga.Registry { return saga.Registry{} },
			[]defect{{saga.Unconsumed, "flight", "trip.requested"}, {saga.Unconsumed, "flight", "hotel.failed"}, {saga.Unconsumed, "flight", "hotel.cancelled"},
				{saga.Unconsumed, "hotel", "flight.booked"}, {saga.Unconsumed, "hotel", "car.failed"}, {saga.Unconsumed, "car", "hotel.booked"},
				{saga.Unconsumed, "mailer", "car.booked"}, {saga.Unconsumed, "mailer", "flight.cancelled"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := saga.Check(trip(), tt.give())
			if got := defectsOf(err); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("defects\n got %v\nwant %v\nerror:\n%v", got, tt.want, err)
			}
		})
	}
}

func TestCheckDetail(t *testing.T) {
	err := saga.Check(trip(), without(tripRegistry(), "flights", "cancel-on-hotel-failed"))
	want := "saga trip: step flight: event hotel.failed: unconsumed: compensation event: no handler of service flights consumes it (only audit.all)"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
}

func TestCheckAlsoValidates(t *testing.T) {
	s := trip()
	s.Steps[2].NoCompensation = ""
	got := defectsOf(saga.Check(s, tripRegistry()))
	if want := []defect{{saga.Uncompensated, "car", ""}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("defects %v, want %v", got, want)
	}
}

// tripRouters registers the trip's handlers on real routers, one per
// service, leaving out the handlers named in skip ("service.handler").
func tripRouters(t *testing.T, skip ...string) []*handlers.Router {
	t.Helper()
	tr, err := transport.Open("mem://saga-" + strings.ReplaceAll(t.Name(), "/", "-"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	var routers []*handlers.Router
	for _, sh := range tripRegistry().Services {
		r, err := handlers.NewRouter(handlers.Config{Service: sh.Service}, tr)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range sh.Handlers {
			if slices.Contains(skip, sh.Service+"."+h.Name) {
				continue
			}
			if err := registerByName(r, h.Name, h.Events[0]); err != nil {
				t.Fatal(err)
			}
		}
		routers = append(routers, r)
	}
	return routers
}

// The trip's events as Go types, for real routers.
type (
	tripRequested  struct{}
	flightBooked   struct{}
	hotelBooked    struct{}
	hotelFailed    struct{}
	hotelCancelled struct{}
	carBooked      struct{}
	carFailed      struct{}
	flightCanceled struct{}
)

func (tripRequested) EventName() string  { return "trip.requested" }
func (flightBooked) EventName() string   { return "flight.booked" }
func (hotelBooked) EventName() string    { return "hotel.booked" }
func (hotelFailed) EventName() string    { return "hotel.failed" }
func (hotelCancelled) EventName() string { return "hotel.cancelled" }
func (carBooked) EventName() string      { return "car.booked" }
func (carFailed) EventName() string      { return "car.failed" }
func (flightCanceled) EventName() string { return "flight.cancelled" }

func handle[E handlers.Event](r *handlers.Router, name string) error {
	return handlers.Handle(r, name, handlers.HandlerFunc[E](func(context.Context, E) error { return nil }))
}

func registerByName(r *handlers.Router, name, event string) error {
	register := map[string]func(*handlers.Router, string) error{
		"trip.requested": handle[tripRequested], "flight.booked": handle[flightBooked], "hotel.booked": handle[hotelBooked],
		"hotel.failed": handle[hotelFailed], "hotel.cancelled": handle[hotelCancelled], "car.booked": handle[carBooked],
		"car.failed": handle[carFailed], "flight.cancelled": handle[flightCanceled],
	}
	return register[event](r, name)
}

func TestCheckAgainstRouters(t *testing.T) {
	reg, err := saga.RegistryOf(tripRouters(t)...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(tripRegistry())
	if err != nil {
		t.Fatal(err)
	}
	want, err := saga.ReadRegistry(bytes.NewReader(b)) // sorted by service and handler
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(reg, want) {
		t.Fatalf("RegistryOf\n got %+v\nwant %+v", reg, want)
	}
	if err := saga.Check(trip(), reg); err != nil {
		t.Fatalf("check against the routers: %v", err)
	}
	reg, err = saga.RegistryOf(tripRouters(t, "hotels.cancel")...)
	if err != nil {
		t.Fatal(err)
	}
	got := defectsOf(saga.Check(trip(), reg))
	if want := []defect{{saga.Unconsumed, "hotel", "car.failed"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("with hotels.cancel dropped: defects %v, want %v", got, want)
	}
}

func TestRegistryFiles(t *testing.T) {
	dir := t.TempDir()
	routers := tripRouters(t)
	var paths []string
	for _, r := range routers {
		p := filepath.Join(dir, r.Service()+".json")
		var buf bytes.Buffer
		if err := saga.WriteRegistry(&buf, r); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// A replica's file merges with its twin.
	paths = append(paths, paths[0])
	reg, err := saga.ReadRegistryFiles(paths...)
	if err != nil {
		t.Fatal(err)
	}
	want, err := saga.RegistryOf(routers...)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(reg, want) {
		t.Fatalf("files read back\n got %+v\nwant %+v", reg, want)
	}
	if err := saga.Check(trip(), reg); err != nil {
		t.Fatal(err)
	}
	// Without the hotels' file, the check names the hotel step's events.
	var noHotels []string
	for _, p := range paths {
		if !strings.HasSuffix(p, "hotels.json") {
			noHotels = append(noHotels, p)
		}
	}
	reg, err = saga.ReadRegistryFiles(noHotels...)
	if err != nil {
		t.Fatal(err)
	}
	got := defectsOf(saga.Check(trip(), reg))
	if want := []defect{{saga.Unconsumed, "hotel", "flight.booked"}, {saga.Unconsumed, "hotel", "car.failed"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("without hotels: defects %v, want %v", got, want)
	}
}

func TestReadRegistryRejects(t *testing.T) {
	tests := []struct {
		name, give, want string
	}{
		{"not json", `{`, "unexpected EOF"},
		{"unknown field", `{"services": [], "extra": 1}`, "unknown field"},
		{"trailing data", `{"services": []} {}`, "data after"},
		{"a stray bracket after it", `{"services": []}]`, "data after"},
		{"bad service", `{"services": [{"service": "Pay Ment", "handlers": []}]}`, `service name "Pay Ment"`},
		{"bad handler", `{"services": [{"service": "pay", "handlers": [{"name": "", "events": ["a.b"]}]}]}`, `handler name ""`},
		{"no events", `{"services": [{"service": "pay", "handlers": [{"name": "h", "events": []}]}]}`, "consumes no event"},
		{"bad event", `{"services": [{"service": "pay", "handlers": [{"name": "h", "events": ["A"]}]}]}`, `event name "A"`},
		{"conflict", `{"services": [{"service": "pay", "handlers": [{"name": "h", "events": ["a.b"]}]},
			{"service": "pay", "handlers": [{"name": "h", "events": ["a.c"]}]}]}`, "consumes [a.c] here and [a.b] elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := saga.ReadRegistry(strings.NewReader(tt.give))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := saga.ReadRegistryFiles(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}
