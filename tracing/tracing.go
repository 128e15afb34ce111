// Package tracing sets up OpenTelemetry for a Troupe service and carries
// the trace through messages.
//
// Setup configures the global tracer provider and the W3C propagator from
// the standard OTEL_* variables: OTEL_TRACES_EXPORTER ("otlp", "console"
// or "none"; "otlp" when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, else "none"; "console" writes
// a JSON object per span to stderr, or appends them to the file
// TROUPE_TRACES_FILE names),
// OTEL_EXPORTER_OTLP_PROTOCOL ("grpc" or "http/protobuf"), the endpoint
// variables themselves, and OTEL_SERVICE_NAME. With Jaeger all-in-one, set
// OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 and
// OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf.
//
// Inject and Extract move the W3C trace context (traceparent, tracestate)
// in and out of watermill message metadata, which the transports carry as
// AMQP headers.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Setup installs a global tracer provider for service, configured from the
// OTEL_* environment, and the W3C trace-context propagator. The returned
// function flushes and stops the provider. An unknown exporter or protocol
// is an error.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	exp, err := exporterFromEnv(ctx)
	if err != nil {
		return nil, err // before any global changes: a bad setting changes nothing
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if exp.exporter == nil {
		return func(context.Context) error { return nil }, nil
	}
	if name := os.Getenv("OTEL_SERVICE_NAME"); name != "" {
		service = name
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tracing: resource: %w", err), exp.close())
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp.exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error { return errors.Join(tp.Shutdown(ctx), exp.close()) }, nil
}

// TracesFileEnv names the file the console exporter appends to instead of
// stderr.
const TracesFileEnv = "TROUPE_TRACES_FILE"

func noClose() error { return nil }

// exporter is a span exporter and what closes its output.
type exporter struct {
	exporter sdktrace.SpanExporter
	close    func() error
}

// exporterFromEnv returns the exporter OTEL_TRACES_EXPORTER names; a nil
// one for "none".
func exporterFromEnv(ctx context.Context) (exporter, error) {
	kind := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")))
	if kind == "" {
		kind = "none"
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			kind = "otlp"
		}
	}
	switch kind {
	case "none":
		return exporter{}, nil
	case "console":
		return consoleExporter()
	case "otlp":
		proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		var client otlptrace.Client
		switch proto {
		case "", "grpc":
			client = otlptracegrpc.NewClient()
		case "http/protobuf":
			client = otlptracehttp.NewClient()
		default:
			return exporter{}, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q: want grpc or http/protobuf", proto)
		}
		exp, err := otlptrace.New(ctx, client)
		if err != nil {
			return exporter{}, fmt.Errorf("tracing: otlp exporter: %w", err)
		}
		return exporter{exp, noClose}, nil
	}
	return exporter{}, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER %q: want otlp, console or none", kind)
}

// consoleExporter writes a JSON object per span to stderr or to the file
// TracesFileEnv names.
func consoleExporter() (exporter, error) {
	path := os.Getenv(TracesFileEnv)
	if path == "" {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
		return exporter{exp, noClose}, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return exporter{}, fmt.Errorf("tracing: %s: %w", TracesFileEnv, err)
	}
	exp, err := stdouttrace.New(stdouttrace.WithWriter(f))
	if err != nil {
		return exporter{}, errors.Join(err, f.Close())
	}
	return exporter{exp, f.Close}, nil
}

// carrier adapts message metadata to a propagation.TextMapCarrier.
type carrier message.Metadata

func (c carrier) Get(key string) string { return c[key] }
func (c carrier) Set(key, value string) { c[key] = value }
func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into md (traceparent,
// tracestate, baggage), replacing what was there.
func Inject(ctx context.Context, md message.Metadata) {
	otel.GetTextMapPropagator().Inject(ctx, carrier(md))
}

// Extract returns ctx with the remote trace context found in md.
func Extract(ctx context.Context, md message.Metadata) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, carrier(md))
}
