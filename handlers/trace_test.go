package handlers_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/tracing"
)

// TestOneOrderIsOneTrace: an order emitted by plain code, handled by a
// transactional handler whose event waits in the outbox, then handled
// again, yields one trace whose spans chain publish -> process -> outbox
// wait -> publish (by the relay) -> process.
func TestOneOrderIsOneTrace(t *testing.T) {
	rec, _ := testutil.RecordSpans(t)

	f := newFixture(t, "mem://handlers-trace")
	db, err := outbox.Open(context.Background(), "sqlite:"+t.TempDir()+"/t.db")
	must(t, err)
	defer db.Close()
	r := f.router(handlers.WithDB(db))
	handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](func(ctx context.Context, tx *outbox.Tx, e OrderPlaced) error {
		return handlers.Emit(ctx, PaymentCaptured{OrderID: e.OrderID})
	}))
	done := make(chan struct{}, 1)
	handlers.MustHandle(r, "captured", handlers.HandlerFunc[PaymentCaptured](func(ctx context.Context, e PaymentCaptured) error {
		done <- struct{}{}
		return nil
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "t1"}, handlers.WithSagaID("saga-trace")))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the chain did not complete")
	}
	want := []string{"publish order.placed", "process order.placed", "outbox wait payment.captured",
		"publish payment.captured", "process payment.captured"}
	var spans []sdktrace.ReadOnlySpan
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans = spans[:0]
		for _, s := range rec.Ended() {
			for _, a := range s.Attributes() {
				if a.Key == tracing.SagaIDKey && a.Value.AsString() == "saga-trace" {
					spans = append(spans, s)
				}
			}
		}
		if len(spans) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the last process span ends after the handler returns
	}
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = s
	}
	root, ok := byName[want[0]]
	if !ok {
		t.Fatalf("no %q span among %v", want[0], names(spans))
	}
	for i, name := range want {
		s, ok := byName[name]
		if !ok {
			t.Fatalf("no %q span among %v", name, names(spans))
		}
		if s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Fatalf("%q is in another trace", name)
		}
		if i > 0 && s.Parent().SpanID() != byName[want[i-1]].SpanContext().SpanID() {
			t.Fatalf("%q's parent is not %q", name, want[i-1])
		}
		if !slices.Contains(s.Attributes(), attribute.String("messaging.system", tracing.SystemBundled)) {
			t.Fatalf("%q does not name the bundled broker as its messaging.system: %v", name, s.Attributes())
		}
	}
	if root.Parent().SpanID().IsValid() {
		t.Fatalf("the first publish has a parent: it should start the trace")
	}
}

func names(spans []sdktrace.ReadOnlySpan) string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return strings.Join(out, ", ")
}
