package handlers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.opentelemetry.io/otel/metric"

	"github.com/troupehq/troupe/internal/telemetry"
	"github.com/troupehq/troupe/internal/wmlog"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// Config configures a Router.
type Config struct {
	// Service names the service; its handlers' queues are
	// "<service>.<handler>". Required.
	Service string
	// Exchange is the bus; bus.DefaultExchange when empty.
	Exchange string
	// Prefetch bounds each handler's deliveries in flight; 64 when 0.
	Prefetch int
	// Concurrency is how many deliveries of one handler run at once (each
	// on a consumer of its own, competing on the handler's queue); 1 when
	// 0. With 1, a message retried in process holds its queue for the
	// backoff; messages of one queue may finish out of order above 1.
	Concurrency int
	// Retry is the recoverability policy; DefaultRetryPolicy() when nil.
	Retry *RetryPolicy
	// ShutdownTimeout bounds how long Run waits for handlers in flight
	// when its context ends; what does not finish is requeued. 30 s when 0.
	ShutdownTimeout time.Duration
	// Relay configures the outbox relay that Run runs when the router has
	// a database (WithDB).
	Relay outbox.RelayConfig
	// NoRelay leaves the outbox to a relay run elsewhere.
	NoRelay bool
	// InboxRetention is how long the inbox of the router's database
	// (WithDB) keeps the key of a handled message, and so deduplicates its
	// redeliveries; Run deletes older keys as it goes. 7 days when 0;
	// negative keeps them forever.
	InboxRetention time.Duration
}

// DefaultInboxRetention is Config.InboxRetention when 0.
const DefaultInboxRetention = 7 * 24 * time.Hour

// RetryPolicy is the two-tier recoverability of MassTransit and
// NServiceBus: immediate retries in process with exponential backoff and
// jitter, then delayed redeliveries through the broker's TTL retry queues
// (the consumer is free meanwhile), then the dead-letter queue.
type RetryPolicy struct {
	// Immediate is the number of in-process retries after a failed run.
	Immediate int
	// InitialInterval, MaxInterval, Multiplier, Jitter (randomization
	// factor, 0..1) and MaxElapsed shape the immediate tier's backoff.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	Multiplier      float64
	Jitter          float64
	MaxElapsed      time.Duration
	// Delays are the delayed redeliveries, in order; each has its retry
	// queue (whole milliseconds).
	Delays []time.Duration
	// MaxAttempts caps the handler runs of one message across both tiers,
	// so that nothing loops for ever; 0 means (1+Immediate)*(1+len(Delays)).
	MaxAttempts int
}

// DefaultRetryPolicy: 2 immediate retries from 100 ms, then redeliveries
// after 1 s, 10 s and 60 s, at most 12 runs in all.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		Immediate:       2,
		InitialInterval: 100 * time.Millisecond,
		MaxInterval:     time.Second,
		Multiplier:      2,
		Jitter:          0.2,
		MaxElapsed:      5 * time.Second,
		Delays:          []time.Duration{time.Second, 10 * time.Second, time.Minute},
	}
}

// Validate reports every problem of the policy.
func (p RetryPolicy) Validate() error {
	var errs []error
	if p.Immediate < 0 {
		errs = append(errs, fmt.Errorf("handlers: retry: Immediate %d < 0", p.Immediate))
	}
	if p.Immediate > 0 && (p.InitialInterval <= 0 || p.Multiplier < 1) {
		errs = append(errs, errors.New("handlers: retry: immediate retries need InitialInterval > 0 and Multiplier >= 1"))
	}
	if p.Jitter < 0 || p.Jitter > 1 {
		errs = append(errs, fmt.Errorf("handlers: retry: Jitter %v outside 0..1", p.Jitter))
	}
	for _, d := range p.Delays {
		if d < time.Millisecond || d%time.Millisecond != 0 {
			errs = append(errs, fmt.Errorf("handlers: retry: delay %v is not a whole number of milliseconds >= 1ms", d))
		}
	}
	if p.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("handlers: retry: MaxAttempts %d < 0", p.MaxAttempts))
	}
	return errors.Join(errs...)
}

func (p RetryPolicy) maxAttempts() int {
	if p.MaxAttempts > 0 {
		return p.MaxAttempts
	}
	return (1 + p.Immediate) * (1 + len(p.Delays))
}

// Option configures a Router.
type Option interface{ apply(*Router) }

type optionFunc func(*Router)

func (f optionFunc) apply(r *Router) { f(r) }

// WithLogger sets the logger; none by default.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(r *Router) {
		if l != nil {
			r.logger = l
		}
	})
}

// WithCodec sets the payload codec; JSON by default.
func WithCodec(c Codec) Option { return optionFunc(func(r *Router) { r.m.codec = c }) }

// WithClock sets where the router reads the time it writes into messages:
// the production time of emitted events (troupe-produced-at, from which
// the saga tracker computes deadlines) and the failure times of parked
// messages. time.Now by default; tests pass a virtual clock (package
// saga/sagatest). now must be safe for concurrent use. Retry backoff and
// the broker's redelivery delays are not read from it: they wait in real
// time.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(r *Router) {
		if now != nil {
			r.m.now = now
		}
	})
}

// WithIdempotencyStore deduplicates messages by idempotency key per
// handler. Without one, a redelivered message runs its handler again.
func WithIdempotencyStore(s IdempotencyStore) Option {
	return optionFunc(func(r *Router) { r.idem = s })
}

// Stats count what a Router did; read with Router.Stats.
type Stats struct {
	Handled, Duplicates, Retried, Delayed, DeadLettered int64
}

// Router runs a service's typed handlers on watermill's Router. Handlers
// are registered with Handle before Run. Safe for concurrent use.
type Router struct {
	cfg       Config
	retry     RetryPolicy
	tr        transport.Transport
	system    string // messaging.system of tr, for spans (tracing.SystemOf)
	logger    *slog.Logger
	idem      IdempotencyStore
	db        *outbox.DB
	observers []func(context.Context, Observation)
	mp        metric.MeterProvider
	tel       *telemetry.Instruments
	m         *messages
	wr        *message.Router
	events    message.Publisher
	queues    message.Publisher

	mu       sync.Mutex
	names    map[string]bool
	regs     []HandlerInfo // in registration order
	running  bool
	draining bool
	drained  chan struct{} // closed when the last run in flight ends while draining
	inflight int
	// settling holds messages whose run ended but whose ack or nack
	// watermill may not have sent yet (it acks after the handler
	// returns); drain waits for them, so that shutdown never closes a
	// subscription under an ack and requeues a finished message.
	settling map[*message.Message]struct{}

	handled, duplicates, retried, delayed, deadLettered atomic.Int64

	// deadLetterEvents: announce each dead letter (WithDeadLetterEvents).
	deadLetterEvents bool
}

// NewRouter makes a router for a service on a transport.
func NewRouter(cfg Config, tr transport.Transport, opts ...Option) (*Router, error) {
	if cfg.Service == "" {
		return nil, errors.New("handlers: Config.Service is required")
	}
	if _, err := checkEventName(cfg.Service); err != nil {
		return nil, fmt.Errorf("handlers: service name %q: use lower-case words", cfg.Service)
	}
	retry := DefaultRetryPolicy()
	if cfg.Retry != nil {
		retry = *cfg.Retry
	}
	if err := retry.Validate(); err != nil {
		return nil, err
	}
	if cfg.Concurrency < 0 {
		return nil, fmt.Errorf("handlers: Config.Concurrency %d < 0", cfg.Concurrency)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	r := &Router{
		cfg:    cfg,
		retry:  retry,
		tr:     tr,
		logger: slog.New(slog.DiscardHandler),
		m:      &messages{service: cfg.Service, codec: JSON{}, now: time.Now},
		names:  make(map[string]bool),
	}
	for _, o := range opts {
		o.apply(r)
	}
	if r.idem == nil && r.db != nil {
		r.idem = r.db
	}
	r.tel = telemetry.New(r.mp)
	r.system = tracing.SystemOf(tr)
	wr, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.ShutdownTimeout}, wmlog.New(r.logger))
	if err != nil {
		return nil, err
	}
	r.wr = wr
	if r.events, err = tr.NewPublisher(bus.PublisherConfig{Exchange: cfg.Exchange}); err != nil {
		return nil, err
	}
	if r.queues, err = tr.NewPublisher(bus.PublisherConfig{ToQueue: true, Mandatory: true}); err != nil {
		return nil, err
	}
	return r, nil
}

// Emitter returns the emitter for plain code of this service.
func (r *Router) Emitter() *Emitter {
	return &Emitter{m: r.m, pub: r.events, exchange: firstOf(r.cfg.Exchange, bus.DefaultExchange), system: r.system, tel: r.tel}
}

// Stats returns the router's counters.
func (r *Router) Stats() Stats {
	return Stats{
		Handled: r.handled.Load(), Duplicates: r.duplicates.Load(), Retried: r.retried.Load(),
		Delayed: r.delayed.Load(), DeadLettered: r.deadLettered.Load(),
	}
}

// Run runs the handlers until ctx ends, then shuts down gracefully: it
// stops taking messages (a message that arrives is held, and requeued at
// the end), waits up to Config.ShutdownTimeout for the runs in flight to
// finish and be acked, then closes the subscriptions; a run still going is
// cancelled and its message requeued. Run may be called once.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("handlers: Run called twice")
	}
	r.running = true
	r.mu.Unlock()
	wctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.wr.Run(wctx) }()
	var relayWG sync.WaitGroup
	if r.db != nil && !r.cfg.NoRelay {
		rcfg := r.cfg.Relay
		rcfg.Service = firstOf(rcfg.Service, r.cfg.Service)
		if rcfg.MeterProvider == nil {
			rcfg.MeterProvider = r.mp
		}
		relay := outbox.NewRelay(r.db, r.events, rcfg, r.logger)
		relayWG.Go(func() { _ = relay.Run(wctx) })
	}
	if r.db != nil && r.cfg.InboxRetention >= 0 {
		relayWG.Go(func() { r.pruneInbox(wctx) })
	}
	var err error
	select {
	case err = <-done: // the watermill router failed by itself
	case <-ctx.Done():
		r.drain()
		stop()
		err = <-done
	}
	stop()
	relayWG.Wait()
	return errors.Join(err, r.events.Close(), r.queues.Close())
}

// pruneInbox deletes the inbox keys older than the retention, at once and
// then every quarter of the retention (at most hourly), until ctx ends.
func (r *Router) pruneInbox(ctx context.Context) {
	keep := cmp.Or(r.cfg.InboxRetention, DefaultInboxRetention)
	every := max(min(keep/4, time.Hour), 10*time.Millisecond)
	for {
		n, err := r.db.PruneInbox(ctx, time.Now().Add(-keep))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.logger.Warn("handlers: inbox pruning failed; retrying at the next round", slog.Any("error", err))
		case n > 0:
			r.logger.Debug("handlers: inbox pruned", slog.Int64("keys", n), slog.Duration("retention", keep))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// drain stops new runs and waits for those in flight, at most
// ShutdownTimeout.
func (r *Router) drain() {
	r.mu.Lock()
	r.draining = true
	r.drained = make(chan struct{})
	if r.inflight == 0 {
		close(r.drained)
	}
	drained := r.drained
	r.mu.Unlock()
	timeout := time.NewTimer(r.cfg.ShutdownTimeout)
	defer timeout.Stop()
	select {
	case <-drained:
	case <-timeout.C:
		r.logger.Warn("handlers: shutdown timeout with runs in flight; they are cancelled and requeued",
			slog.Duration("shutdown_timeout", r.cfg.ShutdownTimeout))
		return
	}
	r.mu.Lock()
	settling := make([]*message.Message, 0, len(r.settling))
	for msg := range r.settling {
		settling = append(settling, msg)
	}
	r.mu.Unlock()
	for _, msg := range settling {
		select {
		case <-msg.Acked():
		case <-msg.Nacked():
		case <-timeout.C:
			return
		}
	}
}

// enter admits a run; false while draining.
func (r *Router) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.draining {
		return false
	}
	r.inflight++
	return true
}

// leave ends the run of msg, which watermill acks or nacks next.
func (r *Router) leave(msg *message.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight--
	for m := range r.settling {
		if settled(m) {
			delete(r.settling, m)
		}
	}
	if r.settling == nil {
		r.settling = map[*message.Message]struct{}{}
	}
	r.settling[msg] = struct{}{}
	if r.draining && r.inflight == 0 {
		close(r.drained)
	}
}

// settled reports whether msg was acked or nacked.
func settled(msg *message.Message) bool {
	select {
	case <-msg.Acked():
		return true
	case <-msg.Nacked():
		return true
	default:
		return false
	}
}

// Running is closed once every handler is subscribed.
func (r *Router) Running() chan struct{} { return r.wr.Running() }

// HandlerOption configures one handler.
type HandlerOption interface{ applyHandler(*handlerOptions) }

type handlerOptions struct{ timeout time.Duration }

type handlerOptionFunc func(*handlerOptions)

func (f handlerOptionFunc) applyHandler(o *handlerOptions) { f(o) }

// WithTimeout bounds each run of the handler (its context's deadline); a
// run that times out is a transient failure.
func WithTimeout(d time.Duration) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.timeout = d })
}

// registration is one handler's identity.
type registration struct {
	name, event, queue string
	// tx handlers claim their message in their own transaction.
	tx  bool
	met *regMetrics
}

// Handle registers h as the handler called name for events of type E. Its
// queue "<service>.<name>" is bound to E's event name. A duplicate name, an
// invalid event name, or a router already running is an error, reported
// now rather than when a message arrives.
func Handle[E Event](r *Router, name string, h Handler[E], opts ...HandlerOption) error {
	_, err := register(r, name, h, false, opts)
	return err
}

func register[E Event](r *Router, name string, h Handler[E], tx bool, opts []HandlerOption) (registration, error) {
	event, err := EventName[E]()
	if err != nil {
		return registration{}, err
	}
	if _, err := checkEventName(name); err != nil {
		return registration{}, fmt.Errorf("handlers: handler name %q: use lower-case words", name)
	}
	var o handlerOptions
	for _, opt := range opts {
		opt.applyHandler(&o)
	}
	reg := registration{name: name, event: event, queue: bus.WorkQueue(r.cfg.Service, name), tx: tx}
	reg.met = newRegMetrics(r.cfg.Service, reg)
	if err := r.claim(name); err != nil {
		return registration{}, err
	}
	sub, err := r.tr.NewSubscriber(bus.SubscriberConfig{
		QueueName:   func(string) string { return reg.queue },
		Exchange:    r.cfg.Exchange,
		Prefetch:    r.cfg.Prefetch,
		RetryDelays: r.retry.Delays,
	})
	if err != nil {
		return registration{}, err
	}
	handler := r.chain(reg, typed(r, reg, h), o)
	for i := range max(r.cfg.Concurrency, 1) {
		wname := name
		if i > 0 {
			wname = fmt.Sprintf("%s#%d", name, i+1) // watermill's handler names are unique
		}
		r.wr.AddConsumerHandler(wname, event, sub, handler)
	}
	r.record(reg)
	return reg, nil
}

// MustHandle is Handle that panics on error, for wiring in main.
func MustHandle[E Event](r *Router, name string, h Handler[E], opts ...HandlerOption) {
	if err := Handle(r, name, h, opts...); err != nil {
		panic(err)
	}
}

func (r *Router) claim(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.running:
		return fmt.Errorf("handlers: handler %q registered after Run", name)
	case r.names[name]:
		return fmt.Errorf("handlers: duplicate handler name %q in service %q", name, r.cfg.Service)
	}
	r.names[name] = true
	return nil
}

// chain builds the middleware around a typed handler, outermost first:
// recoverability (idempotency, delayed retries, dead letters: Troupe's),
// watermill's Retry (the immediate tier), watermill's Recoverer (a panic is
// an error), watermill's Timeout.
func (r *Router) chain(reg registration, h message.HandlerFunc, o handlerOptions) message.NoPublishHandlerFunc {
	if o.timeout > 0 {
		h = middleware.Timeout(o.timeout)(h)
	}
	h = middleware.Recoverer(h)
	if r.retry.Immediate > 0 {
		h = r.immediate(reg, h)
	}
	return r.recoverability(reg, h)
}

// immediate is the in-process tier of the retry policy: after a transient
// failure h runs again, up to Immediate more times, waiting
// InitialInterval, then Multiplier times longer each time (at most
// MaxInterval, each wait ± Jitter), while the waits end within MaxElapsed
// of the first run. It is Troupe's rather than watermill's
// middleware.Retry, which advances its backoff once more for each call of
// its ShouldRetry and OnRetryHook (so the first retry came after 200 ms
// instead of 100, and the second after a second instead of 200 ms) and
// calls the hook from the second failure on.
func (r *Router) immediate(reg registration, h message.HandlerFunc) message.HandlerFunc {
	p := r.retry
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		start := time.Now()
		wait := p.InitialInterval
		for retries := 0; ; retries++ {
			out, err := h(msg)
			if err == nil || retries == p.Immediate || IsPermanent(err) ||
				errors.Is(err, errBudget) || errors.Is(err, errDuplicate) {
				return out, err
			}
			d := jittered(wait, p.Jitter)
			if p.MaxElapsed > 0 && time.Since(start)+d > p.MaxElapsed {
				return out, err
			}
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return out, err
			case <-t.C:
			}
			r.retried.Add(1)
			r.tel.Retries.Add(context.Background(), 1, reg.met.immediate)
			wait = time.Duration(float64(wait) * p.Multiplier)
			if p.MaxInterval > 0 {
				wait = min(wait, p.MaxInterval)
			}
		}
	}
}

// jittered spreads d uniformly over d ± factor·d.
func jittered(d time.Duration, factor float64) time.Duration {
	if factor <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + factor*(2*rand.Float64()-1)))
}
