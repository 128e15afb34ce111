package handlers_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
)

// TestMetrics drives a retried transactional handler whose event goes out
// through the outbox to a handler that refuses it for good, and reads every
// series back from an injected MeterProvider.
func TestMetrics(t *testing.T) {
	f := newFixture(t, "mem://handlers-metrics")
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	db := openDB(t, "sqlite:"+t.TempDir()+"/svc.db")
	r := f.router(handlers.WithDB(db), handlers.WithMeterProvider(mp))
	var runs atomic.Int32
	handlers.MustHandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](func(ctx context.Context, tx *outbox.Tx, e OrderPlaced) error {
		if runs.Add(1) < 3 {
			return errors.New("gateway timeout")
		}
		return handlers.Emit(ctx, PaymentCaptured{OrderID: e.OrderID})
	}))
	handlers.MustHandle(r, "audit", handlers.HandlerFunc[PaymentCaptured](func(context.Context, PaymentCaptured) error {
		return handlers.Permanent(errors.New("audit refuses"))
	}))
	f.run(r)
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "1"}))
	await(t, "dead letter", func() bool { return r.Stats().DeadLettered == 1 })
	// The relay settles (deletes) a row after its publish: wait for it.
	await(t, "outbox drained", func() bool {
		n, err := db.Pending(context.Background())
		return err == nil && n == 0
	})

	var rm metricdata.ResourceMetrics
	must(t, reader.Collect(context.Background(), &rm))
	tests := []struct {
		metric string
		attrs  []attribute.KeyValue
		want   int64 // sum of a counter, count of a histogram
	}{
		{"troupe.handler.duration", kv("troupe.handler", "charge", "troupe.outcome", "handled"), 1},
		{"troupe.handler.duration", kv("troupe.handler", "charge", "troupe.outcome", "parked"), 1},
		{"troupe.handler.retries", kv("troupe.handler", "charge", "troupe.retry_tier", "immediate"), 1},
		{"troupe.handler.retries", kv("troupe.handler", "charge", "troupe.retry_tier", "delayed"), 1},
		{"troupe.handler.dead_letters", kv("troupe.handler", "audit", "troupe.event", "payment.captured"), 1},
		{"troupe.events.handled", kv("troupe.handler", "charge", "troupe.outcome", "handled", "troupe.service", f.service), 1},
		{"troupe.events.handled", kv("troupe.handler", "audit", "troupe.outcome", "parked"), 1},
		{"troupe.events.published", kv("troupe.event", "order.placed", "troupe.publish_path", "direct"), 1},
		{"troupe.events.published", kv("troupe.event", "payment.captured", "troupe.publish_path", "outbox", "troupe.service", f.service), 1},
		{"troupe.outbox.lag", kv("troupe.event", "payment.captured"), 1},
		{"troupe.outbox.pending", kv("troupe.service", f.service), 0},
	}
	for _, tt := range tests {
		got, found := reading(rm, tt.metric, tt.attrs)
		if !found || got != tt.want {
			t.Errorf("%s %v: %d (found %v), want %d", tt.metric, tt.attrs, got, found, tt.want)
		}
	}
}

func kv(pairs ...string) []attribute.KeyValue {
	var out []attribute.KeyValue
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, attribute.String(pairs[i], pairs[i+1]))
	}
	return out
}

// reading sums the data points of metric name that carry attrs: counter
// and gauge values, histogram counts.
func reading(rm metricdata.ResourceMetrics, name string, attrs []attribute.KeyValue) (int64, bool) {
	has := func(s attribute.Set) bool {
		for _, a := range attrs {
			if v, ok := s.Value(a.Key); !ok || v != a.Value {
				return false
			}
		}
		return true
	}
	var sum int64
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes) {
						sum, found = sum+p.Value, true
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes) {
						sum, found = sum+p.Value, true
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes) {
						sum, found = sum+int64(p.Count), true
					}
				}
			}
		}
	}
	return sum, found
}
