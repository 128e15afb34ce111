package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/troupehq/troupe/handlers/dlq"
)

const dlqUsage = `usage: troupe dlq <list|show|replay> -url URL -queue QUEUE [flags]

  list                     dead letters of a queue, grouped by error and by saga
  show -id ID              one dead letter in full
  replay (-id ID | -error TEXT | -saga ID | -all) [-by NAME]
                           send dead letters back to their work queue

QUEUE is a handler's queue (payment.charge) or its dead-letter queue
(payment.charge.dlq). URL defaults to $TROUPE_BUS_URL.
`

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return errors.New("dlq: no subcommand")
	}
	sub := args[0]
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	busURL := fs.String("url", os.Getenv("TROUPE_BUS_URL"), "bus URL (amqp://...)")
	queue := fs.String("queue", "", "handler queue or its dead-letter queue")
	var f dlq.Filter
	fs.StringVar(&f.ID, "id", "", "message id")
	fs.StringVar(&f.Error, "error", "", "replay the letters with exactly this error")
	fs.StringVar(&f.Saga, "saga", "", "replay the letters of this saga")
	fs.BoolVar(&f.All, "all", false, "replay every letter")
	by := fs.String("by", defaultUser(), "who replays, recorded in the letters' headers")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *busURL == "" || *queue == "" || fs.NArg() > 0 {
		fmt.Fprint(stderr, dlqUsage)
		return errors.New("dlq: -url (or $TROUPE_BUS_URL) and -queue are required, and no arguments")
	}
	dead := *queue
	if !strings.HasSuffix(dead, ".dlq") {
		dead += ".dlq"
	}
	conn, err := dlq.Dial(*busURL)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		letters, err := dlq.List(ctx, conn, dead)
		if err != nil {
			return err
		}
		printList(stdout, dead, letters)
		return nil
	case "show":
		if f.ID == "" {
			conn.Close()
			return errors.New("dlq show: -id is required")
		}
		letters, err := dlq.List(ctx, conn, dead)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(letters, func(l dlq.Letter) bool { return l.ID == f.ID })
		if i < 0 {
			return fmt.Errorf("dlq show: no letter %s in %s", f.ID, dead)
		}
		printLetter(stdout, letters[i])
		return nil
	case "replay":
		done, err := dlq.Replay(ctx, conn, dead, f, *by, time.Now())
		for _, l := range done {
			fmt.Fprintf(stdout, "replayed %s to %s\n", l.ID, l.WorkQueue(dead))
		}
		fmt.Fprintf(stdout, "%d replayed\n", len(done))
		return err
	}
	conn.Close()
	fmt.Fprint(stderr, dlqUsage)
	return fmt.Errorf("dlq: unknown subcommand %q", sub)
}

func defaultUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "troupe"
}

func printList(w io.Writer, queue string, letters []dlq.Letter) {
	fmt.Fprintf(w, "%s: %d dead letters\n", queue, len(letters))
	if len(letters) == 0 {
		return
	}
	for _, g := range []struct {
		title string
		key   func(dlq.Letter) string
	}{{"by error", dlq.Letter.Error}, {"by saga", dlq.Letter.Saga}} {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, grp := range dlq.GroupBy(letters, g.key) {
			fmt.Fprintf(w, "  %4d  %s\n", len(grp.Letters), orDash(grp.Key))
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEVENT\tSAGA\tATTEMPTS\tKIND\tLAST FAILURE\tERROR")
	for _, l := range letters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, orDash(l.Event()), orDash(l.Saga()),
			orDash(l.Attempts()), orDash(l.ErrorKind()), orDash(l.LastFailure()), orDash(l.Error()))
	}
	tw.Flush()
}

func printLetter(w io.Writer, l dlq.Letter) {
	fmt.Fprintf(w, "id: %s\n", l.ID)
	keys := make([]string, 0, len(l.Metadata))
	for k := range l.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s: %s\n", k, l.Metadata[k])
	}
	body := l.Body
	var pretty any
	if json.Unmarshal(body, &pretty) == nil {
		body, _ = json.MarshalIndent(pretty, "", "  ")
	}
	fmt.Fprintf(w, "\n%s\n", body)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
