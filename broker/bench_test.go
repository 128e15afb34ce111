package broker_test

// Benchmarks of the broker through its public API only.
//
//	BenchmarkPublishDeliverAck  end to end: publish -> deliver -> manual ack,
//	                            in process, with msgs/s and publish->receive
//	                            latency percentiles
//	BenchmarkTopicRouting       publishing into a topic exchange with 10 to
//	                            100,000 bindings
//	BenchmarkQueuedMemory       heap per message held in a queue with no
//	                            consumer (also: go run ./broker/internal/benchmem)
//
// A suggested run (about 6 minutes on 2 cores):
//
//	go test -run='^$' -bench=. -benchmem -benchtime=1s -timeout=30m -cpu=1,2 ./broker/
//
// and the one-core direct figure with its profile:
//
//	go test -run='^$' -bench='^BenchmarkPublishDeliverAck$/^direct$/^pub1$/^256B$' \
//	    -benchmem -benchtime=3s -cpu=1 -cpuprofile=cpu.out ./broker/
//	go tool pprof -top cpu.out

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/broker"
)

const (
	// benchPrefetch is each consumer's prefetch (per-consumer basic.qos).
	benchPrefetch = 1000
	// benchSafetyCap bounds the messages published but not yet fully acked
	// in the "unthrottled" runs, so that a publisher faster than its
	// consumers cannot grow the backlog (and the heap) without limit, as
	// RabbitMQ's credit flow would throttle it too. 65536 x 4 KiB = 256 MiB.
	benchSafetyCap = 1 << 16
	// benchMaxSamples bounds the latency samples per consumer: the
	// publishers timestamp every stride-th message only.
	benchMaxSamples = 1 << 17
	// benchSeqRing sizes the per-message copy counters of the windowed
	// runs; it must exceed window+publishers by far.
	benchSeqRing = 1 << 12
	// benchStallLimit fails a run that makes no progress for that long.
	benchStallLimit = 2 * time.Minute
)

// benchRouting is one topology of BenchmarkPublishDeliverAck: an exchange,
// the routing key published with, and the consumed queues the key reaches.
type benchRouting struct {
	name   string
	kind   broker.ExchangeKind
	key    string
	queues []string
	// binds are (queue, pattern) pairs; "sink" is a queue with no consumer
	// that the published key must not reach.
	binds [][2]string
}

var benchRoutings = []benchRouting{
	{
		name: "direct", kind: broker.Direct, key: "orders",
		queues: []string{"q0"},
		binds:  [][2]string{{"q0", "orders"}},
	},
	{
		name: "fanout3", kind: broker.Fanout, key: "",
		queues: []string{"q0", "q1", "q2"},
		binds:  [][2]string{{"q0", ""}, {"q1", ""}, {"q2", ""}},
	},
	{
		// A handful of bindings; two of them match the key, both to q0,
		// which gets one copy.
		name: "topic", kind: broker.Topic, key: "orders.eu.placed",
		queues: []string{"q0"},
		binds: [][2]string{
			{"q0", "orders.*.placed"},
			{"q0", "orders.#"},
			{"sink", "orders.*.cancelled"},
			{"sink", "payments.#"},
			{"sink", "*.us.placed"},
			{"sink", "inventory.*"},
			{"sink", "audit.#.eu"},
		},
	},
}

// pdaConfig is one sub-benchmark of BenchmarkPublishDeliverAck.
type pdaConfig struct {
	routing benchRouting
	pubs    int
	body    int
	// window > 0 makes a publisher wait while window messages are
	// published and not yet acked by all their queues.
	window int
}

// BenchmarkPublishDeliverAck measures publish -> deliver -> ack end to end.
// Every publisher has its own channel and goroutine; every consumed queue
// has one consumer with its own channel and goroutine, prefetch 1000, which
// acks each delivery. A message is done when all its copies are acked; one
// op is one message. Timestamps travel in the body's first 8 bytes.
//
// The routing/pubN/size runs do not throttle publishers (beyond a safety
// cap of 65536 messages in flight): their latency mostly measures the
// backlog. The winW runs cap the messages in flight at W, so that their
// p50/p99 measure the broker's hand-off.
func BenchmarkPublishDeliverAck(b *testing.B) {
	for _, r := range benchRoutings {
		b.Run(r.name, func(b *testing.B) {
			for _, pubs := range []int{1, 4} {
				b.Run(fmt.Sprintf("pub%d", pubs), func(b *testing.B) {
					for _, size := range []int{256, 4096} {
						b.Run(sizeName(size), func(b *testing.B) {
							runPublishDeliverAck(b, pdaConfig{routing: r, pubs: pubs, body: size})
						})
					}
				})
			}
		})
	}
	for _, w := range []int{1, 100} {
		b.Run(fmt.Sprintf("win%d", w), func(b *testing.B) {
			for _, r := range benchRoutings {
				b.Run(r.name, func(b *testing.B) {
					for _, pubs := range []int{1, 4} {
						if w == 1 && pubs > 1 {
							continue // a window of 1 serializes the publishers
						}
						b.Run(fmt.Sprintf("pub%d", pubs), func(b *testing.B) {
							b.Run("256B", func(b *testing.B) {
								runPublishDeliverAck(b, pdaConfig{routing: r, pubs: pubs, body: 256, window: w})
							})
						})
					}
				})
			}
		})
	}
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return strconv.Itoa(n/1024) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// paddedCount keeps each consumer's progress counter on its own cache line.
type paddedCount struct {
	atomic.Int64
	_ [56]byte
}

func runPublishDeliverAck(b *testing.B, cfg pdaConfig) {
	b.ReportAllocs()
	n := b.N
	r := cfg.routing
	copies := len(r.queues)

	br := broker.New()
	defer br.Close()
	conn, err := br.Connect(broker.DefaultVHost)
	if err != nil {
		b.Fatal(err)
	}
	setup, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	const xname = "bench.x"
	if err := setup.ExchangeDeclare(xname, r.kind, broker.ExchangeOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, q := range append([]string{"sink"}, r.queues...) {
		if _, err := setup.QueueDeclare(q, broker.QueueOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, bd := range r.binds {
		if err := setup.QueueBind(bd[0], xname, bd[1], nil); err != nil {
			b.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fail := func(format string, args ...any) {
		b.Errorf(format, args...)
		cancel()
	}

	stride := max(1, n/benchMaxSamples)
	var sem chan struct{}
	var seqLeft []atomic.Int32 // windowed runs with copies > 1: copies left per message
	if cfg.window > 0 {
		sem = make(chan struct{}, cfg.window)
		if copies > 1 {
			seqLeft = make([]atomic.Int32, benchSeqRing)
		}
	}

	// Consumers.
	acked := make([]paddedCount, copies)
	lats := make([][]int64, copies)
	var cwg sync.WaitGroup
	for i, qname := range r.queues {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Qos(broker.QosOptions{PrefetchCount: benchPrefetch}); err != nil {
			b.Fatal(err)
		}
		c, err := ch.Consume(qname, broker.ConsumeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		lat := make([]int64, 0, n/stride+cfg.pubs+1)
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			defer func() { lats[i] = lat }()
			for got := 1; got <= n; got++ {
				d, err := c.Receive(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail("receive: %v", err)
					}
					return
				}
				if ts := int64(binary.LittleEndian.Uint64(d.Body)); ts != 0 && len(lat) < cap(lat) {
					lat = append(lat, time.Now().UnixNano()-ts)
				}
				if err := ch.Ack(d.DeliveryTag, 0); err != nil {
					fail("ack: %v", err)
					return
				}
				if got&63 == 0 || got == n {
					acked[i].Store(int64(got))
				}
				switch {
				case sem == nil:
				case seqLeft == nil:
					<-sem
				default:
					seq := binary.LittleEndian.Uint64(d.Body[8:])
					if seqLeft[seq%benchSeqRing].Add(-1) == 0 {
						<-sem
					}
				}
			}
		}()
	}
	minAcked := func() int64 {
		m := acked[0].Load()
		for i := 1; i < len(acked); i++ {
			m = min(m, acked[i].Load())
		}
		return m
	}

	// Publishers, released together once the timer runs.
	start := make(chan struct{})
	var published atomic.Int64
	var gseq atomic.Uint64
	var pwg sync.WaitGroup
	for p := range cfg.pubs {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		count := n / cfg.pubs
		if p < n%cfg.pubs {
			count++
		}
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			<-start
			pending := int64(0)
			for i := range count {
				if sem != nil {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
				body := make([]byte, cfg.body)
				if seqLeft != nil {
					seq := gseq.Add(1)
					seqLeft[seq%benchSeqRing].Store(int32(copies))
					binary.LittleEndian.PutUint64(body[8:], seq)
				}
				if i%stride == 0 {
					binary.LittleEndian.PutUint64(body, uint64(time.Now().UnixNano()))
				}
				if _, err := ch.Publish(xname, r.key, broker.Publishing{Body: body}, broker.PublishOptions{}); err != nil {
					fail("publish: %v", err)
					return
				}
				if pending++; pending == 256 || i == count-1 {
					published.Add(pending)
					pending = 0
					for sem == nil && published.Load()-minAcked() > benchSafetyCap {
						if ctx.Err() != nil {
							return
						}
						time.Sleep(50 * time.Microsecond)
					}
				}
			}
		}()
	}

	// The watchdog reports stalls, so that a lost wakeup in the broker (or
	// a starved machine) shows up in the log rather than as a slow figure,
	// and gives up after benchStallLimit without progress.
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var last int64 = -1
		since, logged := time.Now(), false
		for {
			select {
			case <-watchDone:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				progress := published.Load()
				for i := range acked {
					progress += acked[i].Load()
				}
				if progress != last {
					last, since, logged = progress, now, false
					continue
				}
				stalled := now.Sub(since)
				if stalled >= 2*time.Second && !logged {
					b.Logf("no progress for %v: published %d, acked per queue %v", stalled.Round(time.Millisecond), published.Load(), ackedCounts(acked))
					logged = true
				}
				if stalled >= benchStallLimit {
					fail("stalled for %v: published %d of %d, acked per queue %v", stalled.Round(time.Second), published.Load(), n, ackedCounts(acked))
					return
				}
			}
		}
	}()

	runtime.GC()
	b.ResetTimer()
	t0 := time.Now()
	close(start)
	pwg.Wait()
	cwg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	if b.Failed() {
		return
	}

	var all []int64
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	p50, p99 := percentile(all, 50), percentile(all, 99)
	rate := float64(n) / elapsed.Seconds()
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(rate*float64(copies), "deliveries/s")
	b.ReportMetric(p50, "p50-us")
	b.ReportMetric(p99, "p99-us")
	if elapsed > 200*time.Millisecond {
		b.Logf("n=%d in %v: %.0f msgs/s, latency p50 %.1fµs p99 %.1fµs (%d samples)",
			n, elapsed.Round(time.Millisecond), rate, p50, p99, len(all))
	}
}

func ackedCounts(acked []paddedCount) []int64 {
	out := make([]int64, len(acked))
	for i := range acked {
		out[i] = acked[i].Load()
	}
	return out
}

// percentile returns the p-th percentile of sorted nanosecond samples, in
// microseconds.
func percentile(sorted []int64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)*p/100, len(sorted)-1)
	return float64(sorted[i]) / 1e3
}

// BenchmarkTopicRouting measures one publish into a topic exchange with 10,
// 1,000 and 100,000 bindings, each to its own queue. The bindings belong to
// services svc0, svc1, ... four per service: "svc<s>.*.placed", "svc<s>.#",
// the exact "svc<s>.order.placed" and "*.svc<s>.audit". The published key
// "svc1.order.placed" matches three of them at every size. The queues have
// x-max-length 1000 (drop-head), so that the three matching queues, which
// have no consumer, stay bounded: past the first 1000 ops each enqueue also
// drops a head.
func BenchmarkTopicRouting(b *testing.B) {
	for _, nb := range []int{10, 1_000, 100_000} {
		b.Run(fmt.Sprintf("bindings=%d", nb), func(b *testing.B) {
			br := broker.New()
			defer br.Close()
			conn, err := br.Connect(broker.DefaultVHost)
			if err != nil {
				b.Fatal(err)
			}
			ch, err := conn.Channel()
			if err != nil {
				b.Fatal(err)
			}
			const xname = "bench.topic"
			if err := ch.ExchangeDeclare(xname, broker.Topic, broker.ExchangeOptions{}); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			args := broker.Table{"x-max-length": int64(1000)} // shared, never modified
			for i := range nb {
				q := "tq" + strconv.Itoa(i)
				if _, err := ch.QueueDeclare(q, broker.QueueOptions{Args: args}); err != nil {
					b.Fatal(err)
				}
				if err := ch.QueueBind(q, xname, topicPattern(i), nil); err != nil {
					b.Fatal(err)
				}
			}
			if nb >= 10_000 {
				b.Logf("declared and bound %d queues in %v", nb, time.Since(t0).Round(time.Millisecond))
			}
			const key = "svc1.order.placed"
			body := make([]byte, 256) // never modified: one body serves every publish
			b.ReportAllocs()
			ops := 0
			for b.Loop() {
				if _, err := ch.Publish(xname, key, broker.Publishing{Body: body}, broker.PublishOptions{}); err != nil {
					b.Fatal(err)
				}
				ops++
			}
			b.StopTimer()
			// The three svc1 queues that match got the messages; the fourth
			// ("*.svc1.audit") and svc0's did not.
			want := min(ops, 1000)
			for i, w := range map[int]int{4: want, 5: want, 6: want, 7: 0, 0: 0, 1: 0} {
				info, err := ch.QueueDeclare("tq"+strconv.Itoa(i), broker.QueueOptions{Passive: true})
				if err != nil {
					b.Fatal(err)
				}
				if info.Messages != w {
					b.Fatalf("queue tq%d (%q) holds %d messages, want %d", i, topicPattern(i), info.Messages, w)
				}
			}
		})
	}
}

// topicPattern is binding i of BenchmarkTopicRouting.
func topicPattern(i int) string {
	s := "svc" + strconv.Itoa(i/4)
	switch i % 4 {
	case 0:
		return s + ".*.placed"
	case 1:
		return s + ".#"
	case 2:
		return s + ".order.placed"
	default:
		return "*." + s + ".audit"
	}
}

// BenchmarkQueuedMemory publishes 1,000,000 messages of 256 B to one
// durable queue with no consumer and reports the heap they hold, measured
// after a GC before and after: HeapAlloc (live objects) and HeapInuse
// (spans in use) per message, and in total. Every iteration starts a new
// broker and does the whole measurement; ns/op is the time to publish the
// million messages. The same figure comes out of
// go run ./broker/internal/benchmem.
func BenchmarkQueuedMemory(b *testing.B) {
	const (
		msgs = 1_000_000
		size = 256
	)
	var sumAlloc, sumInuse float64
	for range b.N {
		b.StopTimer()
		br := broker.New()
		conn, err := br.Connect(broker.DefaultVHost)
		if err != nil {
			b.Fatal(err)
		}
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ch.QueueDeclare("mem", broker.QueueOptions{Durable: true}); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		for range msgs {
			body := make([]byte, size)
			if _, err := ch.Publish("", "mem", broker.Publishing{Body: body}, broker.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		info, err := ch.QueueDeclare("mem", broker.QueueOptions{Durable: true, Passive: true})
		if err != nil {
			b.Fatal(err)
		}
		if info.Messages != msgs {
			b.Fatalf("queue holds %d messages, want %d", info.Messages, msgs)
		}
		runtime.KeepAlive(ch)
		sumAlloc += float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
		sumInuse += float64(int64(after.HeapInuse) - int64(before.HeapInuse))
		br.Close()
	}
	alloc, inuse := sumAlloc/float64(b.N), sumInuse/float64(b.N)
	b.ReportMetric(alloc/msgs, "heapalloc-B/msg")
	b.ReportMetric(inuse/msgs, "heapinuse-B/msg")
	b.ReportMetric((alloc/msgs)-size, "overhead-B/msg")
	b.ReportMetric(inuse/(1<<20), "heapinuse-MiB")
	b.Logf("%d x %d B queued: HeapAlloc +%.1f MiB (%.1f B/msg), HeapInuse +%.1f MiB (%.1f B/msg)",
		msgs, size, alloc/(1<<20), alloc/msgs, inuse/(1<<20), inuse/msgs)
}
