package tracing_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport/envelope"
)

func TestSetupFromEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		give    map[string]string
		wantErr string
	}{
		{"nothing set exports nothing", map[string]string{}, ""},
		{"console", map[string]string{"OTEL_TRACES_EXPORTER": "console"}, ""},
		{"otlp over http", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ""},
		{"otlp over grpc", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, ""},
		{"unknown exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, `OTEL_TRACES_EXPORTER "zipkin"`},
		{"unknown protocol", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, `OTEL_EXPORTER_OTLP_PROTOCOL "http/json"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
				"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME"} {
				t.Setenv(k, tt.give[k])
			}
			restore := keepGlobals()
			defer restore()
			before := &propagation.TraceContext{} // a pointer: comparable
			otel.SetTextMapPropagator(before)
			shutdown, err := tracing.Setup(context.Background(), "svc")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := shutdown(context.Background()); err != nil && !strings.Contains(err.Error(), "connect") {
					t.Fatalf("shutdown: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to mention %s", err, tt.wantErr)
			}
			if p, ok := otel.GetTextMapPropagator().(*propagation.TraceContext); !ok || p != before {
				t.Fatal("a refused setting changed the global propagator")
			}
		})
	}
}

func TestInjectExtractRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "parent")
	defer span.End()
	_, _ = tracing.Setup(context.Background(), "svc") // installs the W3C propagator
	msg := message.NewMessage("m", nil)
	tracing.Inject(ctx, msg.Metadata)
	if !strings.HasPrefix(msg.Metadata.Get("traceparent"), "00-"+span.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q", msg.Metadata.Get("traceparent"))
	}
	got := tracing.Extract(context.Background(), msg.Metadata)
	sc := otelSpanContext(got)
	if sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsRemote() {
		t.Fatalf("extracted %v", sc)
	}
}

func otelSpanContext(ctx context.Context) trace.SpanContext { return trace.SpanContextFromContext(ctx) }

// TestSpanNamesAndAttributes: a span is named after the message's event,
// and a message without an event or saga id gets neither an empty name
// part nor empty attributes.
func TestSpanNamesAndAttributes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer useSDK(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))()

	bare := message.NewMessage("m-1", nil)
	_, span := tracing.StartPublish(context.Background(), bare, "", "troupe")
	span.End()
	named := message.NewMessage("m-2", nil)
	named.Metadata.Set(envelope.EventKey, "order.placed")
	named.Metadata.Set(envelope.SagaIDKey, "o-1")
	_, span = tracing.StartProcess(context.Background(), named, tracing.SystemBundled, "payment.order.placed")
	span.End()
	_, span = tracing.StartProcess(context.Background(), named, tracing.SystemRabbitMQ, "payment.order.placed")
	span.End()

	ended := rec.Ended()
	if len(ended) != 3 {
		t.Fatalf("%d spans ended, want 3", len(ended))
	}
	has := func(s sdktrace.ReadOnlySpan, key attribute.Key) bool {
		return slices.ContainsFunc(s.Attributes(), func(kv attribute.KeyValue) bool { return kv.Key == key })
	}
	value := func(s sdktrace.ReadOnlySpan, key attribute.Key) string {
		for _, kv := range s.Attributes() {
			if kv.Key == key {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	const system, routingKey = attribute.Key("messaging.system"), attribute.Key("messaging.rabbitmq.destination.routing_key")
	if has(ended[0], system) {
		t.Errorf("a span of an unknown system has messaging.system %q", value(ended[0], system))
	}
	if got := value(ended[1], system); got != "troupe" || has(ended[1], routingKey) {
		t.Errorf("bundled broker: messaging.system %q (want troupe), RabbitMQ's routing key %v (want none)", got, has(ended[1], routingKey))
	}
	if got := value(ended[2], system); got != "rabbitmq" || value(ended[2], routingKey) != "order.placed" {
		t.Errorf("RabbitMQ: messaging.system %q, routing key %q; want rabbitmq, order.placed", got, value(ended[2], routingKey))
	}
	if got := ended[0].Name(); got != "publish" {
		t.Errorf("span of a message without an event: %q, want \"publish\"", got)
	}
	if has(ended[0], tracing.EventKey) || has(ended[0], tracing.SagaIDKey) {
		t.Errorf("empty event or saga id attributes: %v", ended[0].Attributes())
	}
	if got := ended[1].Name(); got != "process order.placed" {
		t.Errorf("span name %q, want \"process order.placed\"", got)
	}
	if !has(ended[1], tracing.EventKey) || !has(ended[1], tracing.SagaIDKey) {
		t.Errorf("missing event or saga id attribute: %v", ended[1].Attributes())
	}
}

// valueProvider is a tracer provider of a type that is not comparable (a
// struct holding a slice): tracer must not compare it, only use it.
type valueProvider struct {
	trace.TracerProvider
	_ []int
}

// TestSpansFollowTheGlobalProvider: each span goes to the provider set at
// the time it starts, whatever provider the earlier spans went to (tracer
// keeps the last provider's tracer).
func TestSpansFollowTheGlobalProvider(t *testing.T) {
	restore := keepGlobals()
	defer restore()
	recorders := make([]*tracetest.SpanRecorder, 3)
	providers := make([]trace.TracerProvider, 3)
	for i := range recorders {
		recorders[i] = tracetest.NewSpanRecorder()
		providers[i] = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorders[i]))
	}
	providers[2] = valueProvider{TracerProvider: providers[2]}
	// Back to the first provider at the end: a stale tracer would send
	// these spans to the third.
	for round, i := range []int{0, 1, 2, 2, 0} {
		otel.SetTracerProvider(providers[i])
		msg := message.NewMessage("m"+string(rune('a'+round)), nil)
		_, span := tracing.StartProcess(context.Background(), msg, "", "q")
		span.End()
	}
	for i, want := range []int{2, 1, 2} {
		if got := len(recorders[i].Ended()); got != want {
			t.Errorf("provider %d recorded %d spans, want %d", i, got, want)
		}
	}
}

// BenchmarkStartProcess: consumer spans started on every processor at
// once, as a service's handlers do, with the global provider that exports
// nothing (no OTEL_* setting).
func BenchmarkStartProcess(b *testing.B) {
	msg := message.NewMessage("m", []byte("{}"))
	msg.Metadata.Set(envelope.EventKey, "order.placed")
	msg.Metadata.Set(envelope.SagaIDKey, "o-1")
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, span := tracing.StartProcess(ctx, msg, tracing.SystemBundled, "payment.charge")
			span.End()
		}
	})
}
