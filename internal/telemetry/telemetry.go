// Package telemetry holds the OTel metric instruments that the handlers
// and outbox packages record, so that both record the same series under one
// instrumentation scope. The names are listed in docs/metrics.md.
package telemetry

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Scope is the instrumentation scope of Troupe's metrics.
const Scope = "github.com/troupehq/troupe"

// Instrument names (OTel style; Prometheus shows "troupe_handler_duration_seconds",
// "troupe_handler_retries_total" and so on).
const (
	HandlerDuration = "troupe.handler.duration"
	Retries         = "troupe.handler.retries"
	DeadLetters     = "troupe.handler.dead_letters"
	EventsHandled   = "troupe.events.handled"
	EventsPublished = "troupe.events.published"
	OutboxLag       = "troupe.outbox.lag"
	OutboxPending   = "troupe.outbox.pending"
)

// Attribute keys.
const (
	ServiceKey = attribute.Key("troupe.service")
	HandlerKey = attribute.Key("troupe.handler")
	EventKey   = attribute.Key("troupe.event")
	OutcomeKey = attribute.Key("troupe.outcome")
	TierKey    = attribute.Key("troupe.retry_tier")
	PathKey    = attribute.Key("troupe.publish_path")
)

// secondsBuckets spans 0.5 ms (an in-process handler) to a minute (a
// delayed redelivery, an outbox behind a broker outage).
var secondsBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Instruments are the instruments of one MeterProvider. Safe for
// concurrent use.
type Instruments struct {
	meter           metric.Meter
	HandlerDuration metric.Float64Histogram
	Retries         metric.Int64Counter
	DeadLetters     metric.Int64Counter
	EventsHandled   metric.Int64Counter
	EventsPublished metric.Int64Counter
	OutboxLag       metric.Float64Histogram
}

// New makes the instruments on mp; the global MeterProvider when mp is
// nil (which records nothing until one is set, e.g. by
// tracing.SetupMetrics). The OTel API returns working no-op instruments
// alongside any error, so New never fails: an error goes to otel.Handle.
func New(mp metric.MeterProvider) *Instruments {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(Scope)
	in := &Instruments{meter: m}
	var errs [6]error
	in.HandlerDuration, errs[0] = m.Float64Histogram(HandlerDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of a message's delivery to a handler, its retries in process included, by outcome."),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	in.Retries, errs[1] = m.Int64Counter(Retries, metric.WithUnit("{retry}"),
		metric.WithDescription("Retries of failed handler runs: immediate (in process) or delayed (through a retry queue)."))
	in.DeadLetters, errs[2] = m.Int64Counter(DeadLetters, metric.WithUnit("{message}"),
		metric.WithDescription("Messages parked in a dead-letter queue."))
	in.EventsHandled, errs[3] = m.Int64Counter(EventsHandled, metric.WithUnit("{event}"),
		metric.WithDescription("Deliveries settled by a handler, by event and outcome (handled, duplicate, parked, requeued)."))
	in.EventsPublished, errs[4] = m.Int64Counter(EventsPublished, metric.WithUnit("{event}"),
		metric.WithDescription("Events published to the bus, by event and path (outbox relay or direct emit)."))
	in.OutboxLag, errs[5] = m.Float64Histogram(OutboxLag, metric.WithUnit("s"),
		metric.WithDescription("Time from an outbox row's commit to its publish confirm."),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	for _, err := range errs {
		if err != nil {
			otel.Handle(err)
		}
	}
	return in
}

// ObservePending registers a gauge of the outbox rows not yet published,
// read by count at each collection. The returned func unregisters it.
func (in *Instruments) ObservePending(service string, count func(context.Context) (int, error)) (unregister func()) {
	g, err := in.meter.Int64ObservableGauge(OutboxPending, metric.WithUnit("{row}"),
		metric.WithDescription("Outbox rows committed and not yet published."))
	if err != nil {
		otel.Handle(err)
		return func() {}
	}
	attrs := metric.WithAttributeSet(attribute.NewSet(ServiceKey.String(service)))
	reg, err := in.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		n, err := count(ctx)
		if err != nil {
			return err
		}
		o.ObserveInt64(g, int64(n), attrs)
		return nil
	}, g)
	if err != nil {
		otel.Handle(err)
		return func() {}
	}
	return func() {
		if err := reg.Unregister(); err != nil {
			otel.Handle(err)
		}
	}
}
