// Command shop runs the e-commerce checkout all in one process: the bundled
// broker, the order, payment, inventory and notify services (a SQLite file
// each in -data), and the order API on -addr. Every event a service handles
// is printed as the saga moves.
//
//	go run ./examples/ecommerce/cmd/shop
//	curl -s localhost:8080/orders -d '{"customer":"ada","items":[{"sku":"apple","quantity":2,"price":150}],"amount":300,"payment_method":"card"}'
//	curl -s localhost:8080/orders/<id>
//
// Traces go where the OTEL_* variables say (see docs/tracing.md).
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
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if len(os.Args) > 1 && os.Args[1] == "load" {
		run = func(ctx context.Context, args []string, stdout io.Writer, _ chan<- string) error {
			return runLoad(ctx, args[1:], stdout)
		}
	}
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends; ready, when set, receives the API's address.
func run(ctx context.Context, args []string, stdout io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("shop", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "HTTP address of the order API")
	data := fs.String("data", "data", "folder of the services' SQLite files")
	busURL := fs.String("bus", "mem://shop", "bus URL: mem://NAME (bundled broker) or amqp://...")
	declined := fs.String("declined-method", "card-declined", "payment method the simulated gateway declines")
	limit := fs.Int("limit", 100_000, "amount (cents) above which payments are declined")
	transient := fs.Float64("transient-failures", 0.05, "share of first charge attempts that time out (retried)")
	stock := fs.String("stock", "apple=1000,pear=500,plum=50", "initial stock: sku=quantity,...")
	quiet := fs.Bool("quiet", false, "do not print a line per event")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics on this address instead of on -addr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	items, err := parseStock(*stock)
	if err != nil {
		return err
	}
	if *transient < 0 || *transient > 1 || fs.NArg() > 0 {
		return fmt.Errorf("-transient-failures must be in 0..1, and no arguments (got %v)", fs.Args())
	}
	if err := os.MkdirAll(*data, 0o755); err != nil {
		return err
	}
	shutdownTracing, err := tracing.Setup(ctx, "shop")
	if err != nil {
		return err
	}
	defer shutdownTracing(context.Background())
	metrics, err := startMetrics("shop", *metricsAddr, stdout)
	if err != nil {
		return err
	}
	defer metrics.Close()

	var mu sync.Mutex
	start := time.Now()
	cfg := shop.Config{
		BusURL: *busURL, DataDir: *data, Stock: items,
		Payment: shop.PaymentConfig{DeclinedMethod: *declined, Limit: *limit, TransientFailureRate: *transient, Seed: uint64(time.Now().UnixNano())},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if !*quiet {
		cfg.OnEvent = func(service, event, orderID string) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(stdout, "%9.3fs  %-9s handled %-20s order %s\n", time.Since(start).Seconds(), service, event, orderID)
		}
	}
	s, err := shop.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: metrics.mount(s.Order.HTTPHandler()), ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "shop: order API on http://%s (POST /orders, GET /orders/{id}); bus %s; data in %s\n", ln.Addr(), *busURL, *data)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	books, err := s.Books(context.Background())
	if err == nil {
		fmt.Fprintf(stdout, "shop: stopped; %s\n", books)
	}
	return nil
}

func parseStock(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		sku, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		q, err := strconv.Atoi(n)
		if !ok || sku == "" || err != nil || q < 0 {
			return nil, fmt.Errorf("-stock: %q is not sku=quantity", part)
		}
		out[sku] = q
	}
	return out, nil
}
