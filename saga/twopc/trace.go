package twopc

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracer is the package's tracer from the global provider at the time of
// the call: a tracer kept from an earlier provider would go on recording
// into it after the process installed another.
func tracer() trace.Tracer { return otel.Tracer("github.com/troupehq/troupe/saga/twopc") }

// Span attribute keys.
const (
	attrGID         = "twopc.gid"
	attrParticipant = "twopc.participant"
)

// carrierOf returns the trace context of ctx as a W3C carrier; every
// message of the transaction carries it, so the transaction is one trace.
func carrierOf(ctx context.Context) map[string]string {
	c := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, c)
	if len(c) == 0 {
		return nil
	}
	return c
}

// contextOf returns ctx continuing the trace in carrier.
func contextOf(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(carrier))
}

func encodeTrace(c map[string]string) string {
	if len(c) == 0 {
		return ""
	}
	b, _ := json.Marshal(c) // a map of strings always encodes
	return string(b)
}

func decodeTrace(s string) map[string]string {
	var c map[string]string
	if s != "" {
		_ = json.Unmarshal([]byte(s), &c) // a bad trace column only loses the trace
	}
	return c
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
