package main

import (
	_ "embed"
	"flag"
	"fmt"
	"io"

	"github.com/troupehq/troupe/saga"
)

// checkoutJSON is the e-commerce checkout's declaration, a copy of
// examples/ecommerce/checkout.saga.json that the example's tests keep
// equal to its Go declaration (shop.CheckoutSaga).
//
//go:embed checkout.saga.json
var checkoutJSON []byte

// runGraph prints a saga's graph: the checkout's, or that of the
// declaration file given.
func runGraph(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("graph", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: troupe graph [-format mermaid|dot] [DECLARATION.saga.json]")
		fmt.Fprintln(stderr, "prints the saga's graph; without a file, the e-commerce checkout's")
		fs.PrintDefaults()
	}
	format := fs.String("format", "mermaid", "output format: mermaid or dot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("graph: at most one declaration file (got %v)", fs.Args())
	}
	var write func(io.Writer, *saga.Saga) error
	switch *format {
	case "mermaid":
		write = saga.WriteMermaid
	case "dot":
		write = saga.WriteDOT
	default:
		return fmt.Errorf("graph: -format %q: want mermaid or dot", *format)
	}
	s, err := loadSaga(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("graph: %w", err)
	}
	return write(stdout, s)
}
