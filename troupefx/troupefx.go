// Package troupefx wires Troupe into go.uber.org/fx applications. It is
// thin on purpose: every package it wires works without fx.
//
//	fx.New(
//		troupefx.Module,
//		fx.Supply(troupefx.Config{Service: "payment", BusURL: "amqp://..."}),
//		troupefx.Handler("charge", handlers.HandlerFunc[OrderPlaced](charge)),
//	)
//
// Module provides the transport (opened from Config.BusURL) and the
// handlers.Router with every handler given with Handler or TxHandler
// registered, and its Emitter; the router runs from the application's
// start to its stop, and stopping by itself shuts the application down.
// With Config.DBURL set it also provides the service's *outbox.DB, and
// the router uses it for transactional handlers and idempotency.
//
// A handler that needs the application's other parts (a repository, a
// client, the *outbox.DB) is built by a constructor that fx calls with
// them, given with ProvideHandler or ProvideTxHandler. RouterOption
// passes the router options that Config cannot hold (an observer, dead
// letter events, a meter provider...). A *slog.Logger in the application
// (fx.Supply(logger)) is the transport's and the router's logger; Logger
// makes it fx's own as well.
package troupefx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
)

// Config is what a service tells Troupe.
type Config struct {
	// Service names the service (its queues are "<service>.<handler>").
	Service string
	// BusURL is "mem://..." or "amqp://..."; "" is the process's bundled
	// broker.
	BusURL string
	// DBURL is the service's database ("sqlite:PATH", "postgres://..."),
	// optional.
	DBURL string
	// Router is the rest of the router's configuration; its Service is
	// taken from Service.
	Router handlers.Config
}

// Module provides transport.Transport, *handlers.Router, its
// *handlers.Emitter and, with a DBURL, *outbox.DB, and runs the router
// with the application. A router that stops by itself after the start
// (its subscriptions gone, the broker lost for good) shuts the
// application down with exit code 1 (fx.Shutdowner), logging why, rather
// than leave a service running that handles nothing.
var Module = fx.Module("troupe",
	fx.Provide(newTransport, newDB, newRouter, (*handlers.Router).Emitter),
	fx.Invoke(func(*handlers.Router) {}),
)

// Logger makes fx log through slog.
func Logger(l *slog.Logger) fx.Option {
	return fx.WithLogger(func() fxevent.Logger { return &fxevent.SlogLogger{Logger: l} })
}

// registration registers one handler on a router.
type registration func(*handlers.Router) error

const handlersGroup = `group:"troupe.handlers"`

// Handler gives the router a handler, registered as handlers.Handle would.
func Handler[E handlers.Event](name string, h handlers.Handler[E], opts ...handlers.HandlerOption) fx.Option {
	return supplyRegistration(func(r *handlers.Router) error { return handlers.Handle(r, name, h, opts...) })
}

// TxHandler gives the router a transactional handler (handlers.HandleTx);
// the Config needs a DBURL.
func TxHandler[E handlers.Event](name string, h handlers.TxHandler[E], opts ...handlers.HandlerOption) fx.Option {
	return supplyRegistration(func(r *handlers.Router) error { return handlers.HandleTx(r, name, h, opts...) })
}

func supplyRegistration(f registration) fx.Option {
	return fx.Supply(fx.Annotate(f, fx.ResultTags(handlersGroup)))
}

// ProvideHandler gives the router the handler that newHandler builds: fx
// calls newHandler with its parameter taken from the application, like
// any constructor's (one value, or a struct embedding fx.In to take
// several). An error from newHandler fails the application's start, as a
// constructor's does.
//
//	type chargeParams struct {
//		fx.In
//		Gateway *Gateway
//		Log     *slog.Logger
//	}
//
//	troupefx.ProvideHandler("charge", func(p chargeParams) (handlers.Handler[OrderPlaced], error) {
//		return newCharger(p.Gateway, p.Log), nil
//	})
func ProvideHandler[E handlers.Event, P any](name string, newHandler func(P) (handlers.Handler[E], error), opts ...handlers.HandlerOption) fx.Option {
	return provideRegistration(name, newHandler, func(r *handlers.Router, h handlers.Handler[E]) error {
		return handlers.Handle(r, name, h, opts...)
	})
}

// ProvideTxHandler is ProvideHandler for a transactional handler
// (handlers.HandleTx); the Config needs a DBURL.
func ProvideTxHandler[E handlers.Event, P any](name string, newHandler func(P) (handlers.TxHandler[E], error), opts ...handlers.HandlerOption) fx.Option {
	return provideRegistration(name, newHandler, func(r *handlers.Router, h handlers.TxHandler[E]) error {
		return handlers.HandleTx(r, name, h, opts...)
	})
}

// provideRegistration provides the registration of the handler that
// newHandler builds, which register registers.
func provideRegistration[H, P any](name string, newHandler func(P) (H, error), register func(*handlers.Router, H) error) fx.Option {
	return fx.Provide(fx.Annotate(func(p P) (registration, error) {
		h, err := newHandler(p)
		if err != nil {
			return nil, fmt.Errorf("troupefx: handler %s: %w", name, err)
		}
		return func(r *handlers.Router) error { return register(r, h) }, nil
	}, fx.ResultTags(handlersGroup)))
}

const optionsGroup = `group:"troupe.router_options"`

// RouterOption gives the router o, after the options Module sets itself
// (the logger, the database): handlers.WithObserver,
// handlers.WithDeadLetterEvents, handlers.WithMeterProvider,
// handlers.WithClock, handlers.WithCodec... Several RouterOptions apply
// in an order fx chooses (a value group has none), so give one option of
// each kind.
func RouterOption(o handlers.Option) fx.Option {
	return fx.Provide(fx.Annotate(func() handlers.Option { return o }, fx.ResultTags(optionsGroup)))
}

type transportParams struct {
	fx.In
	Config Config
	Logger *slog.Logger `optional:"true"`
}

func newTransport(lc fx.Lifecycle, p transportParams) (transport.Transport, error) {
	tr, err := transport.Open(p.Config.BusURL, transport.WithLogger(p.Logger))
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(tr.Close))
	return tr, nil
}

type dbResult struct {
	fx.Out
	DB *outbox.DB `optional:"true"`
}

func newDB(lc fx.Lifecycle, cfg Config) (dbResult, error) {
	if cfg.DBURL == "" {
		return dbResult{}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := outbox.Open(ctx, cfg.DBURL)
	if err != nil {
		return dbResult{}, err
	}
	lc.Append(fx.StopHook(db.Close))
	return dbResult{DB: db}, nil
}

type routerParams struct {
	fx.In
	Config        Config
	Transport     transport.Transport
	DB            *outbox.DB        `optional:"true"`
	Logger        *slog.Logger      `optional:"true"`
	Registrations []registration    `group:"troupe.handlers"`
	Options       []handlers.Option `group:"troupe.router_options"`
	Shutdowner    fx.Shutdowner
}

func newRouter(lc fx.Lifecycle, p routerParams) (*handlers.Router, error) {
	cfg := p.Config.Router
	cfg.Service = p.Config.Service
	opts := []handlers.Option{handlers.WithLogger(p.Logger)}
	if p.DB != nil {
		opts = append(opts, handlers.WithDB(p.DB))
	}
	opts = append(opts, p.Options...)
	r, err := handlers.NewRouter(cfg, p.Transport, opts...)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, reg := range p.Registrations {
		errs = append(errs, reg(r))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)   // Run's result
	final := make(chan error, 1) // Run's result, once the router started
	lc.Append(fx.Hook{
		OnStart: func(start context.Context) error {
			go func() { ran <- r.Run(ctx) }()
			select {
			case <-r.Running():
			case err := <-ran:
				cancel()
				return fmt.Errorf("troupefx: router stopped at start: %w", err)
			case <-start.Done():
				cancel()
				return start.Err()
			}
			go func() {
				err := <-ran
				if ctx.Err() == nil { // not OnStop's doing
					if err == nil {
						err = errors.New("troupefx: the router stopped by itself")
					}
					logger.Error("troupefx: the router stopped; shutting the application down", slog.Any("error", err))
					if serr := p.Shutdowner.Shutdown(fx.ExitCode(1)); serr != nil {
						logger.Error("troupefx: shutdown", slog.Any("error", serr))
					}
				}
				final <- err
			}()
			return nil
		},
		OnStop: func(stop context.Context) error {
			cancel()
			select {
			case err := <-final:
				return err
			case <-stop.Done():
				return fmt.Errorf("troupefx: router still draining: %w", stop.Err())
			}
		},
	})
	return r, nil
}
