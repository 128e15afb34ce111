package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkoutRegistries are the registry files of the checkout's four
// services, one per process, as saga.WriteRegistry writes them.
var checkoutRegistries = map[string]string{
	"order":     `{"services": [{"service": "order", "handlers": [{"name": "on-payment-failed", "events": ["payment.failed"]}, {"name": "on-notified", "events": ["notification.sent"]}, {"name": "on-refunded", "events": ["payment.refunded"]}, {"name": "on-reserved", "events": ["inventory.reserved"]}]}]}`,
	"payment":   `{"services": [{"service": "payment", "handlers": [{"name": "charge", "events": ["order.placed"]}, {"name": "on-timeout", "events": ["saga.timed_out"]}, {"name": "refund", "events": ["inventory.failed"]}]}]}`,
	"inventory": `{"services": [{"service": "inventory", "handlers": [{"name": "reserve", "events": ["payment.captured"]}]}]}`,
	"notify":    `{"services": [{"service": "notify", "handlers": [{"name": "cancelled", "events": ["order.cancelled"]}, {"name": "confirmed", "events": ["order.confirmed"]}]}]}`,
}

func writeRegistries(t *testing.T, services ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, svc := range services {
		p := filepath.Join(dir, svc+".registry.json")
		if err := os.WriteFile(p, []byte(checkoutRegistries[svc]), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func TestSagaCheck(t *testing.T) {
	all := writeRegistries(t, "order", "payment", "inventory", "notify")
	var out, errOut bytes.Buffer
	if err := run(t.Context(), append([]string{"saga", "check"}, all...), &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if want := "saga checkout: 4 steps, 4 services: the handlers agree with the declaration\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}

	declaration := filepath.Join(t.TempDir(), "bad.saga.json")
	if err := os.WriteFile(declaration, []byte(`{"name": "x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"no subcommand", []string{"saga"}, "no subcommand"},
		{"unknown subcommand", []string{"saga", "lsit"}, `unknown subcommand "lsit"`},
		{"no registry", []string{"saga", "check"}, "give the registry files"},
		{"payment missing", append([]string{"saga", "check"}, writeRegistries(t, "order", "inventory", "notify")...),
			"saga checkout: step charge: event order.placed: unconsumed: trigger: no handler consumes it"},
		{"invalid declaration", append([]string{"saga", "check", "-saga", declaration}, all...), "saga x: malformed: start event is required"},
		{"missing registry file", []string{"saga", "check", filepath.Join(t.TempDir(), "none.json")}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tt.give, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
