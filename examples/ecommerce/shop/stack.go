package shop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
)

// Config configures a stack.
type Config struct {
	// BusURL is "mem://NAME" (the bundled broker in this process) or
	// "amqp://...".
	BusURL string
	// Exchange is the bus exchange; the framework's default when empty.
	Exchange string
	// QueuePrefix is put before each service's name on the bus (its
	// queues are "<prefix><service>.<handler>"), so that stacks sharing a
	// broker keep apart; empty: none.
	QueuePrefix string
	// DataDir holds one SQLite file per service, unless DBURLs says
	// otherwise.
	DataDir string
	// DBURLs maps a service name to its database URL.
	DBURLs map[string]string
	// Services lists the services to run here; all four when empty.
	// TrackerSvc runs the checkout's saga tracker (which runs anyway with
	// all four), e.g. in a process of its own.
	Services []string
	Payment  PaymentConfig
	// Checkout is CheckoutChoreography (the default) or CheckoutTwoPC.
	Checkout Checkout
	// Stock is the inventory's initial stock per sku.
	Stock  map[string]int
	Retry  *handlers.RetryPolicy
	Logger *slog.Logger
	// OnEvent, when set, is called for every event a service handles
	// (service, event name, order id): the "line per event" of the demo.
	OnEvent func(service, event, orderID string)
	// Observe, when set, is called after every delivery to a service's
	// handler, whatever its outcome (handlers.WithObserver): tests count
	// the duplicates the inbox skipped.
	Observe func(service string, o handlers.Observation)
	// Tracker configures the checkout's saga tracker, which Start runs
	// when it runs every service; its database is DBURLs["saga-tracker"],
	// else saga-tracker.db in DataDir.
	Tracker saga.TrackerConfig
	// Transport, when set, connects a service (or the tracker) to the bus
	// instead of transport.Open(BusURL): a test harness passes its
	// fault-injecting transports here (package saga/sagatest).
	Transport func(service string) (transport.Transport, error)
	// Clock, when set, is the time the services' routers write into
	// their messages (handlers.WithClock); a test harness passes its
	// virtual clock, the same as Tracker.Clock.
	Clock func() time.Time
	// MeterProvider records the services' metrics (handlers, relays); the
	// global one when nil.
	MeterProvider metric.MeterProvider
}

// openTransport connects service to the bus: through cfg.Transport when
// set, else by URL.
func openTransport(cfg Config, service string) (transport.Transport, error) {
	if cfg.Transport != nil {
		return cfg.Transport(service)
	}
	return transport.Open(cfg.BusURL, transport.WithLogger(cfg.Logger))
}

// Service names.
const (
	OrderSvc     = "order"
	PaymentSvc   = "payment"
	InventorySvc = "inventory"
	NotifySvc    = "notify"
	// TrackerSvc is the checkout's saga tracker, as a service of its own.
	TrackerSvc = saga.TrackerService
)

// Stack is the services of one process, started and stopped together.
// Its methods are safe for concurrent use.
type Stack struct {
	Order     *OrderService
	Payment   *PaymentService
	Inventory *InventoryService
	Notify    *NotifyService

	// Tracker follows every checkout (nil unless this process runs every
	// service).
	Tracker *saga.Tracker

	busURL      string
	queuePrefix string
	dbs         map[string]*outbox.DB
	routers     []*handlers.Router
	trs         []transport.Transport
	runCtx      context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	// failed is closed when a router stops before Close; failure says why.
	failed   chan struct{}
	failOnce sync.Once
	failure  error
}

// Start opens the databases, registers every handler and runs the routers;
// it returns once they all consume. When it runs every service, it checks
// CheckoutSaga against their handlers and fails if they disagree, and runs
// the checkout's saga tracker (Stack.Tracker).
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if len(cfg.Services) == 0 {
		cfg.Services = []string{OrderSvc, PaymentSvc, InventorySvc, NotifySvc}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := declareTopology(ctx, cfg); err != nil {
		return nil, err
	}
	s := &Stack{dbs: map[string]*outbox.DB{}, failed: make(chan struct{}), busURL: cfg.BusURL, queuePrefix: cfg.QueuePrefix}
	s.runCtx, s.cancel = context.WithCancel(context.Background())
	for _, name := range cfg.Services {
		if name == TrackerSvc {
			continue // started last, below
		}
		if err := s.start(ctx, s.runCtx, cfg, name); err != nil {
			s.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	if err := s.checkSaga(cfg.Services); err != nil && cfg.Checkout != CheckoutTwoPC { // 2PC is not the declared saga
		s.Close()
		return nil, err
	}
	if runsAll(cfg.Services) || slices.Contains(cfg.Services, TrackerSvc) {
		if err := s.startTracker(ctx, s.runCtx, cfg); err != nil {
			s.Close()
			return nil, fmt.Errorf("start saga tracker: %w", err)
		}
	}
	return s, nil
}

// runsAll reports whether services has every service of the checkout.
func runsAll(services []string) bool {
	for _, svc := range CheckoutSaga.Services() {
		if !slices.Contains(services, svc) {
			return false
		}
	}
	return true
}

// startTracker runs the checkout's saga tracker on its own database.
func (s *Stack) startTracker(ctx, runCtx context.Context, cfg Config) error {
	dbURL := cfg.DBURLs[saga.TrackerService]
	if dbURL == "" {
		dbURL = "sqlite:" + filepath.Join(cfg.DataDir, saga.TrackerService+".db")
	}
	db, err := outbox.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	s.dbs[saga.TrackerService] = db
	tr, err := openTransport(cfg, saga.TrackerService)
	if err != nil {
		return err
	}
	s.trs = append(s.trs, tr)
	tc := cfg.Tracker
	if tc.Exchange == "" {
		tc.Exchange = cfg.Exchange
	}
	if tc.QueuePrefix == "" {
		tc.QueuePrefix = cfg.QueuePrefix
	}
	if tc.Logger == nil {
		tc.Logger = cfg.Logger
	}
	t, err := saga.NewTracker(ctx, &CheckoutSaga, db, tr, tc)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	s.wg.Go(func() {
		err := t.Run(runCtx)
		if runCtx.Err() == nil {
			s.fail(fmt.Errorf("saga tracker stopped: %w", err))
		}
		done <- err
	})
	select {
	case <-t.Running():
		s.Tracker = t
		return nil
	case err := <-done:
		return fmt.Errorf("tracker: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SagaHandler serves the tracker's HTTP API (saga.HTTPHandler: GET /sagas,
// GET /sagas/{id}, POST /sagas/{id}/resume|skip|resolve), resuming through
// the stack's bus; nil when the stack runs no tracker.
func (s *Stack) SagaHandler() http.Handler {
	if s.Tracker == nil {
		return nil
	}
	busURL := s.busURL
	return saga.HTTPHandler(s.Tracker.Store(), saga.DLQRedriver(func() (dlq.Conn, error) { return dlq.Dial(busURL) }), nil)
}

// HTTPHandler serves the order API (OrderService.HTTPHandler) when the
// order service runs here and, with a tracker, the saga API under /sagas.
func (s *Stack) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	if s.Order != nil {
		mux.Handle("/orders", s.Order.HTTPHandler())
		mux.Handle("/orders/", s.Order.HTTPHandler())
	}
	if h := s.SagaHandler(); h != nil {
		mux.Handle("/sagas", h)
		mux.Handle("/sagas/", h)
	}
	return mux
}

func (s *Stack) start(ctx, runCtx context.Context, cfg Config, name string) error {
	dbURL := cfg.DBURLs[name]
	if dbURL == "" {
		dbURL = "sqlite:" + filepath.Join(cfg.DataDir, name+".db")
	}
	db, err := outbox.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	s.dbs[name] = db
	tr, err := openTransport(cfg, name)
	if err != nil {
		return err
	}
	s.trs = append(s.trs, tr)
	// Dead letters are announced, so that the tracker parks their sagas.
	opts := []handlers.Option{handlers.WithDB(db), handlers.WithLogger(cfg.Logger), handlers.WithDeadLetterEvents()}
	if cfg.Clock != nil {
		opts = append(opts, handlers.WithClock(cfg.Clock))
	}
	if cfg.MeterProvider != nil {
		opts = append(opts, handlers.WithMeterProvider(cfg.MeterProvider))
	}
	if cfg.Observe != nil {
		opts = append(opts, handlers.WithObserver(func(_ context.Context, o handlers.Observation) { cfg.Observe(name, o) }))
	}
	if cfg.OnEvent != nil {
		opts = append(opts, handlers.WithObserver(func(_ context.Context, o handlers.Observation) {
			if o.Outcome == handlers.Handled {
				cfg.OnEvent(name, o.Event, o.SagaID)
			}
		}))
	}
	// Concurrency: a charge retried in process after a gateway timeout
	// must not hold the other orders' charges for its backoff (with 5% of
	// timeouts at ~300 orders/s, 8 consumers per handler were often all
	// waiting); more transactions at once also make bigger SQLite groups.
	r, err := handlers.NewRouter(handlers.Config{Service: cfg.QueuePrefix + name, Exchange: cfg.Exchange, Retry: cfg.Retry, Prefetch: 256, Concurrency: 32,
		Relay: outbox.RelayConfig{PollInterval: 200 * time.Millisecond}}, tr, opts...)
	if err != nil {
		return err
	}
	switch {
	case cfg.Checkout == CheckoutTwoPC && name != NotifySvc:
		err = s.startTwoPC(ctx, runCtx, cfg, name, db, tr, r)
	case name == OrderSvc:
		s.Order, err = NewOrderService(ctx, db, r)
	case name == PaymentSvc:
		s.Payment, err = NewPaymentService(ctx, db, r, cfg.Payment)
	case name == InventorySvc:
		s.Inventory, err = NewInventoryService(ctx, db, r, cfg.Stock)
	case name == NotifySvc:
		s.Notify, err = NewNotifyService(ctx, db, r, func(ctx context.Context, orderID, kind string) {
			cfg.Logger.InfoContext(ctx, "notification sent", slog.String("order_id", orderID), slog.String("kind", kind))
		})
	default:
		err = fmt.Errorf("unknown service %q", name)
	}
	if err != nil {
		return err
	}
	if len(r.Handlers()) == 0 {
		return nil // a 2PC participant consumes its own queue, not a router's
	}
	s.routers = append(s.routers, r)
	done := make(chan error, 1)
	s.wg.Go(func() {
		err := r.Run(runCtx)
		if runCtx.Err() == nil {
			s.fail(fmt.Errorf("%s router stopped: %w", name, err))
		}
		done <- err
	})
	select {
	case <-r.Running():
		return nil
	case err := <-done:
		return fmt.Errorf("router: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the routers (draining what is in flight) and closes the
// databases and transports.
func (s *Stack) Close() error {
	s.cancel()
	s.wg.Wait()
	var errs []error
	for _, tr := range s.trs {
		errs = append(errs, tr.Close())
	}
	for _, db := range s.dbs {
		errs = append(errs, db.Close())
	}
	return errors.Join(errs...)
}

func (s *Stack) fail(err error) {
	s.failOnce.Do(func() {
		s.failure = err
		close(s.failed)
	})
}

// Failed is closed when a service's router stops on its own (not by
// Close): the process should end, with Health's error.
func (s *Stack) Failed() <-chan struct{} { return s.failed }

// Health returns nil when every router runs and every database answers,
// else what is wrong. It blocks until the pings answer or ctx ends.
func (s *Stack) Health(ctx context.Context) error {
	select {
	case <-s.failed:
		return s.failure
	default:
	}
	if s.runCtx.Err() != nil {
		return errors.New("shop: stack closed")
	}
	var errs []error
	for name, db := range s.dbs {
		if err := db.SQL().PingContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s database: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// DB returns a service's database.
func (s *Stack) DB(service string) *outbox.DB { return s.dbs[service] }
