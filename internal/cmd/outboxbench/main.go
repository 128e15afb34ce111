// Command outboxbench measures a transactional outbox end to end — a
// business write and its event committed together, then relayed to
// RabbitMQ with publisher confirms — side by side in one run, and prints a
// Markdown table for docs/BENCHMARKS.md:
//
//   - troupe-sqlite: Troupe's outbox (package outbox) on SQLite, a file in a
//     temporary directory, published by outbox.Relay;
//   - troupe-postgres: the same on a fresh PostgreSQL database;
//   - forwarder-postgres: the peer, watermill's Forwarder
//     (components/forwarder) over watermill-sql v3: the writer's *sql.Tx
//     holds a watermill-sql Publisher (wrapped by forwarder.NewPublisher),
//     a watermill-sql Subscriber with the default PostgreSQL schema and
//     offsets adapters feeds the Forwarder, on a fresh PostgreSQL database.
//     Its subscriber polls every 1 s (watermill-sql's default) when it finds
//     nothing; a second forwarder run with a shorter poll (-fwd-poll) shows
//     what tuning buys. Its *sql.DB keeps 32 idle connections, as
//     outbox.Open's does (database/sql's default of 2 would make most of
//     the writers' transactions reconnect).
//
// All of them publish through the same Troupe AMQP publisher
// (transport.Open(amqpURL).NewPublisher, persistent delivery, confirms) to
// an exchange unique to the run ("obench.<nanos>", declared by the
// publisher, deleted at the end) that has no queues: nothing consumes.
//
// Workload. Each transaction inserts one row into orders(id text primary
// key) and adds one event (1 KiB random payload, its own UUID, topic
// "order.placed") in the same transaction.
//
//   - throughput: W writer goroutines (-writers) commit N transactions
//     (-n) as fast as they can;
//   - moderate: one writer commits one transaction every 2 ms
//     (-moderate-every) for -moderate-n transactions.
//
// Measurement. The commit time of an event is time.Now() taken right after
// the commit returned (outbox.DB.InTx or sql.Tx.Commit), kept in memory by
// the event's UUID (the relay and the forwarder run in this process and
// keep the UUID). The publisher handed to the relay / forwarder is wrapped
// in a decorator that, when Publish returns nil (every message confirmed by
// RabbitMQ), takes time.Now() once and records it for each message of the
// call. Commit-to-publish latency of an event is publish time - commit
// time (p50, p99 over the N events; a duplicate publish counts once, at its
// first). events/s is N / (last confirmed publish - first commit). Also
// shown: the writers' own rate (N / (last commit - writers' start)), the
// largest backlog (events committed but not yet published, at any moment)
// and the drain (last publish - last commit). The AMQP connection is opened
// and warmed up (one publish) before the writers start.
//
// Caveats. Each run starts on an idle system: the default forwarder's
// subscriber may be in its 1 s sleep when the writers start, so its
// throughput at small -n depends on that phase (a larger -n dilutes it).
// An exchange without queues makes RabbitMQ confirm at once, which favours
// the forwarder, which publishes one message at a time and waits for each
// confirm; with durable queues bound, confirms wait for the disk (-queue
// binds one, purged after each run).
//
// Rounds. This machine is shared and noisy, so one run settles no ratio:
// -rounds R runs every mode (-modes) on every system R times, interleaved
// (in each round, each mode runs on every system back to back, a fresh
// database each time, the order reversed every other round), prints each
// run as it ends and each round's ratios, then the table of every run, the
// median per system and mode, and the ratios per round with their median.
// Run it with the servers up:
//
//	scripts/with-servers.sh go run ./internal/cmd/outboxbench -n 5000 -rounds 5
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/internal/cpuprofile"
	"github.com/troupehq/troupe/internal/pgdb"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

const (
	payloadSize    = 1024
	eventTopic     = "order.placed"
	forwarderTopic = "troupe_bench_forwarder"
	waitTimeout    = 2 * time.Minute
)

type result struct {
	round       int
	store, mode string
	n           int
	elapsed     time.Duration // first commit -> last confirmed publish (drain mode: relay start -> last publish)
	lastCommit  time.Time
	writing     time.Duration // writers' start -> last commit
	p50, p99    time.Duration
	maxBacklog  int
	drain       time.Duration // last commit -> last publish
	note        string
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// lastCommitToDrainStart is how much of the drain time (last commit ->
// last publish) came before the relay started; it is subtracted.
func (r result) lastCommitToDrainStart(drainStart time.Time) time.Duration {
	return -drainStart.Sub(r.lastCommit)
}
func (r result) commitRate() float64 { return float64(r.n) / r.writing.Seconds() }

// system is one outbox under test: write commits an order and its event;
// stop stops its relay / forwarder and drops its database.
type system struct {
	// start starts the relay / forwarder; open does not.
	start func() error
	write func(ctx context.Context, orderID string, msg *message.Message) error
	stats func() string
	stop  func()
	// settled, when set, waits (at most timeout) until the n events are
	// also marked published in the database.
	settled func(n int, timeout time.Duration)
}

// relayBatch is the Troupe relays' RelayConfig.BatchSize (-relay-batch).
var relayBatch int

// opener sets a system up on a fresh database, publishing through pub.
type opener func(ctx context.Context, pub message.Publisher) (*system, error)

func main() {
	n := flag.Int("n", 5000, "events (transactions) per throughput run")
	writers := flag.Int("writers", 8, "writer goroutines in the throughput runs")
	moderateN := flag.Int("moderate-n", 2000, "events per moderate-load run (0 skips them)")
	every := flag.Duration("moderate-every", 2*time.Millisecond, "interval between the single writer's commits in the moderate-load runs")
	fwdPoll := flag.Duration("fwd-poll", 10*time.Millisecond, "poll interval of the extra tuned forwarder run (0 skips it; the main forwarder run keeps watermill-sql's default, 1 s)")
	only := flag.String("only", "", "comma-separated subset of stores (troupe-sqlite,troupe-postgres,forwarder-postgres,forwarder-postgres-tuned)")
	verbose := flag.Bool("v", false, "log the relay's and the forwarder's warnings and errors to stderr")
	rounds := flag.Int("rounds", 1, "interleaved rounds: each runs every mode on every system (fresh tables); ratios are taken within a round and their median printed")
	modes := flag.String("modes", "throughput,drain,moderate", "comma-separated modes to run")
	bindQueue := flag.Bool("queue", false, "bind a durable queue to the exchange (persistent messages are then written to RabbitMQ's disk before it confirms); purged after each run")
	flag.IntVar(&relayBatch, "relay-batch", 0, "the Troupe relays' RelayConfig.BatchSize (0: its default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (writers, relays, forwarders) to this file")
	flag.Parse()
	stopProfile, err := cpuprofile.Start(*cpuProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer stopProfile()

	amqpURL := os.Getenv(testutil.AMQPURLEnv)
	pgURL := os.Getenv(testutil.PostgresURLEnv)
	if amqpURL == "" {
		fmt.Fprintf(os.Stderr, "%s not set: outboxbench needs RabbitMQ (use scripts/with-servers.sh)\n", testutil.AMQPURLEnv)
		os.Exit(1)
	}
	if pgURL == "" {
		fmt.Fprintf(os.Stderr, "%s not set: PostgreSQL runs skipped (use scripts/with-servers.sh)\n", testutil.PostgresURLEnv)
	}
	logger := slog.New(slog.DiscardHandler)
	var wmLogger watermill.LoggerAdapter = watermill.NopLogger{}
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		wmLogger = watermill.NewStdLogger(false, false)
	}
	tmp, err := os.MkdirTemp("", "outboxbench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(tmp)
	exchange := fmt.Sprintf("obench.%d", time.Now().UnixNano())
	defer deleteExchange(amqpURL, exchange)
	queue := ""
	if *bindQueue {
		queue = exchange + ".q"
		if err := declareQueue(amqpURL, exchange, queue); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer deleteQueue(amqpURL, queue)
	}

	want := func(name string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), name) }
	var systems []namedSystem
	n0 := 0
	if want("troupe-postgres") && pgURL != "" {
		systems = append(systems, namedSystem{"troupe-postgres", func(ctx context.Context, pub message.Publisher) (*system, error) {
			dbURL, drop, err := pgdb.Fresh(ctx, pgURL, "bench")
			if err != nil {
				return nil, err
			}
			return openTroupe(ctx, dbURL, drop, pub, logger)
		}})
	}
	if want("forwarder-postgres-tuned") && pgURL != "" && *fwdPoll > 0 {
		systems = append(systems, namedSystem{"forwarder-postgres-tuned", func(ctx context.Context, pub message.Publisher) (*system, error) {
			return openForwarder(ctx, pgURL, *fwdPoll, pub, wmLogger)
		}})
	}
	if want("troupe-sqlite") {
		systems = append(systems, namedSystem{"troupe-sqlite", func(ctx context.Context, pub message.Publisher) (*system, error) {
			n0++
			return openTroupe(ctx, "sqlite:"+filepath.Join(tmp, fmt.Sprintf("bench%d.db", n0)), nil, pub, logger)
		}})
	}
	if want("forwarder-postgres") && pgURL != "" {
		systems = append(systems, namedSystem{"forwarder-postgres", func(ctx context.Context, pub message.Publisher) (*system, error) {
			return openForwarder(ctx, pgURL, 0, pub, wmLogger)
		}})
	}
	type modeSpec struct {
		name     string
		count, w int
		every    time.Duration
		drain    bool
	}
	var modeSpecs []modeSpec
	for _, m := range strings.Split(*modes, ",") {
		switch m {
		case "throughput":
			modeSpecs = append(modeSpecs, modeSpec{m, *n, *writers, 0, false})
		case "drain":
			modeSpecs = append(modeSpecs, modeSpec{m, *n, *writers, 0, true})
		case "moderate":
			if *moderateN > 0 {
				modeSpecs = append(modeSpecs, modeSpec{m, *moderateN, 1, *every, false})
			}
		default:
			fmt.Fprintf(os.Stderr, "unknown mode %q in -modes: want throughput, drain or moderate\n", m)
			os.Exit(2)
		}
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "-rounds must be at least 1")
		os.Exit(2)
	}

	var results []result
	failed := false
	// Rounds interleave the systems: in each round every mode runs on
	// every system back to back (a fresh database each time), the order
	// reversed every other round, so that a slow moment of this shared
	// machine falls on all of them alike, and the ratio of two systems is
	// taken within a round.
	for rn := 1; rn <= *rounds && !failed; rn++ {
		order := slices.Clone(systems)
		if rn%2 == 0 {
			slices.Reverse(order)
		}
		for _, m := range modeSpecs {
			for _, s := range order {
				if failed {
					break
				}
				fmt.Fprintf(os.Stderr, "round %d/%d %-26s %-10s %d events, %d writer(s) ... ", rn, *rounds, s.name, m.name, m.count, m.w)
				r, err := runCase(amqpURL, exchange, s.open, m.count, m.w, m.every, m.drain)
				if err != nil {
					fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
					failed = true
					break
				}
				if queue != "" {
					if err := purgeQueue(amqpURL, queue); err != nil {
						fmt.Fprintf(os.Stderr, "purge %s: %v\n", queue, err)
					}
				}
				r.round, r.store, r.mode = rn, s.name, m.name
				fmt.Fprintf(os.Stderr, "%.0f events/s (writers %.0f tx/s), p50 %v, p99 %v, max backlog %d, drain %v; %s\n",
					r.rate(), r.commitRate(), round(r.p50), round(r.p99), r.maxBacklog, round(r.drain), r.note)
				results = append(results, r)
			}
		}
		printRoundRatios(os.Stderr, results, rn)
	}
	printTable(os.Stdout, results, *writers, *every, *fwdPoll, queue != "")
	if failed {
		os.Exit(1)
	}
}

// namedSystem is a system under test and how to open it.
type namedSystem struct {
	name string
	open opener
}

// runCase runs one workload on a system opened for it and measures it.
// With drain, every event is committed first and the clock starts when
// the relay / forwarder starts: its own throughput on a backlog.
func runCase(amqpURL, exchange string, open opener, n, writers int, every time.Duration, drain bool) (result, error) {
	ctx := context.Background()
	tr, err := transport.Open(amqpURL)
	if err != nil {
		return result{}, err
	}
	defer tr.Close()
	pub, err := tr.NewPublisher(bus.PublisherConfig{Exchange: exchange})
	if err != nil {
		return result{}, err
	}
	// Connect, open the channel and declare the exchange before the clock.
	if err := pub.Publish("warmup", message.NewMessage(watermill.NewUUID(), []byte("warm-up"))); err != nil {
		return result{}, fmt.Errorf("warm-up publish: %w", err)
	}
	rec := newRecorder(pub, n)
	sys, err := open(ctx, rec)
	if err != nil {
		return result{}, err
	}
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(sys.stop) }
	defer stop()

	payload := make([]byte, payloadSize)
	_, _ = rand.Read(payload)
	if !drain {
		if err := sys.start(); err != nil {
			return result{}, err
		}
	}
	start := time.Now()
	if err := drive(ctx, sys, rec, payload, n, writers, every); err != nil {
		return result{}, err
	}
	var drainStart time.Time
	if drain {
		drainStart = time.Now()
		if err := sys.start(); err != nil {
			return result{}, err
		}
	}
	select {
	case <-rec.done:
	case <-time.After(waitTimeout):
		return result{}, fmt.Errorf("%d of %d events published after %v", rec.publishedCount(), n, waitTimeout)
	}
	r, err := rec.result(start)
	if err != nil {
		return result{}, err
	}
	if drain {
		r.elapsed = r.drain + r.lastCommitToDrainStart(drainStart)
	}
	if sys.settled != nil {
		sys.settled(n, 10*time.Second) // the relay's counters include its last batch
	}
	stop()
	r.note = sys.stats() + r.note
	return r, nil
}

// drive commits n orders with their events: from writers goroutines as
// fast as they go, or (every > 0) from one goroutine, one per tick.
func drive(ctx context.Context, sys *system, rec *recorder, payload []byte, n, writers int, every time.Duration) error {
	commit := func(i int) error {
		msg := message.NewMessage(watermill.NewUUID(), payload)
		if err := sys.write(ctx, fmt.Sprintf("order-%d", i), msg); err != nil {
			return fmt.Errorf("commit %d: %w", i, err)
		}
		rec.committed(msg.UUID, time.Now())
		return nil
	}
	if every > 0 {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range n {
			if err := commit(i); err != nil {
				return err
			}
			<-tick.C
		}
		return nil
	}
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				if err := commit(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// recorder is the publisher handed to the relay / forwarder: it records
// when each message's Publish returned nil, and the writers' commit times.
type recorder struct {
	message.Publisher
	want int

	mu        sync.Mutex
	commits   map[string]time.Time
	published map[string]time.Time
	done      chan struct{}
}

func newRecorder(pub message.Publisher, want int) *recorder {
	return &recorder{
		Publisher: pub, want: want,
		commits:   make(map[string]time.Time, want),
		published: make(map[string]time.Time, want),
		done:      make(chan struct{}),
	}
}

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	if err := r.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		if _, dup := r.published[m.UUID]; !dup {
			r.published[m.UUID] = now
			if len(r.published) == r.want {
				close(r.done)
			}
		}
	}
	return nil
}

// Close leaves the AMQP publisher to its transport.
func (r *recorder) Close() error { return nil }

func (r *recorder) committed(id string, at time.Time) {
	r.mu.Lock()
	r.commits[id] = at
	r.mu.Unlock()
}

func (r *recorder) publishedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.published)
}

func (r *recorder) result(start time.Time) (result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type edge struct {
		at time.Time
		d  int
	}
	lats := make([]time.Duration, 0, len(r.commits))
	edges := make([]edge, 0, 2*len(r.commits))
	var firstCommit, lastCommit, lastPublish time.Time
	early := 0
	for id, c := range r.commits {
		p, ok := r.published[id]
		if !ok {
			return result{}, fmt.Errorf("event %s committed but not published", id)
		}
		l := p.Sub(c)
		if l < 0 {
			early++ // published before its writer saw the commit return
		}
		lats = append(lats, l)
		edges = append(edges, edge{c, 1}, edge{p, -1})
		if firstCommit.IsZero() || c.Before(firstCommit) {
			firstCommit = c
		}
		if c.After(lastCommit) {
			lastCommit = c
		}
		if p.After(lastPublish) {
			lastPublish = p
		}
	}
	if len(lats) != r.want {
		return result{}, fmt.Errorf("%d commits recorded, want %d", len(lats), r.want)
	}
	slices.Sort(lats)
	slices.SortFunc(edges, func(a, b edge) int { return a.at.Compare(b.at) })
	backlog, maxBacklog := 0, 0
	for _, e := range edges {
		backlog += e.d
		maxBacklog = max(maxBacklog, backlog)
	}
	note := ""
	if early > 0 {
		note = fmt.Sprintf("; %d event(s) confirmed before their writer saw its commit return", early)
	}
	return result{
		note:       note,
		n:          r.want,
		elapsed:    lastPublish.Sub(firstCommit),
		writing:    lastCommit.Sub(start),
		p50:        lats[len(lats)/2],
		p99:        lats[len(lats)*99/100],
		maxBacklog: maxBacklog,
		drain:      lastPublish.Sub(lastCommit),
		lastCommit: lastCommit,
	}, nil
}

// openTroupe opens Troupe's outbox at dbURL with a relay (default config)
// publishing through pub; drop (if any) removes the database after.
func openTroupe(ctx context.Context, dbURL string, drop func(), pub message.Publisher, logger *slog.Logger) (*system, error) {
	db, err := outbox.Open(ctx, dbURL)
	if err != nil {
		if drop != nil {
			drop()
		}
		return nil, err
	}
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY)`); err != nil {
		db.Close()
		if drop != nil {
			drop()
		}
		return nil, err
	}
	relay := outbox.NewRelay(db, pub, outbox.RelayConfig{BatchSize: relayBatch}, logger)
	rctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	var started atomic.Bool
	return &system{
		start: func() error {
			started.Store(true)
			go func() {
				defer close(ran)
				_ = relay.Run(rctx)
			}()
			return nil
		},
		write: func(ctx context.Context, orderID string, msg *message.Message) error {
			return db.InTx(ctx, func(tx *outbox.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO orders (id) VALUES (?)`, orderID); err != nil {
					return err
				}
				return tx.Add(ctx, eventTopic, "", msg)
			})
		},
		stats: func() string {
			s := relay.Stats()
			return fmt.Sprintf("relay: %d published in %d claims (%.1f per claim), %d failed",
				s.Published, s.Claims, float64(s.Published)/float64(max(s.Claims, 1)), s.Failed)
		},
		settled: func(n int, timeout time.Duration) {
			for end := time.Now().Add(timeout); relay.Stats().Published < int64(n) && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond)
			}
		},
		stop: func() {
			cancel()
			if started.Load() {
				<-ran
			}
			db.Close()
			if drop != nil {
				drop()
			}
		},
	}, nil
}

// openForwarder sets up watermill's Forwarder on a fresh PostgreSQL
// database: writers publish, inside their *sql.Tx, through a watermill-sql
// Publisher wrapped by forwarder.NewPublisher; a watermill-sql Subscriber
// (default PostgreSQL schema and offsets adapters; poll 0 keeps its default
// poll interval, 1 s) feeds the Forwarder, which publishes through pub.
func openForwarder(ctx context.Context, baseURL string, poll time.Duration, pub message.Publisher, logger watermill.LoggerAdapter) (*system, error) {
	dbURL, drop, err := pgdb.Fresh(ctx, baseURL, "bench")
	if err != nil {
		return nil, err
	}
	sqldb, err := sql.Open("pgx", dbURL)
	if err != nil {
		drop()
		return nil, err
	}
	// The same connection pool as outbox.Open's: database/sql's default
	// (2 idle connections) would reconnect for most of the writers'
	// transactions.
	sqldb.SetMaxIdleConns(32)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	var closers []func()
	fail := func(err error) (*system, error) {
		for _, c := range slices.Backward(closers) {
			c()
		}
		sqldb.Close()
		drop()
		return nil, err
	}
	if _, err := sqldb.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY)`); err != nil {
		return fail(err)
	}
	// The defaults: table "watermill_<topic>" with a JSON payload column
	// (the forwarder's envelope is JSON) and "watermill_offsets_<topic>".
	schema := wsql.DefaultPostgreSQLSchema{}
	offsets := wsql.DefaultPostgreSQLOffsetsAdapter{}
	sub, err := wsql.NewSubscriber(sqldb, wsql.SubscriberConfig{
		SchemaAdapter:    schema,
		OffsetsAdapter:   offsets,
		PollInterval:     poll,
		InitializeSchema: true,
	}, logger)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { _ = sub.Close() })
	// The writers' publishers work inside a transaction, where watermill-sql
	// refuses to create tables: create them now.
	if err := sub.SubscribeInitialize(forwarderTopic); err != nil {
		return fail(fmt.Errorf("initialize watermill-sql schema: %w", err))
	}
	fwd, err := forwarder.NewForwarder(sub, pub, logger, forwarder.Config{ForwarderTopic: forwarderTopic})
	if err != nil {
		return fail(err)
	}
	ran := make(chan struct{})
	var started atomic.Bool
	closers = append(closers, func() {
		_ = fwd.Close()
		if started.Load() {
			<-ran
		}
	})
	return &system{
		start: func() error {
			started.Store(true)
			go func() {
				defer close(ran)
				if err := fwd.Run(context.Background()); err != nil {
					fmt.Fprintf(os.Stderr, "forwarder: %v\n", err)
				}
			}()
			select {
			case <-fwd.Running():
				return nil
			case <-ran:
				return errors.New("forwarder stopped before running")
			case <-time.After(30 * time.Second):
				return errors.New("forwarder not running after 30 s")
			}
		},
		write: func(ctx context.Context, orderID string, msg *message.Message) error {
			tx, err := sqldb.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES ($1)`, orderID); err != nil {
				return errors.Join(err, tx.Rollback())
			}
			sqlPub, err := wsql.NewPublisher(tx, wsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err != nil {
				return errors.Join(err, tx.Rollback())
			}
			if err := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: forwarderTopic}).
				Publish(eventTopic, msg); err != nil {
				return errors.Join(err, tx.Rollback())
			}
			return tx.Commit()
		},
		stats: func() string {
			if poll == 0 {
				return "forwarder: subscriber poll 1 s (default)"
			}
			return fmt.Sprintf("forwarder: subscriber poll %v", poll)
		},
		stop: func() {
			for _, c := range slices.Backward(closers) {
				c()
			}
			sqldb.Close()
			drop()
		},
	}, nil
}

// declareQueue declares the exchange (as the publisher does) and a durable
// queue bound to it for every topic.
func declareQueue(amqpURL, exchange, queue string) error {
	return withChannel(amqpURL, func(ch *amqp091.Channel) error {
		d := bus.Topology{Exchange: exchange}.ExchangeDecl()
		if err := ch.ExchangeDeclare(d.Name, d.Kind, d.Durable, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", exchange, err)
		}
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare queue %s: %w", queue, err)
		}
		if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s: %w", queue, err)
		}
		return nil
	})
}

func purgeQueue(amqpURL, queue string) error {
	return withChannel(amqpURL, func(ch *amqp091.Channel) error {
		_, err := ch.QueuePurge(queue, false)
		return err
	})
}

func deleteQueue(amqpURL, queue string) {
	_ = withChannel(amqpURL, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDelete(queue, false, false, false)
		return err
	})
}

func withChannel(amqpURL string, f func(ch *amqp091.Channel) error) error {
	conn, err := amqp091.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return f(ch)
}

func deleteExchange(amqpURL, name string) {
	conn, err := amqp091.Dial(amqpURL)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_ = ch.ExchangeDelete(name, false, false)
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
