// Command twopccrash is a node of the two-phase-commit crash test
// (saga/twopc/crash_integration_test.go), one process per node on a real
// bus:
//
//	twopccrash coordinator -name C -db URL -bus URL -exchange X -participants P1,P2 -n N
//	    begin N transactions (every 5th declined by the last participant), then
//	    serve until killed
//	twopccrash participant -name P -db URL -bus URL -exchange X
//	    hold/commit/release rows of its test_holds table, serve until killed
//
// -pause-at STEP makes the node stop at the first such protocol step: it
// prints "PAUSED STEP GID" and blocks, so that the test kills it with
// SIGKILL exactly there.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
)

// Item is a branch's payload.
type Item struct {
	Amount  int  `json:"amount"`
	Decline bool `json:"decline"`
}

type holds struct{ name string }

func (h holds) Prepare(ctx context.Context, tx *outbox.Tx, gid string, p Item) (twopc.Vote, error) {
	if p.Decline {
		return twopc.No, nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO test_holds (participant, gid, amount, state) VALUES (?, ?, ?, 'held')`, h.name, gid, p.Amount)
	return twopc.Yes, err
}

func (h holds) Commit(ctx context.Context, tx *outbox.Tx, gid string, _ Item) error {
	_, err := tx.Exec(ctx, `UPDATE test_holds SET state = 'committed' WHERE participant = ? AND gid = ?`, h.name, gid)
	return err
}

func (h holds) Abort(ctx context.Context, tx *outbox.Tx, gid string, _ Item) error {
	_, err := tx.Exec(ctx, `DELETE FROM test_holds WHERE participant = ? AND gid = ?`, h.name, gid)
	return err
}

type config struct {
	name, db, bus, exchange, participants, pauseAt string
	n                                              int
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: twopccrash coordinator|participant -name N -db URL -bus URL [-exchange X] [-participants A,B -n N] [-pause-at STEP]")
		os.Exit(2)
	}
	var c config
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	fs.StringVar(&c.name, "name", "", "node name")
	fs.StringVar(&c.db, "db", "", "database URL")
	fs.StringVar(&c.bus, "bus", "", "bus URL")
	fs.StringVar(&c.exchange, "exchange", "", "bus exchange")
	fs.StringVar(&c.participants, "participants", "", "participants, comma-separated (coordinator)")
	fs.IntVar(&c.n, "n", 0, "transactions to begin (coordinator)")
	fs.StringVar(&c.pauseAt, "pause-at", "", "protocol step to stop at: begun, deciding, decided, preparing, voting, voted, applied")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1], c)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "twopccrash:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode string, c config) error {
	if c.name == "" || c.db == "" || c.bus == "" {
		return errors.New("-name, -db and -bus are required")
	}
	db, err := outbox.Open(ctx, c.db)
	if err != nil {
		return err
	}
	defer db.Close()
	tr, err := transport.Open(c.bus)
	if err != nil {
		return err
	}
	defer tr.Close()
	b, err := twopc.NewBus(tr, c.exchange, nil)
	if err != nil {
		return err
	}
	opts := []twopc.Option{
		twopc.WithHook(pauseHook(c.pauseAt)), twopc.WithVoteTimeout(3 * time.Second),
		twopc.WithResendInterval(300 * time.Millisecond), twopc.WithTickInterval(50 * time.Millisecond),
	}
	switch mode {
	case "coordinator":
		return coordinate(ctx, c, db, b, opts)
	case "participant":
		return participate(ctx, c, db, b, opts)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// pauseHook blocks forever at the first step named at.
func pauseHook(at string) twopc.Hook {
	var once sync.Once
	return func(ctx context.Context, s twopc.Step, gid string) error {
		if s.String() != at {
			return nil
		}
		paused := false
		once.Do(func() { paused = true })
		if !paused {
			return nil
		}
		fmt.Printf("PAUSED %s %s\n", s, gid)
		<-ctx.Done()
		return ctx.Err()
	}
}

func coordinate(ctx context.Context, c config, db *outbox.DB, b *twopc.Bus, opts []twopc.Option) error {
	parts := strings.Split(c.participants, ",")
	if err := b.Declare(ctx, append([]string{c.name}, parts...)...); err != nil {
		return err
	}
	coord, err := twopc.NewCoordinator(ctx, c.name, db, b, opts...)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { _ = coord.Run(ctx) })
	wg.Go(func() { _ = b.Serve(ctx, c.name, coord, 2) })
	for i := range c.n {
		gid := fmt.Sprintf("%s-tx-%d", c.name, i)
		var branches []twopc.Branch
		for j, p := range parts {
			br, err := twopc.NewBranch(p, Item{Amount: i, Decline: i%5 == 4 && j == len(parts)-1})
			if err != nil {
				return err
			}
			branches = append(branches, br)
		}
		err := coord.Begin(ctx, gid, branches)
		switch {
		case errors.Is(err, twopc.ErrExists):
			continue // begun before a restart
		case err != nil:
			return err
		}
		fmt.Println("BEGUN", gid)
	}
	fmt.Println("ALL BEGUN")
	<-ctx.Done()
	return ctx.Err()
}

func participate(ctx context.Context, c config, db *outbox.DB, b *twopc.Bus, opts []twopc.Option) error {
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS test_holds
		(participant TEXT, gid TEXT, amount INTEGER, state TEXT, PRIMARY KEY (participant, gid))`); err != nil {
		return err
	}
	p, err := twopc.NewParticipant(ctx, c.name, db, twopc.Resource[Item](holds{c.name}), b, opts...)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { _ = p.Run(ctx) })
	fmt.Println("SERVING")
	return b.Serve(ctx, c.name, p, 2)
}
