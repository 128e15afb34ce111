package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/cpuprofile"
	"github.com/troupehq/troupe/tracing"
)

// runService runs one service (cmd) in this process against a shared
// broker and its own database; the order service serves the API.
func runService(ctx context.Context, cmd string, args []string, stdout io.Writer, ready chan<- string) error {
	fs, o := newFlags(cmd)
	if err := o.parse(fs, args); err != nil {
		return err
	}
	if err := serviceBus(o.bus); err != nil {
		return err
	}
	dbURL, err := serviceDB(o.db, o.data, cmd)
	if err != nil {
		return err
	}
	cfg := o.stackConfig([]string{cmd})
	cfg.DBURLs = map[string]string{cmd: dbURL}
	return serve(ctx, cmd, o, cfg, stdout, ready)
}

// stackConfig is the stack's configuration for services (all when nil).
func (o *options) stackConfig(services []string) shop.Config {
	return shop.Config{
		BusURL: o.bus, Exchange: o.exchange, QueuePrefix: o.queuePrefix, DataDir: o.data,
		Services: services, Payment: o.payment(), Stock: o.items, Checkout: o.mode,
	}
}

// serve starts the stack, serves HTTP (the order API when the order
// service runs here, and /healthz) and runs until ctx ends or a service
// fails. name is "all" or the service's name.
func serve(ctx context.Context, name string, o *options, cfg shop.Config, stdout io.Writer, ready chan<- string) (err error) {
	traceName, prefix := name, "shop "+name+": "
	if name == "all" {
		traceName, prefix = "shop", "shop: "
	}
	if o.cpuProfile != "" {
		stop, err := cpuprofile.Start(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	shutdownTracing, err := tracing.Setup(ctx, traceName)
	if err != nil {
		return err
	}
	defer func() {
		if terr := shutdownTracing(context.Background()); terr != nil && err == nil {
			err = fmt.Errorf("flush traces: %w", terr)
		}
	}()
	metrics, err := startMetrics(traceName, o.metricsAddr, stdout)
	if err != nil {
		return err
	}
	defer metrics.Close()
	cfg.MeterProvider = metrics.m.MeterProvider()
	cfg.Logger = slog.New(tracing.NewLogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.level})))
	if !o.quiet {
		var mu sync.Mutex
		start := time.Now()
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
	if o.registry != "" {
		if err := s.WriteRegistryFile(o.registry); err != nil {
			return err
		}
	}

	addr := o.addr
	if s.Order == nil {
		addr = o.http
	}
	var srv *http.Server
	errc := make(chan error, 1)
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /healthz", healthHandler(s, name))
		what := "/healthz"
		if s.Order != nil {
			what = "order API (POST /orders, GET /orders/{id}, GET /orders/notified) and /healthz"
		}
		if s.Tracker != nil {
			what += "; sagas (GET /sagas, GET /sagas/{id}, POST /sagas/{id}/resume|skip|resolve)"
		}
		if s.Order != nil || s.Tracker != nil {
			mux.Handle("/", s.HTTPHandler())
		}
		page, err := s.LivePage(shop.PageConfig{JaegerURL: o.jaegerUI, Logger: cfg.Logger})
		if err != nil {
			return err
		}
		if page != nil {
			mux.Handle("GET /{$}", page)
			mux.Handle("/ui/", page)
			what += "; live page (GET /)"
		}
		srv = &http.Server{Handler: metrics.mount(mux), ReadHeaderTimeout: 5 * time.Second}
		if page != nil {
			srv.RegisterOnShutdown(page.Close) // the page's event streams
		}
		if s.Order != nil {
			srv.RegisterOnShutdown(s.Order.CloseStreams) // GET /orders/notified
		}
		fmt.Fprintf(stdout, "%s%s on http://%s; bus %s\n", prefix, what, ln.Addr(), redact(cfg.BusURL))
		addr = ln.Addr().String()
		go func() { errc <- srv.Serve(ln) }()
	} else {
		fmt.Fprintf(stdout, "%srunning (no HTTP); bus %s\n", prefix, redact(cfg.BusURL))
	}
	if ready != nil {
		ready <- addr
	}
	var failed error
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-s.Failed():
		failed = s.Health(ctx)
	case <-ctx.Done():
	}
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return errors.Join(failed, err)
		}
		<-errc // Serve has returned
	}
	if failed != nil {
		return failed
	}
	line := "stopped"
	if books, err := s.Books(context.Background()); err == nil {
		line += "; " + books.String()
	}
	fmt.Fprintf(stdout, "%s%s\n", prefix, line)
	return nil
}

// healthHandler answers 200 {"status":"ok"} while every service of s runs
// and its database answers, else 503 with the problem.
func healthHandler(s *shop.Stack, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		body := map[string]string{"status": "ok", "service": name}
		status := http.StatusOK
		if err := s.Health(ctx); err != nil {
			body["status"], body["error"] = "unhealthy", err.Error()
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// runHealthcheck is `shop healthcheck URL`: it succeeds when URL answers
// 200 within 3 s (the compose file's container health check, in an image
// without curl).
func runHealthcheck(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: shop healthcheck http://HOST:PORT/healthz")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s: %s", resp.Status, body)
	}
	_, err = stdout.Write(body)
	return err
}
