package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/load"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/cpuprofile"
)

// runLoad is "shop load": the load generator (see docs/ecommerce-load.md).
// It places orders through the order API at -url, or, with -inprocess,
// through a stack it starts itself; then it prints the tally and the
// books, and fails when the books do not balance or an order is stuck or
// could not be placed.
func runLoad(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("shop load", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var cfg load.Config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "base URL of the order API")
	fs.IntVar(&cfg.Orders, "n", 10_000, "orders to place")
	fs.IntVar(&cfg.Concurrency, "c", 50, "orders in flight at most")
	fs.Float64Var(&cfg.Rate, "rate", 0, "placements per second; 0: as fast as -c allows")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "placement to notification beyond which an order is stuck")
	fs.Float64Var(&cfg.DeclinedShare, "declined", 0.05, "share of orders paid with -declined-method")
	fs.Float64Var(&cfg.SoldOutShare, "sold-out", 0.05, "share of orders that also ask for -sold-out-sku (refunded when none is left)")
	fs.StringVar(&cfg.DeclinedMethod, "declined-method", "card-declined", "payment method the shop declines")
	fs.StringVar(&cfg.SoldOutSKU, "sold-out-sku", "plum", "sku the shop runs out of")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the order mix")
	data := fs.String("data", "data", "folder of the services' SQLite files, for the books")
	var urls load.LedgerURLs
	fs.StringVar(&urls.Order, "order-db", "", "order database URL for the books (default: in -data)")
	fs.StringVar(&urls.Payment, "payment-db", "", "payment database URL for the books (default: in -data)")
	fs.StringVar(&urls.Inventory, "inventory-db", "", "inventory database URL for the books (default: in -data)")
	sagasURL := fs.String("sagas-url", "", "base URL of the saga tracker's API (GET /sagas): after the load, wait until every saga of the run is final and print the tracker's counts and lag (with -inprocess: the order API, which serves it)")
	sagasTimeout := fs.Duration("sagas-timeout", 30*time.Second, "how long the saga tracker may take after the load to have every saga final")
	noBooks := fs.Bool("no-books", false, "skip the books check (the databases are out of reach)")
	fs.BoolVar(&cfg.LongPoll, "long-poll", false, "wait for each order with GET /orders/{id}?wait=notified instead of following GET /orders/notified")
	inprocess := fs.Bool("inprocess", false, "start the whole stack in this process (bundled broker, SQLite in a fresh folder unless -data is given)")
	transient := fs.Float64("transient-failures", 0.05, "with -inprocess: share of first charge attempts that time out")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	metricsAddr := fs.String("metrics-addr", "", "with -inprocess: serve /metrics on this address instead of on the order API's")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	var errs []error
	if !(*transient >= 0 && *transient <= 1) { // NaN too
		errs = append(errs, fmt.Errorf("-transient-failures %v: must be in 0..1", *transient))
	}
	if cfg.Concurrency == 0 {
		errs = append(errs, errors.New("-c 0: must be at least 1"))
	}
	check := cfg
	if *inprocess {
		check.URL = "http://in-process" // the stack's own, once started
	}
	if err := errors.Join(append(errs, asFlags(check.Validate()))...); err != nil {
		return err
	}
	dataSet := false
	fs.Visit(func(f *flag.Flag) { dataSet = dataSet || f.Name == "data" })
	cfg.Progress, cfg.ProgressInPlace = stdout, isTerminal(stdout)

	var books func(context.Context) (shop.Books, error)
	if *inprocess {
		dir := *data
		if !dataSet {
			tmp, err := os.MkdirTemp("", "shop-load-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		metrics, err := startMetrics("shop", *metricsAddr, stdout)
		if err != nil {
			return err
		}
		defer metrics.Close()
		stack, url, stop, err := startInProcess(ctx, dir, *transient, metrics)
		if err != nil {
			return err
		}
		defer stop()
		cfg.URL, books = url, stack.Books
		*sagasURL = cmpOr(*sagasURL, url)
		fmt.Fprintf(stdout, "shop load: in process (bundled broker, SQLite in %s), order API on %s\n", dir, url)
	} else if !*noBooks {
		u := load.DataDirURLs(*data)
		u.Order, u.Payment, u.Inventory = cmpOr(urls.Order, u.Order), cmpOr(urls.Payment, u.Payment), cmpOr(urls.Inventory, u.Inventory)
		ledgers, err := load.OpenLedgers(ctx, u)
		if err != nil {
			return fmt.Errorf("books: %w (use -data, -order-db..., or -no-books)", err)
		}
		defer ledgers.Close()
		books = ledgers.Books
	}
	if *cpuProfile != "" {
		stop, err := cpuprofile.Start(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	fmt.Fprintf(stdout, "shop load: %d orders, %d in flight at most, rate %s, to %s\n", cfg.Orders, cfg.Concurrency, rateString(cfg.Rate), cfg.URL)
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	var sagas *load.SagaConfig
	if *sagasURL != "" {
		sagas = &load.SagaConfig{URL: *sagasURL, Timeout: *sagasTimeout}
	}
	return report(ctx, stdout, res, books, sagas)
}

// loadFlags names the flag of each field of load.Config that one sets.
var loadFlags = map[string]string{
	"URL": "url", "Orders": "n", "Concurrency": "c", "Rate": "rate", "Timeout": "timeout",
	"DeclinedShare": "declined", "SoldOutShare": "sold-out",
}

// asFlags rewrites the load.FieldErrors in err in terms of the flags.
func asFlags(err error) error {
	if err == nil {
		return nil
	}
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else {
		all = []error{err}
	}
	out := make([]error, 0, len(all))
	for _, e := range all {
		var fe *load.FieldError
		if errors.As(e, &fe) && loadFlags[fe.Field] != "" {
			e = fmt.Errorf("-%s %v: %s", loadFlags[fe.Field], fe.Value, fe.Want)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// report prints the tally, the saga tracker's states (when sagas is set)
// and the books; its error is the run's verdict.
func report(ctx context.Context, stdout io.Writer, res load.Result, books func(context.Context) (shop.Books, error), sagas *load.SagaConfig) error {
	fmt.Fprintf(stdout, "tally: %v\n", res)
	fmt.Fprintf(stdout, "notifications: %s\n", res.Notices)
	var errs []error
	if sagas != nil {
		t, err := load.AwaitSagas(ctx, *sagas, res)
		if err == nil {
			fmt.Fprintf(stdout, "sagas: %v\n", t)
			err = t.Verdict(res)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sagas: %w", err))
		}
	}
	if res.Stuck > 0 {
		errs = append(errs, fmt.Errorf("%d orders stuck (not notified in time)", res.Stuck))
	}
	if res.Failed > 0 {
		errs = append(errs, fmt.Errorf("%d orders could not be placed: first error: %w", res.Failed, res.FirstErr))
	}
	if books != nil {
		b, err := books(ctx)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("books: %w", err))
		case b.Balanced():
			fmt.Fprintf(stdout, "books: balanced: %v\n", b)
		default:
			fmt.Fprintf(stdout, "books: NOT BALANCED: %v\n", b)
			errs = append(errs, errors.New("the books do not balance"))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("load: %w", errors.Join(errs...))
	}
	return nil
}

// startInProcess starts the four services on the bundled broker with
// SQLite files in dir, and serves the order API and the saga tracker's
// (/sagas), with /metrics from metrics, on a free loopback port.
func startInProcess(ctx context.Context, dir string, transient float64, metrics *metricsEndpoint) (*shop.Stack, string, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", nil, err
	}
	stack, err := shop.Start(ctx, shop.Config{
		BusURL: "mem://shop-load", DataDir: dir,
		Stock:         map[string]int{"apple": 1_000_000_000, "pear": 1_000_000_000, "plum": 50},
		Payment:       shop.PaymentConfig{DeclinedMethod: "card-declined", Limit: 100_000, TransientFailureRate: transient, Seed: uint64(time.Now().UnixNano())},
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		MeterProvider: metrics.m.MeterProvider(),
	})
	if err != nil {
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, errors.Join(err, stack.Close())
	}
	srv := &http.Server{Handler: metrics.mount(stack.HTTPHandler()), ReadHeaderTimeout: 5 * time.Second}
	srv.RegisterOnShutdown(stack.Order.CloseStreams) // the generator's GET /orders/notified
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // ErrServerClosed once stop shuts it down
	}()
	stop := func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		<-served
		_ = stack.Close()
	}
	return stack, "http://" + ln.Addr().String(), stop, nil
}

func rateString(r float64) string {
	if r <= 0 {
		return "unpaced"
	}
	return fmt.Sprintf("%.0f/s", r)
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// isTerminal reports whether w is a terminal, where the progress line
// overwrites itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
