// Command shop runs the e-commerce checkout: the order, payment, inventory
// and notify services, all in one process or each in its own.
//
//	shop [all] [flags]       all four services in this process on the bundled
//	                         broker (a SQLite file each in -data), the order
//	                         API on -addr; the default command
//	shop order [flags]       one service in its own process, against a shared
//	shop payment [flags]     RabbitMQ (-bus amqp://...) and its own database
//	shop inventory [flags]   (-db: a SQLite path or postgres://...); the order
//	shop notify [flags]      service serves the API on -addr, the others
//	shop saga-tracker [flags] /healthz on -http; the saga tracker, which
//	                         runs with "all" anyway, serves /sagas too
//	shop healthcheck URL     exit 0 when URL answers 200 (container checks)
//
// Every flag can also be set by an environment variable (see `shop CMD -h`).
// Every event a service handles is printed as the saga moves.
//
//	go run ./examples/ecommerce/cmd/shop
//	curl -s localhost:8080/orders -d '{"customer":"ada","items":[{"sku":"apple","quantity":2,"price":150}],"amount":300,"payment_method":"card"}'
//	curl -s localhost:8080/orders/<id>
//
// Traces go where the OTEL_* variables say, logs (with trace_id and
// saga_id) to stderr; see docs/ecommerce.md and docs/tracing.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

func main() {
	// The shop's live heap is small (tens of MB) and it allocates per
	// message: at Go's default GOGC=100 the collector ran for 12-16% of
	// the CPU under load. Four times the live heap between collections
	// halves that for a few hundred MB at most; GOGC in the environment
	// still decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run, name := run, "shop:"
	if len(os.Args) > 1 && os.Args[1] == "load" {
		run = func(ctx context.Context, args []string, stdout io.Writer, _ chan<- string) error {
			return runLoad(ctx, args[1:], stdout)
		}
		name = "shop load:"
	}
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, name, err)
		os.Exit(1)
	}
}

// run runs the command args name ("all" when args start with a flag or are
// empty) until ctx ends; ready, when set, receives the address it serves
// HTTP on ("" for none).
func run(ctx context.Context, args []string, stdout io.Writer, ready chan<- string) error {
	cmd, rest := "all", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, rest = args[0], args[1:]
	}
	switch cmd {
	case "all":
		return runAll(ctx, rest, stdout, ready)
	case shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc, shop.TrackerSvc:
		return runService(ctx, cmd, rest, stdout, ready)
	case "healthcheck":
		return runHealthcheck(ctx, rest, stdout)
	}
	return fmt.Errorf("unknown command %q: want all, order, payment, inventory, notify, saga-tracker or healthcheck", cmd)
}

// runAll runs the four services in this process.
func runAll(ctx context.Context, args []string, stdout io.Writer, ready chan<- string) error {
	fs, o := newFlags("all")
	if err := o.parse(fs, args); err != nil {
		return err
	}
	if err := os.MkdirAll(o.data, 0o755); err != nil {
		return err
	}
	return serve(ctx, "all", o, o.stackConfig(nil), stdout, ready)
}
