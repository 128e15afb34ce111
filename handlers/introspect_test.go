package handlers_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport"
)

func TestRouterHandlers(t *testing.T) {
	tr, err := transport.Open("mem://handlers-introspect")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	r, err := handlers.NewRouter(handlers.Config{Service: "payment"}, tr)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Handlers(); len(got) != 0 {
		t.Fatalf("Handlers() before registration = %v, want none", got)
	}
	noop := func(context.Context, OrderPlaced) error { return nil }
	must(t, handlers.Handle(r, "zeta", handlers.HandlerFunc[PaymentCaptured](func(context.Context, PaymentCaptured) error { return nil })))
	must(t, handlers.Handle(r, "charge", handlers.HandlerFunc[OrderPlaced](noop)))
	if err := handlers.Handle(r, "charge", handlers.HandlerFunc[OrderPlaced](noop)); err == nil {
		t.Fatal("duplicate registration accepted")
	}
	want := []handlers.HandlerInfo{
		{Service: "payment", Name: "charge", Queue: "payment.charge", Events: []string{"order.placed"}},
		{Service: "payment", Name: "zeta", Queue: "payment.zeta", Events: []string{"payment.captured"}},
	}
	got := r.Handlers()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Handlers() = %+v, want %+v", got, want)
	}
	got[0].Events[0] = "changed"
	if r.Handlers()[0].Events[0] != "order.placed" {
		t.Fatal("Handlers() shares its slices with the router")
	}
	if r.Service() != "payment" {
		t.Fatalf("Service() = %q", r.Service())
	}
}
