package handlers

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/troupehq/troupe/internal/telemetry"
)

// WithMeterProvider records the router's metrics (handler latency,
// retries, dead letters, events handled and published, and its relay's
// outbox lag and pending rows; see docs/metrics.md) with mp instead of the
// global MeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(r *Router) { r.mp = mp })
}

// outcomeNames label the outcomes in metrics.
var outcomeNames = [...]string{Handled: "handled", Duplicate: "duplicate", Parked: "parked", Requeued: "requeued"}

// regMetrics are one handler's attribute sets, made once at registration
// so that recording allocates nothing.
type regMetrics struct {
	outcome   [len(outcomeNames)]metric.MeasurementOption
	immediate metric.MeasurementOption
	delayed   metric.MeasurementOption
	handler   metric.MeasurementOption
}

func newRegMetrics(service string, reg registration) *regMetrics {
	base := []attribute.KeyValue{telemetry.ServiceKey.String(service), telemetry.HandlerKey.String(reg.name), telemetry.EventKey.String(reg.event)}
	with := func(kv attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(base[:len(base):len(base)], kv)...))
	}
	m := &regMetrics{
		immediate: with(telemetry.TierKey.String("immediate")),
		delayed:   with(telemetry.TierKey.String("delayed")),
		handler:   metric.WithAttributeSet(attribute.NewSet(base...)),
	}
	for o, name := range outcomeNames {
		if name != "" {
			m.outcome[o] = with(telemetry.OutcomeKey.String(name))
		}
	}
	return m
}

// recordDelivery records one settled delivery.
func (r *Router) recordDelivery(ctx context.Context, reg registration, o Outcome, took time.Duration) {
	if int(o) >= len(reg.met.outcome) || reg.met.outcome[o] == nil {
		return
	}
	r.tel.HandlerDuration.Record(ctx, took.Seconds(), reg.met.outcome[o])
	r.tel.EventsHandled.Add(ctx, 1, reg.met.outcome[o])
}
