package shop_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/tracing"
)

// checkoutChain is the parent -> child chain of one confirmed order's
// trace: the POST, then each event's outbox wait, publish (by the relay)
// and processing, order -> payment -> inventory -> order -> notify.
var checkoutChain = []string{
	"POST /orders",
	"outbox wait order.placed", "publish order.placed", "process order.placed", // order -> payment
	"outbox wait payment.captured", "publish payment.captured", "process payment.captured", // payment -> inventory
	"outbox wait inventory.reserved", "publish inventory.reserved", "process inventory.reserved", // inventory -> order
	"outbox wait order.confirmed", "publish order.confirmed", "process order.confirmed", // order -> notify
}

// TestOneOrderIsOneTrace: one order placed over HTTP yields one trace,
// rooted at the POST, whose spans chain parent -> child through all four
// services.
func TestOneOrderIsOneTrace(t *testing.T) {
	rec, _ := testutil.RecordSpans(t)

	s, srv := startStack(t, shop.PaymentConfig{})
	code, body := post(t, srv, shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), "")
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %v", code, body)
	}
	id := body["id"].(string)
	if o := awaitEnd(t, srv, id); o.Status != shop.Confirmed {
		t.Fatalf("order ended %s %q", o.Status, o.Reason)
	}
	awaitCount(t, s, shop.NotifySvc, `SELECT COUNT(*) FROM notifications WHERE order_id = ?`, 1, id)

	var spans []sdktrace.ReadOnlySpan
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The last process span ends after its handler's transaction.
		spans = orderSpans(rec.Ended(), id)
		if hasChain(spans, checkoutChain) == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := hasChain(spans, checkoutChain); err != nil {
		t.Fatal(err)
	}
}

// orderSpans returns the spans of the trace whose POST /orders span names
// the order id as its saga.
func orderSpans(all []sdktrace.ReadOnlySpan, orderID string) []sdktrace.ReadOnlySpan {
	var traceID trace.TraceID
	for _, s := range all {
		for _, a := range s.Attributes() {
			if s.Name() == "POST /orders" && a.Key == tracing.SagaIDKey && a.Value.AsString() == orderID {
				traceID = s.SpanContext().TraceID()
			}
		}
	}
	var out []sdktrace.ReadOnlySpan
	for _, s := range all {
		if traceID.IsValid() && s.SpanContext().TraceID() == traceID {
			out = append(out, s)
		}
	}
	return out
}

// hasChain reports whether spans hold a path root -> ... following chain's
// names, each the child of the one before, the first without a parent.
// A name may have several spans (a retried delivery is processed twice),
// so the path is searched for.
func hasChain(spans []sdktrace.ReadOnlySpan, chain []string) error {
	var walk func(parent trace.SpanID, i int) int // returns how far it got
	walk = func(parent trace.SpanID, i int) int {
		if i == len(chain) {
			return i
		}
		best := i
		for _, s := range spans {
			if s.Name() == chain[i] && s.Parent().SpanID() == parent {
				best = max(best, walk(s.SpanContext().SpanID(), i+1))
			}
		}
		return best
	}
	if got := walk(trace.SpanID{}, 0); got < len(chain) {
		var names []string
		for _, s := range spans {
			names = append(names, fmt.Sprintf("%s(%s<-%s)", s.Name(), s.SpanContext().SpanID(), s.Parent().SpanID()))
		}
		return fmt.Errorf("the chain stops before %q (after %v); spans: %s", chain[got], chain[:got], strings.Join(names, ", "))
	}
	return nil
}
