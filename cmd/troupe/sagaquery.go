package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
)

// sagaFlags are the flags every query and action takes.
type sagaFlags struct {
	fs   *flag.FlagSet
	db   *string
	file *string
}

func newSagaFlags(name, usage string, stderr io.Writer) sagaFlags {
	fs := flag.NewFlagSet("saga "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: troupe saga "+usage)
		fs.PrintDefaults()
	}
	return sagaFlags{fs: fs,
		db:   fs.String("db", os.Getenv("TROUPE_SAGA_DB"), "the saga tracker's database: sqlite:PATH or postgres://... ($TROUPE_SAGA_DB)"),
		file: fs.String("saga", "", "saga declaration file (JSON); the e-commerce checkout when empty")}
}

// parse parses flags placed before or after the positional arguments
// ("show ID -db URL" as well as "show -db URL ID").
func (f sagaFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			return nil, err
		}
		if f.fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, f.fs.Arg(0))
		args = f.fs.Args()[1:]
	}
}

// open opens the tracker's store; a SQLite file must exist (a typo must not
// answer "no sagas" from a new empty database).
func (f sagaFlags) open(ctx context.Context) (*saga.Store, func() error, error) {
	url := *f.db
	if url == "" {
		return nil, nil, errors.New("give the tracker's database with -db (or $TROUPE_SAGA_DB)")
	}
	s, err := loadSaga(*f.file)
	if err != nil {
		return nil, nil, err
	}
	db, err := openExisting(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	st, err := saga.OpenStore(ctx, db, s)
	if err != nil {
		return nil, nil, errors.Join(err, db.Close())
	}
	return st, db.Close, nil
}

func runSagaList(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f := newSagaFlags("list", "list -db URL [-state STATE] [-limit N]", stderr)
	state := f.fs.String("state", "", "only instances in this state: "+states())
	limit := f.fs.Int("limit", 100, "at most this many instances, most recently updated first")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("saga list: unexpected argument %q", pos[0])
	}
	st, closeDB, err := f.open(ctx)
	if err != nil {
		return fmt.Errorf("saga list: %w", err)
	}
	defer func() { err = errors.Join(err, closeDB()) }()
	ins, err := st.List(ctx, saga.Query{State: saga.State(*state), Limit: *limit})
	if err != nil {
		return fmt.Errorf("saga list: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SAGA\tID\tSTATE\tSTEP\tUPDATED\tREASON")
	for _, in := range ins {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", in.Saga, in.ID, in.State, orDash(in.Step), in.UpdatedAt.Format(time.RFC3339), in.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d instances\n", len(ins))
	return nil
}

func states() string {
	var s []string
	for _, v := range saga.States {
		s = append(s, string(v))
	}
	return strings.Join(s, ", ")
}

func runSagaShow(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f := newSagaFlags("show", "show -db URL ID", stderr)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("saga show: give one saga id")
	}
	st, closeDB, err := f.open(ctx)
	if err != nil {
		return fmt.Errorf("saga show: %w", err)
	}
	defer func() { err = errors.Join(err, closeDB()) }()
	in, err := st.Get(ctx, "", pos[0])
	if err != nil {
		return fmt.Errorf("saga show: %w", err)
	}
	printInstance(stdout, in)
	return nil
}

// printInstance prints an instance and its history as a timeline.
func printInstance(w io.Writer, in saga.Instance) {
	fmt.Fprintf(w, "saga %s %s: %s", in.Saga, in.ID, in.State)
	if in.Step != "" {
		fmt.Fprintf(w, " at step %s", in.Step)
	}
	if in.Reason != "" {
		fmt.Fprintf(w, ": %s", in.Reason)
	}
	fmt.Fprintf(w, "\nstarted %s, updated %s\n", in.StartedAt.Format(time.RFC3339Nano), in.UpdatedAt.Format(time.RFC3339Nano))
	if in.DeadlineAt != nil {
		fmt.Fprintf(w, "next deadline: %s at %s\n", in.Deadline, in.DeadlineAt.Format(time.RFC3339Nano))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tKIND\tEVENT\tMEANING\tMESSAGE\tCAUSATION")
	for _, e := range in.History {
		m := e.Meaning
		if e.Error != "" {
			m += " — " + e.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Format("2006-01-02T15:04:05.000Z07:00"), e.Kind, orDash(e.Event), m, e.MessageID, orDash(e.CausationID))
	}
	_ = tw.Flush()
}

func runSagaAct(ctx context.Context, a saga.Action, args []string, stdout, stderr io.Writer) (err error) {
	f := newSagaFlags(string(a), string(a)+" -db URL [-bus URL] [-by USER] [-note TEXT] ID", stderr)
	busURL := f.fs.String("bus", os.Getenv("TROUPE_BUS_URL"), "the bus whose dead letters resume replays: amqp://... ($TROUPE_BUS_URL)")
	by := f.fs.String("by", defaultUser(), "who does it, recorded in the saga's history")
	note := f.fs.String("note", "", "why, recorded in the saga's history")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("saga %s: give one saga id", a)
	}
	var rd saga.Redriver
	if a == saga.Resume {
		if *busURL == "" {
			return errors.New("saga resume: give the bus with -bus (its dead letters are replayed)")
		}
		rd = saga.DLQRedriver(func() (dlq.Conn, error) { return dlq.Dial(*busURL) })
	}
	st, closeDB, err := f.open(ctx)
	if err != nil {
		return fmt.Errorf("saga %s: %w", a, err)
	}
	defer func() { err = errors.Join(err, closeDB()) }()
	in, err := st.Act(ctx, "", pos[0], a, *by, *note, time.Now(), rd)
	if err != nil {
		return fmt.Errorf("saga %s: %w", a, err)
	}
	printInstance(stdout, in)
	return nil
}

// openExisting opens a service's database for a command that reads or
// repairs it. A SQLite file must exist already: outbox.Open would create
// an empty database at a mistyped path, and the command would answer from
// it ("no sagas") and leave the file behind.
func openExisting(ctx context.Context, url string) (*outbox.DB, error) {
	path, ok := strings.CutPrefix(url, "sqlite:")
	if !ok && strings.HasSuffix(url, ".db") && !strings.Contains(url, "://") {
		path, ok = url, true
	}
	if ok {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("database: %w", err)
		}
	}
	return outbox.Open(ctx, url)
}
