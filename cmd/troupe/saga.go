package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/troupehq/troupe/saga"
)

const sagaUsage = `usage:
  troupe saga check [-saga DECLARATION.saga.json] REGISTRY.json...
  troupe saga list -db URL [-state STATE] [-limit N]
  troupe saga show -db URL ID
  troupe saga resume -db URL -bus URL [-by USER] [-note TEXT] ID
  troupe saga skip|resolve -db URL [-by USER] [-note TEXT] ID`

// runSaga dispatches troupe saga's subcommands.
func runSaga(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, sagaUsage)
		return fmt.Errorf("saga: no subcommand given")
	}
	switch args[0] {
	case "check":
		return runSagaCheck(args[1:], stdout, stderr)
	case "list":
		return runSagaList(ctx, args[1:], stdout, stderr)
	case "show":
		return runSagaShow(ctx, args[1:], stdout, stderr)
	case "resume", "skip", "resolve":
		return runSagaAct(ctx, saga.Action(args[0]), args[1:], stdout, stderr)
	}
	fmt.Fprintln(stderr, sagaUsage)
	return fmt.Errorf("saga: unknown subcommand %q", args[0])
}

// runSagaCheck checks a declaration against the registry files that the
// services wrote (saga.WriteRegistry): the start-up check of a deployment
// with one process per service.
func runSagaCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("saga check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: troupe saga check [-saga DECLARATION.saga.json] REGISTRY.json...")
		fmt.Fprintln(stderr, "checks the saga (the e-commerce checkout by default) against the services' registry files")
		fs.PrintDefaults()
	}
	file := fs.String("saga", "", "saga declaration file (JSON); the e-commerce checkout when empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("saga check: give the registry files of the services")
	}
	s, err := loadSaga(*file)
	if err != nil {
		return fmt.Errorf("saga check: %w", err)
	}
	reg, err := saga.ReadRegistryFiles(fs.Args()...)
	if err != nil {
		return fmt.Errorf("saga check: %w", err)
	}
	if err := saga.Check(s, reg); err != nil {
		return fmt.Errorf("saga check:\n%w", err)
	}
	fmt.Fprintf(stdout, "saga %s: %d steps, %d services: the handlers agree with the declaration\n", s.Name, len(s.Steps), len(reg.Services))
	return nil
}

// loadSaga reads a declaration file, or the embedded checkout's when path
// is empty.
func loadSaga(path string) (*saga.Saga, error) {
	if path == "" {
		return saga.ParseJSON(checkoutJSON)
	}
	return saga.ReadFile(path)
}
