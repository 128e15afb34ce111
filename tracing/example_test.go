package tracing_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport/envelope"
)

// keepGlobals returns what puts back the global tracer provider and
// propagator, which the examples replace.
func keepGlobals() (restore func()) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	return func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	}
}

// useSDK makes tp and the W3C propagator global for one example, as Setup
// does in a service, and returns what shuts tp down and puts the previous
// ones back.
func useSDK(tp *sdktrace.TracerProvider) (restore func()) {
	restoreGlobals := keepGlobals()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return func() {
		restoreGlobals()
		_ = tp.Shutdown(context.Background())
	}
}

// orderPlaced is a message as Troupe's emitters send it: its metadata
// names the event and the saga.
func orderPlaced() *message.Message {
	msg := message.NewMessage("m-1", []byte(`{"order_id":"123"}`))
	msg.Metadata.Set(envelope.EventKey, "order.placed")
	msg.Metadata.Set(envelope.SagaIDKey, "order-123")
	return msg
}

// StartPublish writes the trace context into the message's metadata
// (traceparent); the consumer's StartProcess continues the trace from
// it, so that one trace follows a saga from service to service. The spans
// go to an in-memory recorder here.
func ExampleStartProcess() {
	rec := tracetest.NewSpanRecorder()
	defer useSDK(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))()

	msg := orderPlaced()
	_, pub := tracing.StartPublish(context.Background(), msg, tracing.SystemBundled, "troupe.events")
	pub.End()
	fmt.Println("traceparent in metadata:", msg.Metadata.Get(envelope.TraceParentKey) != "")

	// In the consumer, once the broker has delivered msg.
	ctx, proc := tracing.StartProcess(context.Background(), msg, tracing.SystemBundled, "billing.charge")
	fmt.Println("saga id in the handler's context:", tracing.SagaIDFromContext(ctx))
	proc.End()

	spans := rec.Ended()
	for _, s := range spans {
		saga := ""
		for _, a := range s.Attributes() {
			if a.Key == tracing.SagaIDKey {
				saga = a.Value.AsString()
			}
		}
		fmt.Printf("%s (%s) %s=%s\n", s.Name(), s.SpanKind(), tracing.SagaIDKey, saga)
	}
	publish, process := spans[0], spans[1]
	fmt.Println("same trace:", process.SpanContext().TraceID() == publish.SpanContext().TraceID())
	fmt.Println("process is a child of publish:", process.Parent().SpanID() == publish.SpanContext().SpanID())
	// Output:
	// traceparent in metadata: true
	// saga id in the handler's context: order-123
	// publish order.placed (producer) troupe.saga_id=order-123
	// process order.placed (consumer) troupe.saga_id=order-123
	// same trace: true
	// process is a child of publish: true
}

// A LogHandler adds the trace id, span id and saga id of the context to
// each record, so that a handler's log lines can be found from its trace
// and the other way round. The message here carries a fixed traceparent;
// the span id, new for each span, is masked to keep the output stable.
func ExampleNewLogHandler() {
	defer useSDK(sdktrace.NewTracerProvider())()

	text := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{}
			case tracing.SpanIDAttr:
				a.Value = slog.StringValue("<span id>")
			}
			return a
		},
	})
	logger := slog.New(tracing.NewLogHandler(text))

	msg := orderPlaced()
	msg.Metadata.Set(envelope.TraceParentKey, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx, span := tracing.StartProcess(context.Background(), msg, tracing.SystemBundled, "billing.charge")
	defer span.End()

	logger.InfoContext(ctx, "charging card", "amount", 42)
	logger.InfoContext(context.Background(), "no trace, no saga")
	// Output:
	// level=INFO msg="charging card" amount=42 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id="<span id>" saga_id=order-123
	// level=INFO msg="no trace, no saga"
}

// End ends a span and, when the handler failed, records the error on it:
// the span's status is then Error and it holds an exception event.
func ExampleEnd() {
	rec := tracetest.NewSpanRecorder()
	defer useSDK(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))()

	_, span := tracing.StartProcess(context.Background(), orderPlaced(), tracing.SystemBundled, "billing.charge")
	tracing.End(span, errors.New("card declined"))
	_, span = tracing.StartProcess(context.Background(), orderPlaced(), tracing.SystemBundled, "stock.reserve")
	tracing.End(span, nil)

	for _, s := range rec.Ended() {
		fmt.Printf("%s: status %s %q, %d event(s)\n", s.Name(), s.Status().Code, s.Status().Description, len(s.Events()))
	}
	// Output:
	// process order.placed: status Error "card declined", 1 event(s)
	// process order.placed: status Unset "", 0 event(s)
}

// Inject and Extract carry a trace through message metadata for code
// that sends or receives messages without StartPublish and StartProcess.
// The extracted span context is the sender's, marked remote.
func ExampleInject() {
	defer useSDK(sdktrace.NewTracerProvider())()

	ctx, span := otel.Tracer("example").Start(context.Background(), "send")
	defer span.End()
	msg := message.NewMessage("m-1", nil)
	tracing.Inject(ctx, msg.Metadata)
	fmt.Println("traceparent:", len(msg.Metadata.Get(envelope.TraceParentKey)), "characters")

	got := trace.SpanContextFromContext(tracing.Extract(context.Background(), msg.Metadata))
	fmt.Println("same span:", got.TraceID() == span.SpanContext().TraceID() && got.SpanID() == span.SpanContext().SpanID())
	fmt.Println("remote:", got.IsRemote())
	// Output:
	// traceparent: 55 characters
	// same span: true
	// remote: true
}

// setenv sets an environment variable for one example and returns what
// puts the previous value back.
func setenv(key, value string) (restore func()) {
	prev, had := os.LookupEnv(key)
	os.Setenv(key, value)
	return func() {
		if had {
			os.Setenv(key, prev)
		} else {
			os.Unsetenv(key)
		}
	}
}

// Setup configures tracing from the OTEL_* variables. With
// OTEL_TRACES_EXPORTER=console and TROUPE_TRACES_FILE, each span is
// appended to that file as a JSON object; the function Setup returns
// flushes them, and is deferred in a service's main.
func ExampleSetup() {
	dir, _ := os.MkdirTemp("", "troupe-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "spans.json")
	defer setenv("OTEL_TRACES_EXPORTER", "console")()
	defer setenv(tracing.TracesFileEnv, path)()
	defer setenv("OTEL_SERVICE_NAME", "")() // it would win over "billing"
	defer keepGlobals()()

	shutdown, err := tracing.Setup(context.Background(), "billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	_, span := otel.Tracer("example").Start(context.Background(), "charge card")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		fmt.Println(err)
	}

	data, _ := os.ReadFile(path)
	var got struct {
		Name     string
		Resource []struct {
			Key   string
			Value struct{ Value any }
		}
	}
	_ = json.Unmarshal(data, &got)
	for _, kv := range got.Resource {
		if kv.Key == "service.name" {
			fmt.Printf("span %q of service %q\n", got.Name, kv.Value.Value)
		}
	}
	// Output: span "charge card" of service "billing"
}

// NewMetrics makes a MeterProvider whose readings Handler serves in
// Prometheus' text format; a service mounts it on /metrics. Here a
// counter is read back through the handler.
func ExampleNewMetrics() {
	m, err := tracing.NewMetrics("billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Shutdown(context.Background())

	charges, _ := m.MeterProvider().Meter("example").Int64Counter("billing_charges")
	charges.Add(context.Background(), 2)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "# TYPE billing_charges"):
			fmt.Println(line)
		case strings.HasPrefix(line, "billing_charges"):
			// Drop the labels, which name the instrumentation scope.
			name, labelsAndValue, _ := strings.Cut(line, "{")
			_, value, _ := strings.Cut(labelsAndValue, "} ")
			fmt.Println(name, value)
		}
	}
	// Output:
	// # TYPE billing_charges_total counter
	// billing_charges_total 2
}
