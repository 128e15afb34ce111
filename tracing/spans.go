package tracing

import (
	"context"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/troupehq/troupe/transport/envelope"
)

// TracerName is the instrumentation scope of Troupe's spans.
const TracerName = "github.com/troupehq/troupe"

// Attribute keys of Troupe's spans, beside the OTel messaging conventions.
const (
	SagaIDKey = attribute.Key("troupe.saga_id")
	EventKey  = attribute.Key("troupe.event")
)

// tracer returns Troupe's tracer from the global provider. It keeps the
// tracer of the provider it last saw: otel.Tracer takes a lock and looks
// the tracer up by its name on every call, which was 1% of the example
// shop's CPU under load (three spans per event). A provider set later
// (otel.SetTracerProvider) is seen at the next span.
func tracer() *providerTracer {
	tp := otel.GetTracerProvider()
	// The cached provider's type is comparable (see below), so the
	// comparison cannot panic: a provider of another type is unequal.
	if c := cachedTracer.Load(); c != nil && c.provider == tp {
		return c
	}
	t := tp.Tracer(TracerName)
	pt := &providerTracer{provider: tp, tracer: t, silent: silent(tp, t)}
	if reflect.TypeOf(tp).Comparable() {
		cachedTracer.Store(pt)
	}
	return pt
}

// cachedTracer is the tracer that tracer last got, with its provider.
var cachedTracer atomic.Pointer[providerTracer]

type providerTracer struct {
	provider trace.TracerProvider
	tracer   trace.Tracer
	// silent: the provider never records a span, so a span's name and
	// attributes are not built (they were 9% of the bytes the example shop
	// allocated under load, with tracing off).
	silent bool
}

// silent reports whether t, tp's tracer, never records a span: trace/noop's,
// or a tracer of otel's default global provider before any provider was
// set, which hands out non-recording spans. (Once otel.SetTracerProvider
// installs one, the default gives out the new provider's tracers, and
// GetTracerProvider returns the new provider, so tracer looks again.) A
// silent tracer's spans still carry their parent's context: propagation
// is unchanged.
func silent(tp trace.TracerProvider, t trace.Tracer) bool {
	if _, ok := tp.(noop.TracerProvider); ok {
		return true
	}
	rt := reflect.TypeOf(t)
	return rt.Kind() == reflect.Pointer && rt.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global"
}

// start starts a span of kind named what and after msg's event, with
// attrs(msg, system, op, destination), when the provider records spans; a
// bare one when it does not.
func start(ctx context.Context, msg *message.Message, what string, kind trace.SpanKind, system, op, destination string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	pt := tracer()
	if pt.silent {
		return pt.tracer.Start(ctx, what)
	}
	opts = append(opts, trace.WithSpanKind(kind), trace.WithAttributes(attrs(msg, system, op, destination)...))
	return pt.tracer.Start(ctx, spanName(what, msg), opts...)
}

// Messaging systems (the messaging.system attribute) of Troupe's
// transports.
const (
	SystemBundled  = "troupe"   // the bundled broker (mem://)
	SystemRabbitMQ = "rabbitmq" // an AMQP 0-9-1 broker (amqp://)
)

// SystemOf is the messaging system behind v, a transport, publisher or
// subscriber: what its MessagingSystem method says (Troupe's transports
// and their publishers have one), or "" when v has none.
func SystemOf(v any) string {
	if s, ok := v.(interface{ MessagingSystem() string }); ok {
		return s.MessagingSystem()
	}
	return ""
}

// attrs are the messaging attributes of msg (OTel messaging semantic
// conventions) plus Troupe's; those unknown (the system, when ""; an
// event, a saga id msg lacks) are left out rather than set empty. The
// routing key is RabbitMQ's attribute on RabbitMQ only; troupe.event
// carries it everywhere.
func attrs(msg *message.Message, system, op, destination string) []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, 7)
	if system != "" {
		kv = append(kv, attribute.String("messaging.system", system))
	}
	kv = append(kv,
		attribute.String("messaging.operation.type", op),
		attribute.String("messaging.destination.name", destination),
		attribute.String("messaging.message.id", msg.UUID),
	)
	if ev := msg.Metadata.Get(envelope.EventKey); ev != "" {
		if system == SystemRabbitMQ {
			kv = append(kv, attribute.String("messaging.rabbitmq.destination.routing_key", ev))
		}
		kv = append(kv, EventKey.String(ev))
	}
	if id := msg.Metadata.Get(envelope.SagaIDKey); id != "" {
		kv = append(kv, SagaIDKey.String(id))
	}
	return kv
}

// spanName is "<what> <event>", or what alone for a message without an
// event name.
func spanName(what string, msg *message.Message) string {
	if ev := msg.Metadata.Get(envelope.EventKey); ev != "" {
		return what + " " + ev
	}
	return what
}

// StartPublish starts the producer span of publishing msg to destination
// (an exchange, or a queue) of system (SystemOf the publisher; "" when
// unknown), as a child of ctx's span, and writes the
// span's context into msg's metadata so that its consumers continue the
// trace. The returned context also carries msg's saga id (see
// ContextWithSagaID). The caller ends the span.
func StartPublish(ctx context.Context, msg *message.Message, system, destination string) (context.Context, trace.Span) {
	ctx = ContextWithSagaID(ctx, msg.Metadata.Get(envelope.SagaIDKey))
	ctx, span := start(ctx, msg, "publish", trace.SpanKindProducer, system, "publish", destination)
	Inject(ctx, msg.Metadata)
	return ctx, span
}

// StartProcess starts the consumer span of handling msg from queue of
// system (SystemOf the transport; "" when unknown), as a child of the
// trace context msg carries. The returned context also
// carries msg's saga id (see ContextWithSagaID), so that what the handler
// logs through a LogHandler names its trace and saga. The caller ends the
// span.
func StartProcess(ctx context.Context, msg *message.Message, system, queue string) (context.Context, trace.Span) {
	ctx = ContextWithSagaID(Extract(ctx, msg.Metadata), msg.Metadata.Get(envelope.SagaIDKey))
	return start(ctx, msg, "process", trace.SpanKindConsumer, system, "process", queue)
}

// RecordWait records the time msg waited in the outbox, from waitStart
// (its commit) to now, as a span in its trace, and continues the trace
// from that span: the returned context is the wait span's. system is that
// of the publisher the message waits for (SystemOf; "" when unknown).
func RecordWait(ctx context.Context, msg *message.Message, system string, waitStart time.Time) context.Context {
	ctx = Extract(ctx, msg.Metadata)
	ctx, span := start(ctx, msg, "outbox wait", trace.SpanKindInternal, system, "outbox", "troupe_outbox", trace.WithTimestamp(waitStart))
	span.End()
	return ctx
}

// End ends span, recording err (if any) as its error status.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
