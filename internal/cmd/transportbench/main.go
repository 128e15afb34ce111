// Command transportbench measures publish+consume through watermill's
// interface for Troupe's transports and their peers, side by side in one
// run, and prints a Markdown table for docs/BENCHMARKS.md:
//
//   - inproc: Troupe's in-process transport (bundled broker);
//   - gochannel: watermill's GoChannel;
//   - troupe-amqp: Troupe's AMQP transport on RabbitMQ (pipelined confirms);
//   - watermill-amqp: watermill-amqp's NewDurablePubSubConfig (publisher and
//     subscriber) on RabbitMQ, with confirms on;
//   - raw-amqp091: a plain amqp091-go client publishing with pipelined
//     confirms (a window of outstanding confirms) and consuming with acks;
//     it sends what the transport sends (the same properties and headers)
//     through the same exchange and binding, so that RabbitMQ does the same
//     work for both.
//
// Every message is 1 KiB, carries its publish time, and counts once it is
// consumed and acked; throughput is messages over wall time, latency is
// publish-to-receive. The in-process pair runs once unrecorded first, so
// that neither measured run pays for growing the process's heap, and each
// run starts after a garbage collection. Each row reports the CPU time the
// process spent per message (user + system; the client side only, for
// RabbitMQ). With -rounds N every row runs N times, interleaved with the
// rows it is compared with, and reports its median round by throughput:
// the machine is shared, and interleaving spreads its noise over both
// sides of a comparison. Every second round runs in reverse order; the
// in-process rows run (all rounds) before any RabbitMQ row, and each
// RabbitMQ row starts after a pause that lets RabbitMQ finish deleting the
// previous row's queues. Run it with the servers up:
//
//	scripts/with-servers.sh go run ./internal/cmd/transportbench -n 20000
package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/internal/cpuprofile"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

const bodySize = 1024

type result struct {
	name     string
	variant  string
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
	cpu      time.Duration // user + system time of the process during the run
}

// cpuTime is the process's user + system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r result) cpuPerMsg() float64 { return float64(r.cpu.Microseconds()) / float64(r.n) }

func main() {
	n := flag.Int("n", 20000, "messages per in-process run")
	nAMQP := flag.Int("n-amqp", 10000, "messages per RabbitMQ run")
	pubs := flag.Int("publishers", 16, "concurrent publishing goroutines (one message per Publish call)")
	only := flag.String("only", "", "comma-separated subset of runs (inproc,gochannel,troupe-amqp,watermill-amqp,raw-amqp091)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	match := flag.String("match", "", "run only the rows whose mode contains this text (e.g. \"publish only\")")
	rounds := flag.Int("rounds", 1, "run every row this many times, interleaved; rows report their median round")
	flag.Parse()
	if *n <= 0 || *nAMQP <= 0 || *pubs <= 0 || *rounds <= 0 {
		fmt.Fprintln(os.Stderr, "-n, -n-amqp, -publishers and -rounds must be positive")
		os.Exit(2)
	}
	stopProfile, err := cpuprofile.Start(*cpuProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer stopProfile()
	amqpURL := os.Getenv(testutil.AMQPURLEnv)
	want := func(name string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), name) }

	var results []result
	run := func(name, variant string, count int, f func(int) (result, error)) {
		if !want(name) || !strings.Contains(variant, *match) {
			return
		}
		fmt.Fprintf(os.Stderr, "%-15s %-40s %d messages ... ", name, variant, count)
		runtime.GC()
		cpu0 := cpuTime()
		r, err := f(count)
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
			os.Exit(1)
		}
		r.cpu = cpuTime() - cpu0
		r.name, r.variant = name, variant
		fmt.Fprintf(os.Stderr, "%.0f msg/s, p50 %v, p99 %v, CPU %.1f µs/msg\n", r.rate(), r.p50, r.p99, r.cpuPerMsg())
		results = append(results, r)
	}
	if want("inproc") || want("gochannel") {
		fmt.Fprintln(os.Stderr, "warm-up (not recorded)")
		for _, persistent := range []bool{false, true} {
			if _, err := benchTransport("mem://bench", persistent, *pubs, 1, *n); err != nil {
				fmt.Fprintf(os.Stderr, "warm-up: %v\n", err)
				os.Exit(1)
			}
			if _, err := benchGoChannel(persistent, *pubs, *n); err != nil {
				fmt.Fprintf(os.Stderr, "warm-up: %v\n", err)
				os.Exit(1)
			}
		}
	}
	all := rows(amqpURL, *n, *nAMQP, *pubs)
	inProcess := slices.DeleteFunc(slices.Clone(all), func(r row) bool { return r.rabbit })
	rabbit := slices.DeleteFunc(slices.Clone(all), func(r row) bool { return !r.rabbit })
	for i, section := range [][]row{inProcess, rabbit} {
		for round := range *rounds {
			if *rounds > 1 && len(section) > 0 {
				fmt.Fprintf(os.Stderr, "round %d of %d\n", round+1, *rounds)
			}
			order := slices.Clone(section)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, r := range order {
				if i == 1 {
					// Let RabbitMQ finish the previous run's work (deleting
					// its queues) first, whichever row comes next.
					time.Sleep(rabbitSettle)
				}
				run(r.name, r.variant, r.count, r.f)
			}
		}
	}
	if amqpURL == "" {
		fmt.Fprintf(os.Stderr, "%s not set: RabbitMQ runs skipped (use scripts/with-servers.sh)\n", testutil.AMQPURLEnv)
	}
	printTable(os.Stdout, medians(results), *pubs, *rounds)
}

// rabbitSettle is the pause before each RabbitMQ run.
const rabbitSettle = 2 * time.Second

// row is one measurement of the table.
type row struct {
	name, variant string
	count         int
	rabbit        bool // needs RabbitMQ
	f             func(int) (result, error)
}

// rows lists every measurement in table order. The in-process rows run
// first, all their rounds, before RabbitMQ is used, so that RabbitMQ's
// background work never falls on them; every second round runs its rows
// in reverse order, so that no row always runs first or after the same
// neighbour.
func rows(amqpURL string, n, nAMQP, pubs int) []row {
	var rs []row
	for _, persistent := range []bool{false, true} {
		mode := modeName(persistent)
		rs = append(rs,
			row{"inproc", mode, n, false, func(c int) (result, error) { return benchTransport("mem://bench", persistent, pubs, 1, c) }},
			row{"gochannel", mode, n, false, func(c int) (result, error) { return benchGoChannel(persistent, pubs, c) }},
		)
		if amqpURL == "" {
			continue
		}
		rs = append(rs,
			row{"troupe-amqp", mode, nAMQP, true, func(c int) (result, error) { return benchTransport(amqpURL, persistent, pubs, 1, c) }},
			row{"troupe-amqp", mode + ", batches of 100", nAMQP, true, func(c int) (result, error) { return benchTransport(amqpURL, persistent, 1, 100, c) }},
			row{"watermill-amqp", mode, nAMQP, true, func(c int) (result, error) { return benchWatermillAMQP(amqpURL, persistent, pubs, c) }},
			row{"raw-amqp091", mode + ", 1 publisher", nAMQP, true, func(c int) (result, error) { return benchRaw(amqpURL, persistent, c) }},
			row{"troupe-amqp", mode + ", publish only", nAMQP, true, func(c int) (result, error) { return publishOnlyTransport(amqpURL, persistent, pubs, 1, c) }},
			row{"troupe-amqp", mode + ", publish only, batches of 100", nAMQP, true, func(c int) (result, error) { return publishOnlyTransport(amqpURL, persistent, 1, 100, c) }},
			row{"troupe-amqp", mode + ", publish only, 16 x batches of 64", nAMQP, true, func(c int) (result, error) { return publishOnlyTransport(amqpURL, persistent, 16, 64, c) }},
			row{"raw-amqp091", mode + ", publish only", nAMQP, true, func(c int) (result, error) { return publishOnlyRaw(amqpURL, persistent, c) }},
		)
	}
	return rs
}

// medians keeps, for every row, its median round by throughput, in the
// order the rows first ran.
func medians(rs []result) []result {
	type key struct{ name, variant string }
	var order []key
	byKey := map[key][]result{}
	for _, r := range rs {
		k := key{r.name, r.variant}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	out := make([]result, 0, len(order))
	for _, k := range order {
		runs := byKey[k]
		slices.SortFunc(runs, func(a, b result) int { return cmp.Compare(a.rate(), b.rate()) })
		out = append(out, runs[len(runs)/2])
	}
	return out
}

func modeName(persistent bool) string {
	if persistent {
		return "persistent"
	}
	return "transient"
}

// stamp makes a 1 KiB message carrying the current time.
func stamp() *message.Message {
	body := make([]byte, bodySize)
	binary.LittleEndian.PutUint64(body, uint64(time.Now().UnixNano()))
	return message.NewMessage(watermill.NewUUID(), body)
}

func latencyOf(body []byte) time.Duration {
	return time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(body)))
}

// collector counts consumed messages and their latencies.
type collector struct {
	mu   sync.Mutex
	lats []time.Duration
	want int
	done chan struct{}
}

func newCollector(want int) *collector {
	return &collector{lats: make([]time.Duration, 0, want), want: want, done: make(chan struct{})}
}

// add records one message; true when all arrived.
func (c *collector) add(body []byte) {
	l := latencyOf(body)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lats) == c.want {
		return // a duplicate after the end
	}
	c.lats = append(c.lats, l)
	if len(c.lats) == c.want {
		close(c.done)
	}
}

func (c *collector) wait(timeout time.Duration) error {
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("received %d of %d in %v", len(c.lats), c.want, timeout)
	}
}

func (c *collector) result(n int, elapsed time.Duration) result {
	c.mu.Lock()
	defer c.mu.Unlock()
	slices.Sort(c.lats)
	return result{n: n, elapsed: elapsed, p50: c.lats[len(c.lats)/2], p99: c.lats[len(c.lats)*99/100]}
}

// consume acks every message of ch into c.
func consume(ch <-chan *message.Message, c *collector) {
	for m := range ch {
		c.add(m.Payload)
		m.Ack()
	}
}

// publishAll publishes n stamped messages from pubs goroutines, batch
// messages per Publish call.
func publishAll(pub message.Publisher, topic string, pubs, batch, n int) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range pubs {
		wg.Go(func() {
			for {
				start := next.Add(int64(batch)) - int64(batch)
				if start >= int64(n) {
					return
				}
				msgs := make([]*message.Message, 0, batch)
				for i := start; i < min(start+int64(batch), int64(n)); i++ {
					msgs = append(msgs, stamp())
				}
				if err := pub.Publish(topic, msgs...); err != nil {
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

func benchTransport(url string, persistent bool, pubs, batch, n int) (result, error) {
	tr, err := transport.Open(url)
	if err != nil {
		return result{}, err
	}
	defer tr.Close()
	topic := "bench." + watermill.NewShortUUID()
	pub, err := tr.NewPublisher(bus.PublisherConfig{Transient: !persistent})
	if err != nil {
		return result{}, err
	}
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "bench", Prefetch: 256})
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		return result{}, err
	}
	return measure(n, ch, func() error { return publishAll(pub, topic, pubs, batch, n) })
}

func measure(n int, ch <-chan *message.Message, publish func() error) (result, error) {
	c := newCollector(n)
	go consume(ch, c)
	start := time.Now()
	if err := publish(); err != nil {
		return result{}, err
	}
	if err := c.wait(2 * time.Minute); err != nil {
		return result{}, err
	}
	return c.result(n, time.Since(start)), nil
}

func benchGoChannel(persistent bool, pubs, n int) (result, error) {
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: persistent}, watermill.NopLogger{})
	defer gc.Close()
	topic := "bench"
	ch, err := gc.Subscribe(context.Background(), topic)
	if err != nil {
		return result{}, err
	}
	return measure(n, ch, func() error { return publishAll(gc, topic, pubs, 1, n) })
}

func benchWatermillAMQP(url string, persistent bool, pubs, n int) (result, error) {
	topic := "bench." + watermill.NewShortUUID()
	cfg := wamqp.NewDurablePubSubConfig(url, wamqp.GenerateQueueNameTopicNameWithSuffix("bench"))
	cfg.Publish.ConfirmDelivery = true
	cfg.Marshaler = wamqp.DefaultMarshaler{NotPersistentDeliveryMode: !persistent}
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		return result{}, err
	}
	defer pub.Close()
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		return result{}, err
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		return result{}, err
	}
	return measure(n, ch, func() error { return publishAll(pub, topic, pubs, 1, n) })
}

// benchRaw is the plain amqp091-go baseline: one publisher goroutine with
// up to 1,000 unconfirmed messages in flight, one consumer acking each. It
// sends the same messages as the transport (rawPublishing) through the
// same exchange and binding (declareBench).
func benchRaw(url string, persistent bool, n int) (result, error) {
	topic := "bench.raw." + watermill.NewShortUUID()
	queue, cleanup, err := declareBench(url, topic)
	if err != nil {
		return result{}, err
	}
	defer cleanup()
	conn, err := amqp091.Dial(url)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	pch, err := conn.Channel()
	if err != nil {
		return result{}, err
	}
	cch, err := conn.Channel()
	if err != nil {
		return result{}, err
	}
	if err := pch.Confirm(false); err != nil {
		return result{}, err
	}
	if err := cch.Qos(256, 0, false); err != nil {
		return result{}, err
	}
	deliveries, err := cch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return result{}, err
	}
	c := newCollector(n)
	go func() {
		for d := range deliveries {
			c.add(d.Body)
			_ = d.Ack(false)
		}
	}()
	start := time.Now()
	if err := publishRaw(pch, topic, persistent, n); err != nil {
		return result{}, err
	}
	if err := c.wait(2 * time.Minute); err != nil {
		return result{}, err
	}
	return c.result(n, time.Since(start)), nil
}

// declareBench declares the topology a Troupe subscriber of group "bench"
// declares for topic (its queue, bound to the bus exchange, and the
// queue's dead-letter queue) and returns the queue's name and a function
// that deletes the queues.
func declareBench(url, topic string) (string, func(), error) {
	tr, err := transport.Open(url)
	if err != nil {
		return "", nil, err
	}
	defer tr.Close()
	sub, err := tr.NewSubscriber(bus.SubscriberConfig{Group: "bench"})
	if err != nil {
		return "", nil, err
	}
	if err := sub.(message.SubscribeInitializer).SubscribeInitialize(topic); err != nil {
		return "", nil, err
	}
	queue := bus.WorkQueue("bench", topic)
	return queue, func() { deleteQueue(url, queue, bus.DeadLetterQueue(queue)) }, nil
}

// rawPublishing is what the transport sends for m: the same properties
// and headers (the watermill UUID as message-id and header).
func rawPublishing(m *message.Message, persistent bool) amqp091.Publishing {
	mode := amqp091.Transient
	if persistent {
		mode = amqp091.Persistent
	}
	return amqp091.Publishing{
		Headers:      amqp091.Table(envelope.Headers(m)),
		DeliveryMode: mode,
		MessageId:    m.UUID,
		Body:         m.Payload,
	}
}

// publishRaw publishes n stamped messages to the bus exchange from one
// goroutine, with up to 1,000 unconfirmed messages in flight.
func publishRaw(ch *amqp091.Channel, topic string, persistent bool, n int) error {
	window := make(chan *amqp091.DeferredConfirmation, 1000)
	errs := make(chan error, 1)
	go func() {
		for dc := range window {
			if !dc.Wait() {
				errs <- fmt.Errorf("nack for %d", dc.DeliveryTag)
				for range window {
				}
				return
			}
		}
		errs <- nil
	}()
	for range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), bus.DefaultExchange, topic, false, false,
			rawPublishing(stamp(), persistent))
		if err != nil {
			close(window)
			<-errs
			return err
		}
		window <- dc
	}
	close(window)
	return <-errs
}

// publishOnlyTransport times publishing n messages with confirms into a
// queue nobody consumes (the queue is declared, then deleted).
func publishOnlyTransport(url string, persistent bool, pubs, batch, n int) (result, error) {
	topic := "bench.po." + watermill.NewShortUUID()
	_, cleanup, err := declareBench(url, topic)
	if err != nil {
		return result{}, err
	}
	defer cleanup()
	tr, err := transport.Open(url)
	if err != nil {
		return result{}, err
	}
	defer tr.Close()
	pub, err := tr.NewPublisher(bus.PublisherConfig{Transient: !persistent})
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := publishAll(pub, topic, pubs, batch, n); err != nil {
		return result{}, err
	}
	return result{n: n, elapsed: time.Since(start)}, nil
}

// publishOnlyRaw is the amqp091-go baseline: one goroutine, up to 1,000
// unconfirmed messages in flight, the transport's messages and topology,
// into a queue nobody consumes.
func publishOnlyRaw(url string, persistent bool, n int) (result, error) {
	topic := "bench.raw.po." + watermill.NewShortUUID()
	_, cleanup, err := declareBench(url, topic)
	if err != nil {
		return result{}, err
	}
	defer cleanup()
	conn, err := amqp091.Dial(url)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return result{}, err
	}
	if err := ch.Confirm(false); err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := publishRaw(ch, topic, persistent, n); err != nil {
		return result{}, err
	}
	return result{n: n, elapsed: time.Since(start)}, nil
}

func deleteQueue(url string, names ...string) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		for _, name := range names {
			_, _ = ch.QueueDelete(name, false, false, false)
		}
	}
}

func printTable(w io.Writer, rs []result, pubs, rounds int) {
	fmt.Fprintf(w, "\n1 KiB messages, publish -> consume -> ack, %d publishing goroutines unless noted; one subscription", pubs)
	if rounds > 1 {
		fmt.Fprintf(w, "; median of %d interleaved rounds", rounds)
	}
	fmt.Fprint(w, ".\n\n")
	fmt.Fprintln(w, "| transport | mode | messages | msg/s | p50 | p99 | CPU µs/msg |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		p50, p99 := "-", "-"
		if r.p50 > 0 {
			p50, p99 = r.p50.Round(time.Microsecond).String(), r.p99.Round(time.Microsecond).String()
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %.1f |\n", r.name, r.variant, r.n, r.rate(), p50, p99, r.cpuPerMsg())
	}
	rate := func(name, variant string) float64 {
		for _, r := range rs {
			if r.name == name && r.variant == variant {
				return r.rate()
			}
		}
		return 0
	}
	ratio := func(a, av, b, bv string) {
		if ra, rb := rate(a, av), rate(b, bv); ra > 0 && rb > 0 {
			fmt.Fprintf(w, "\n%s (%s) / %s (%s): %.2fx", a, av, b, bv, ra/rb)
		}
	}
	for _, mode := range []string{"transient", "persistent"} {
		ratio("inproc", mode, "gochannel", mode)
		ratio("troupe-amqp", mode, "watermill-amqp", mode)
		ratio("troupe-amqp", mode, "raw-amqp091", mode+", 1 publisher")
		ratio("troupe-amqp", mode+", batches of 100", "raw-amqp091", mode+", 1 publisher")
		ratio("troupe-amqp", mode+", publish only", "raw-amqp091", mode+", publish only")
		ratio("troupe-amqp", mode+", publish only, batches of 100", "raw-amqp091", mode+", publish only")
		ratio("troupe-amqp", mode+", publish only, 16 x batches of 64", "raw-amqp091", mode+", publish only")
	}
	fmt.Fprintln(w)
}
