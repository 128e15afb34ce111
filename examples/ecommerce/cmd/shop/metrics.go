package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/troupehq/troupe/tracing"
)

// metricsEndpoint serves the process's metrics to Prometheus (see
// docs/metrics.md): on the order API's own server under /metrics, or,
// when an address is given, on a server of its own there.
type metricsEndpoint struct {
	m      *tracing.Metrics
	srv    *http.Server
	served chan struct{}
}

// startMetrics makes the MeterProvider that the services record with
// (given to them in shop.Config, not installed globally, so that stacks in
// one process keep their readings apart), and serves it on addr when addr
// is not empty.
func startMetrics(service, addr string, stdout io.Writer) (*metricsEndpoint, error) {
	m, err := tracing.NewMetrics(service)
	if err != nil {
		return nil, err
	}
	e := &metricsEndpoint{m: m}
	if addr == "" {
		return e, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("-metrics-addr: %w", err), m.Shutdown(context.Background()))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	e.served = make(chan struct{})
	go func() {
		defer close(e.served)
		_ = e.srv.Serve(ln) // ErrServerClosed once Close shuts it down
	}()
	fmt.Fprintf(stdout, "shop: metrics on http://%s/metrics\n", ln.Addr())
	return e, nil
}

// mount adds GET /metrics to api unless the metrics have a server of
// their own.
func (e *metricsEndpoint) mount(api http.Handler) http.Handler {
	if e.srv != nil {
		return api
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", e.m.Handler())
	mux.Handle("/", api)
	return mux
}

// Close stops the server, if any, and the provider.
func (e *metricsEndpoint) Close() error {
	var err error
	if e.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = e.srv.Shutdown(ctx)
		<-e.served
	}
	return errors.Join(err, e.m.Shutdown(context.Background()))
}
