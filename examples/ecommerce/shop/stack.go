package shop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
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
}

// Service names.
const (
	OrderSvc     = "order"
	PaymentSvc   = "payment"
	InventorySvc = "inventory"
	NotifySvc    = "notify"
)

// Stack is the services of one process, started and stopped together.
// Its methods are safe for concurrent use.
type Stack struct {
	Order     *OrderService
	Payment   *PaymentService
	Inventory *InventoryService
	Notify    *NotifyService

	dbs     map[string]*outbox.DB
	routers []*handlers.Router
	trs     []transport.Transport
	runCtx  context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// failed is closed when a router stops before Close; failure says why.
	failed   chan struct{}
	failOnce sync.Once
	failure  error
}

// Start opens the databases, registers every handler and runs the routers;
// it returns once they all consume. When it runs every service, it checks
// CheckoutSaga against their handlers and fails if they disagree.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if len(cfg.Services) == 0 {
		cfg.Services = []string{OrderSvc, PaymentSvc, InventorySvc, NotifySvc}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{dbs: map[string]*outbox.DB{}, failed: make(chan struct{})}
	s.runCtx, s.cancel = context.WithCancel(context.Background())
	for _, name := range cfg.Services {
		if err := s.start(ctx, s.runCtx, cfg, name); err != nil {
			s.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	if err := s.checkSaga(cfg.Services); err != nil && cfg.Checkout != CheckoutTwoPC { // 2PC is not the declared saga
		s.Close()
		return nil, err
	}
	return s, nil
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
	tr, err := transport.Open(cfg.BusURL, transport.WithLogger(cfg.Logger))
	if err != nil {
		return err
	}
	s.trs = append(s.trs, tr)
	opts := []handlers.Option{handlers.WithDB(db), handlers.WithLogger(cfg.Logger)}
	if cfg.OnEvent != nil {
		opts = append(opts, handlers.WithObserver(func(_ context.Context, o handlers.Observation) {
			if o.Outcome == handlers.Handled {
				cfg.OnEvent(name, o.Event, o.SagaID)
			}
		}))
	}
	r, err := handlers.NewRouter(handlers.Config{Service: cfg.QueuePrefix + name, Exchange: cfg.Exchange, Retry: cfg.Retry, Prefetch: 256,
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
