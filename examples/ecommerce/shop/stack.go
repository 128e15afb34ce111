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
	// DataDir holds one SQLite file per service, unless DBURLs says
	// otherwise.
	DataDir string
	// DBURLs maps a service name to its database URL.
	DBURLs map[string]string
	// Services lists the services to run here; all four when empty.
	Services []string
	Payment  PaymentConfig
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
type Stack struct {
	Order     *OrderService
	Payment   *PaymentService
	Inventory *InventoryService
	Notify    *NotifyService

	dbs     map[string]*outbox.DB
	routers []*handlers.Router
	trs     []transport.Transport
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Start opens the databases, registers every handler and runs the routers;
// it returns once they all consume.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if len(cfg.Services) == 0 {
		cfg.Services = []string{OrderSvc, PaymentSvc, InventorySvc, NotifySvc}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{dbs: map[string]*outbox.DB{}}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, name := range cfg.Services {
		if err := s.start(ctx, runCtx, cfg, name); err != nil {
			s.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
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
	// Concurrency: a charge retried in process after a gateway timeout
	// must not hold the other orders' charges for its backoff.
	r, err := handlers.NewRouter(handlers.Config{Service: name, Exchange: cfg.Exchange, Retry: cfg.Retry, Prefetch: 256, Concurrency: 8,
		Relay: outbox.RelayConfig{PollInterval: 200 * time.Millisecond}}, tr, opts...)
	if err != nil {
		return err
	}
	switch name {
	case OrderSvc:
		s.Order, err = NewOrderService(ctx, db, r)
	case PaymentSvc:
		s.Payment, err = NewPaymentService(ctx, db, r, cfg.Payment)
	case InventorySvc:
		s.Inventory, err = NewInventoryService(ctx, db, r, cfg.Stock)
	case NotifySvc:
		s.Notify, err = NewNotifyService(ctx, db, r, func(orderID, kind string) {
			cfg.Logger.Info("notification sent", slog.String("order_id", orderID), slog.String("kind", kind))
		})
	default:
		err = fmt.Errorf("unknown service %q", name)
	}
	if err != nil {
		return err
	}
	s.routers = append(s.routers, r)
	done := make(chan error, 1)
	s.wg.Go(func() { done <- r.Run(runCtx) })
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

// DB returns a service's database.
func (s *Stack) DB(service string) *outbox.DB { return s.dbs[service] }
