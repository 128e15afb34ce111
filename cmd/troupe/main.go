// Command troupe is Troupe's command line.
//
// Usage:
//
//	troupe demo [-orders N] [-retry-delay D]
//	troupe dlq <list|show|replay> -url URL -queue QUEUE [flags]
//	troupe graph [-format mermaid|dot] [DECLARATION.saga.json]
//	troupe saga check [-saga DECLARATION.saga.json] REGISTRY.json...
//	troupe saga list -db URL [-state STATE]
//	troupe saga show -db URL ID
//	troupe saga resume|skip|resolve -db URL [-bus URL] [-by USER] [-note TEXT] ID
//	troupe 2pc <list|show> -db URL [flags]
//
// demo runs the bundled broker in process through a checkout choreography
// (order -> payment -> inventory -> order -> notify, with a retry through a
// TTL queue, a dead letter and a refund) and prints every event as it
// happens. dlq lists a handler's dead letters grouped by error and by saga,
// shows one, and replays one, a group or all to their work queue. graph
// prints a saga's graph as Mermaid or DOT: the e-commerce checkout's, or
// that of a JSON declaration file (package saga). saga check checks a
// declaration against the registry files that the services wrote; saga
// list and show read the saga tracker's database (where is every order,
// what happened to one), and resume, skip and resolve are the operator's
// actions on a saga parked in state failed.
// 2pc lists and shows the transactions of a two-phase-commit coordinator's
// log (package saga/twopc).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/troupehq/troupe/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "troupe:", err)
		}
		os.Exit(2)
	}
}

const usage = `usage: troupe <command> [flags]

commands:
  demo    run the bundled broker through a checkout choreography, printing each event
  dlq     list, show and replay a handler's dead letters
  graph   print a saga's graph (the checkout's by default) as Mermaid or DOT
  saga    check a saga against the services' registry files; list, show, resume, skip,
          resolve the instances the saga tracker follows
  2pc     list and show a two-phase-commit coordinator's transactions
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "dlq":
		return runDLQ(ctx, args[1:], stdout, stderr)
	case "graph":
		return runGraph(args[1:], stdout, stderr)
	case "saga":
		return runSaga(ctx, args[1:], stdout, stderr)
	case "2pc":
		return runTwoPC(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	orders := fs.Int("orders", 6, "number of orders to place (at least 1)")
	delay := fs.Duration("retry-delay", 500*time.Millisecond, "how long a failed payment waits before its retry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *orders < 1 || *delay <= 0 || fs.NArg() > 0 {
		return fmt.Errorf("demo: -orders must be >= 1, -retry-delay > 0, and no arguments (got %v)", fs.Args())
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(*orders)*100*time.Millisecond)
	defer cancel()
	_, err := demo.Run(ctx, stdout, demo.Options{Orders: *orders, RetryDelay: *delay})
	return err
}
