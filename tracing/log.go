package tracing

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys that LogHandler adds.
const (
	TraceIDAttr = "trace_id"
	SpanIDAttr  = "span_id"
	SagaIDAttr  = "saga_id"
)

// sagaKey carries a saga id in a context.
type sagaKey struct{}

// ContextWithSagaID returns ctx carrying the saga id id; an empty id
// returns ctx unchanged. StartProcess and StartPublish call it, so that
// what a handler logs names its saga.
func ContextWithSagaID(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return context.WithValue(ctx, sagaKey{}, id)
}

// SagaIDFromContext returns the saga id ctx carries, or "".
func SagaIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(sagaKey{}).(string)
	return id
}

// LogHandler is a slog.Handler that adds the trace and span ids of the
// record's context (when it carries a valid span context) and its saga id
// (when it carries one) to every record, then passes it to the handler it
// wraps; log lines can then be looked up in a trace and a trace found from
// a log line. An attribute the record or the logger already has under one
// of these keys is kept, not repeated. Safe for concurrent use when the
// wrapped handler is.
type LogHandler struct {
	next slog.Handler
	// has* are set when WithAttrs gave the key in the current group.
	hasTrace, hasSaga bool
}

// NewLogHandler wraps next; see LogHandler.
func NewLogHandler(next slog.Handler) *LogHandler { return &LogHandler{next: next} }

var _ slog.Handler = (*LogHandler)(nil)

// Enabled reports whether the wrapped handler handles level.
func (h *LogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the ids found in ctx and passes r on.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	saga := SagaIDFromContext(ctx)
	addTrace, addSaga := sc.IsValid() && !h.hasTrace, saga != "" && !h.hasSaga
	if !addTrace && !addSaga {
		return h.next.Handle(ctx, r)
	}
	// The record's own attributes win: look for the keys among them.
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case TraceIDAttr:
			addTrace = false
		case SagaIDAttr:
			addSaga = false
		}
		return addTrace || addSaga
	})
	if !addTrace && !addSaga {
		return h.next.Handle(ctx, r)
	}
	r = r.Clone()
	if addTrace {
		r.AddAttrs(slog.String(TraceIDAttr, sc.TraceID().String()), slog.String(SpanIDAttr, sc.SpanID().String()))
	}
	if addSaga {
		r.AddAttrs(slog.String(SagaIDAttr, saga))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a LogHandler wrapping next.WithAttrs(attrs).
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := *h
	out.next = h.next.WithAttrs(attrs)
	for _, a := range attrs {
		out.hasTrace = out.hasTrace || a.Key == TraceIDAttr
		out.hasSaga = out.hasSaga || a.Key == SagaIDAttr
	}
	return &out
}

// WithGroup returns a LogHandler wrapping next.WithGroup(name); the ids it
// adds then land in that group, as every attribute of a grouped logger does.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	out := *h
	out.next = h.next.WithGroup(name)
	if name != "" {
		out.hasTrace, out.hasSaga = false, false
	}
	return &out
}
