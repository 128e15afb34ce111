package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport/envelope"
)

func TestLogHandlerAddsTraceAndSagaIDs(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	spanCtx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	traceID, spanID := span.SpanContext().TraceID().String(), span.SpanContext().SpanID().String()

	tests := []struct {
		name string
		ctx  context.Context
		log  func(l *slog.Logger, ctx context.Context)
		want map[string]any // keys that must be there (nil value: must be absent)
	}{
		{"no span, no saga", context.Background(), func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			map[string]any{"trace_id": nil, "span_id": nil, "saga_id": nil}},
		{"span", spanCtx, func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			map[string]any{"trace_id": traceID, "span_id": spanID, "saga_id": nil}},
		{"span and saga", tracing.ContextWithSagaID(spanCtx, "order-1"), func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			map[string]any{"trace_id": traceID, "saga_id": "order-1"}},
		{"the record's saga id wins", tracing.ContextWithSagaID(spanCtx, "order-1"),
			func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m", "saga_id", "mine") },
			map[string]any{"trace_id": traceID, "saga_id": "mine"}},
		{"the logger's saga id wins", tracing.ContextWithSagaID(context.Background(), "order-1"),
			func(l *slog.Logger, ctx context.Context) { l.With("saga_id", "mine").InfoContext(ctx, "m") },
			map[string]any{"saga_id": "mine", "trace_id": nil}},
		{"grouped logger: ids in the group", tracing.ContextWithSagaID(spanCtx, "order-1"),
			func(l *slog.Logger, ctx context.Context) { l.WithGroup("g").InfoContext(ctx, "m") },
			map[string]any{"g": map[string]any{"trace_id": traceID, "span_id": spanID, "saga_id": "order-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(tracing.NewLogHandler(slog.NewJSONHandler(&buf, nil))), tt.ctx)
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, buf.String())
			}
			for k, want := range tt.want {
				v, ok := got[k]
				switch {
				case want == nil && ok:
					t.Errorf("%s = %v, want it absent", k, v)
				case want != nil && !jsonEqual(v, want):
					t.Errorf("%s = %v, want %v", k, v, want)
				}
			}
			if strings.Count(buf.String(), `"saga_id"`) > 1 {
				t.Errorf("saga_id twice: %s", buf.String())
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestProcessContextCarriesSagaID: the context of a process span carries
// the message's saga id, so that a handler's log lines name it.
func TestProcessContextCarriesSagaID(t *testing.T) {
	msg := message.NewMessage("m1", nil)
	msg.Metadata.Set(envelope.SagaIDKey, "order-7")
	ctx, span := tracing.StartProcess(context.Background(), msg, "", "q")
	defer span.End()
	if got := tracing.SagaIDFromContext(ctx); got != "order-7" {
		t.Fatalf("saga id %q", got)
	}
	ctx, span2 := tracing.StartPublish(context.Background(), msg, "", "x")
	defer span2.End()
	if got := tracing.SagaIDFromContext(ctx); got != "order-7" {
		t.Fatalf("publish: saga id %q", got)
	}
}

// TestConsoleExporterToFile: with TROUPE_TRACES_FILE, the console exporter
// appends a JSON object per span to that file; shutdown flushes it.
func TestConsoleExporterToFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spans.json")
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv(tracing.TracesFileEnv, path)
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	shutdown, err := tracing.Setup(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	otel.SetTextMapPropagator(propagation.TraceContext{})
	_, span := otel.Tracer("t").Start(context.Background(), "to-file")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Name        string
		SpanContext struct{ TraceID string }
	}
	if err := json.Unmarshal(data, &got); err != nil || got.Name != "to-file" || got.SpanContext.TraceID != span.SpanContext().TraceID().String() {
		t.Fatalf("file holds %s (%v)", data, err)
	}

	t.Setenv(tracing.TracesFileEnv, filepath.Join(t.TempDir(), "no", "such", "dir", "f"))
	if _, err := tracing.Setup(context.Background(), "svc"); err == nil || !strings.Contains(err.Error(), tracing.TracesFileEnv) {
		t.Fatalf("unwritable file: %v", err)
	}
}
