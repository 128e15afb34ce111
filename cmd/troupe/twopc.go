package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
)

const twoPCUsage = `usage: troupe 2pc <list|show> -db URL [flags]

  list [-state preparing|committed|aborted] [-unfinished] [-limit N] [-json]
                  the coordinator's transactions, newest first
  show [-json] GID
                  one transaction: its state, decision, reason, trace and branches

URL is the coordinator's database (sqlite:PATH or postgres://...); it
defaults to $TROUPE_DB_URL.
`

func runTwoPC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, twoPCUsage)
		return errors.New("2pc: no subcommand")
	}
	sub := args[0]
	fs := flag.NewFlagSet("2pc "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("db", os.Getenv("TROUPE_DB_URL"), "coordinator database URL")
	asJSON := fs.Bool("json", false, "print JSON")
	var f twopc.ListFilter
	if sub == "list" {
		fs.StringVar(&f.State, "state", "", "only transactions in this state: preparing, committed or aborted")
		fs.BoolVar(&f.Unfinished, "unfinished", false, "only transactions some participant has not acknowledged")
		fs.IntVar(&f.Limit, "limit", 100, "at most this many")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dbURL == "" {
		fmt.Fprint(stderr, twoPCUsage)
		return errors.New("2pc: -db (or $TROUPE_DB_URL) is required")
	}
	open := func() (*outbox.DB, error) { return openExisting(ctx, *dbURL) }
	switch sub {
	case "list":
		if fs.NArg() > 0 {
			return fmt.Errorf("2pc list: unexpected arguments %q", fs.Args())
		}
		db, err := open()
		if err != nil {
			return err
		}
		defer db.Close()
		all, err := twopc.List(ctx, db, f)
		if err != nil {
			return noLog(err)
		}
		if *asJSON {
			return printJSON(stdout, all)
		}
		printTxList(stdout, all)
		return nil
	case "show":
		if fs.NArg() != 1 {
			return fmt.Errorf("2pc show: want one GID, got %q", fs.Args())
		}
		db, err := open()
		if err != nil {
			return err
		}
		defer db.Close()
		s, err := twopc.Show(ctx, db, fs.Arg(0))
		if err != nil {
			return noLog(err)
		}
		if *asJSON {
			return printJSON(stdout, s)
		}
		printTx(stdout, s)
		return nil
	}
	fmt.Fprint(stderr, twoPCUsage)
	return fmt.Errorf("2pc: unknown subcommand %q", sub)
}

// noLog explains the usual cause of a failing query: a database that is
// not a coordinator's.
func noLog(err error) error {
	if errors.Is(err, twopc.ErrUnknown) {
		return err
	}
	return fmt.Errorf("%w (is this a 2PC coordinator's database?)", err)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printTxList(w io.Writer, all []twopc.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GID\tSTATE\tFINISHED\tCREATED\tREASON")
	for _, s := range all {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", s.GID, s.State, !s.Finished.IsZero(), s.Created.UTC().Format(time.RFC3339), orDash(s.Reason))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d transaction(s)\n", len(all))
}

func printTx(w io.Writer, s twopc.Status) {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "gid:         %s\ncoordinator: %s\nstate:       %s\nreason:      %s\n", s.GID, s.Coordinator, s.State, orDash(s.Reason))
	fmt.Fprintf(w, "created:     %s\ndeadline:    %s\ndecided:     %s\nfinished:    %s\ntraceparent: %s\n",
		at(s.Created), at(s.Deadline), at(s.Decided), at(s.Finished), orDash(s.TraceParent))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTICIPANT\tVOTE\tACKED\tPAYLOAD")
	for _, b := range s.Branches {
		vote := "-"
		if b.Vote != 0 {
			vote = b.Vote.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", b.Participant, vote, b.Acked, b.Payload)
	}
	tw.Flush()
}
