package tracing

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/troupehq/troupe/transport/envelope"
)

// otel's global provider as the test process starts, and whether it was
// silent then, before any test set a provider (which makes it delegate to
// the provider set, for good).
var (
	defaultProvider      = otel.GetTracerProvider()
	defaultSilentAtStart = silent(defaultProvider, defaultProvider.Tracer(TracerName))
)

// TestSilentProviders: spans are built bare only for providers that never
// record one. otel's default global provider is silent until a provider is
// set; given back to otel.SetTracerProvider afterwards, it hands out the
// tracers of the provider set first, and is not silent any more. A span
// started after a provider is set is named and has its attributes.
func TestSilentProviders(t *testing.T) {
	if !defaultSilentAtStart {
		t.Error("otel's default global provider, with no provider set, is not silent")
	}
	n := noop.NewTracerProvider()
	if !silent(n, n.Tracer(TracerName)) {
		t.Error("trace/noop's provider is not silent")
	}
	rec := tracetest.NewSpanRecorder()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer sdk.Shutdown(context.Background())
	if silent(sdk, sdk.Tracer(TracerName)) {
		t.Error("the SDK's provider is silent")
	}

	prevTP := otel.GetTracerProvider()
	defer func() {
		if otel.GetTracerProvider() != prevTP {
			otel.SetTracerProvider(prevTP)
		}
	}()
	otel.SetTracerProvider(sdk)
	otel.SetTracerProvider(defaultProvider) // delegating now, to the first provider set
	if silent(defaultProvider, defaultProvider.Tracer(TracerName)) {
		t.Fatal("the default global provider, delegating, is silent")
	}
	// And spans built in full again once a provider is set.
	otel.SetTracerProvider(sdk)
	_, span := StartProcess(context.Background(), message.NewMessage("m", nil), SystemBundled, "q")
	span.End()
	if got := rec.Ended(); len(got) != 1 || got[0].Name() != "process" || len(got[0].Attributes()) == 0 {
		t.Fatalf("%d spans recorded, want one named process, with attributes", len(got))
	}
}

// TestSilentSpansPropagate: with a provider that records nothing, a
// handler's publish still passes on the trace context it was given, so
// that a service with tracing off does not break the traces of the
// services around it.
func TestSilentSpansPropagate(t *testing.T) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	defer func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	}()
	otel.SetTracerProvider(noop.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.TraceContext{})

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	in := message.NewMessage("in", nil)
	in.Metadata.Set(envelope.TraceParentKey, parent)
	ctx, process := StartProcess(context.Background(), in, SystemBundled, "q")
	out := message.NewMessage("out", nil)
	_, publish := StartPublish(ctx, out, SystemBundled, "x")
	publish.End()
	process.End()
	if got := out.Metadata.Get(envelope.TraceParentKey); got != parent {
		t.Fatalf("traceparent %q passed on, want the incoming %q", got, parent)
	}
}
