package shop

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
)

// TestStartChecksTheSaga: the check that Start runs when every service is
// in the process passes on the real handlers, is skipped for a process
// running some services, and fails, naming the step and event, when a
// service's handlers are missing.
func TestStartChecksTheSaga(t *testing.T) {
	retry := &handlers.RetryPolicy{Immediate: 0, Delays: []time.Duration{10 * time.Millisecond}}
	s, err := Start(context.Background(), Config{BusURL: "mem://shop-saga-internal", DataDir: t.TempDir(),
		Services: []string{OrderSvc, InventorySvc, NotifySvc}, Retry: retry})
	if err != nil {
		t.Fatalf("a process without the payment service starts: %v", err)
	}
	defer s.Close()
	err = s.checkSaga([]string{OrderSvc, PaymentSvc, InventorySvc, NotifySvc})
	if err == nil || !strings.Contains(err.Error(), "saga checkout: step charge: event order.placed: unconsumed") {
		t.Fatalf("check without the payment handlers: %v", err)
	}
	full, err := Start(context.Background(), Config{BusURL: "mem://shop-saga-internal-full", DataDir: t.TempDir(), Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if err := full.checkSaga([]string{OrderSvc, PaymentSvc, InventorySvc, NotifySvc}); err != nil {
		t.Fatal(err)
	}
}
