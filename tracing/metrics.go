package tracing

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Metrics is an OTel MeterProvider whose readings are served to
// Prometheus: the series the handlers and outbox packages record
// (docs/metrics.md) and the Go runtime's. Safe for concurrent use.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	handler  http.Handler
}

// NewMetrics makes a MeterProvider for service with a Prometheus exporter
// on a registry of its own (so that several can live in one process, as in
// tests). Pass it to handlers.WithMeterProvider, or use SetupMetrics to
// make it the global provider.
func NewMetrics(service string) (*Metrics, error) {
	if name := os.Getenv("OTEL_SERVICE_NAME"); name != "" {
		service = name
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("tracing: prometheus exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return &Metrics{
		provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res)),
		handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
	}, nil
}

// SetupMetrics is NewMetrics, installed as the global MeterProvider:
// Troupe's routers and relays record with it unless given another.
func SetupMetrics(service string) (*Metrics, error) {
	m, err := NewMetrics(service)
	if err != nil {
		return nil, err
	}
	otel.SetMeterProvider(m.provider)
	return m, nil
}

// MeterProvider returns the provider.
func (m *Metrics) MeterProvider() metric.MeterProvider { return m.provider }

// Handler serves the readings in Prometheus' text format: mount it on
// /metrics.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Shutdown stops the provider; later readings are empty.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }
