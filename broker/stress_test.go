package broker

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stDeadline bounds each stress test; when it passes, the test dumps every
// goroutine's stack (a deadlock shows there) and fails.
const stDeadline = 90 * time.Second

// stDump fails t with the stacks of all goroutines.
func stDump(t *testing.T, what string) {
	t.Helper()
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	t.Fatalf("%s: timed out after %v; goroutines:\n%s", what, stDeadline, buf.String())
}

// stClose closes b unless the test timed out: a deadlocked broker would
// hang its Close too.
func stClose(ctx context.Context, b *Broker) {
	if ctx.Err() == nil {
		b.Close()
	}
}

// stWait waits for wg or the deadline of ctx.
func stWait(t *testing.T, ctx context.Context, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		stDump(t, what)
	}
}

// stCheckQueues checks the counters of every queue of the default vhost:
// each message enqueued is ready, unacked or removed for a reason. With
// settled, nothing may be unacked any more.
func stCheckQueues(t *testing.T, b *Broker, settled bool) {
	t.Helper()
	vh := b.vhosts[DefaultVHost]
	vh.mu.RLock()
	queues := make([]*queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		queues = append(queues, q)
	}
	vh.mu.RUnlock()
	for _, q := range queues {
		q.mu.Lock()
		var removed uint64
		for _, n := range q.removed {
			removed += n
		}
		ready, unacked, enq := q.ready.Len(), q.unacked, q.enqueued
		q.mu.Unlock()
		if unacked < 0 || enq != uint64(ready)+uint64(unacked)+removed {
			t.Errorf("queue %s: enqueued %d != ready %d + unacked %d + removed %d", q.name, enq, ready, unacked, removed)
		}
		if settled && unacked != 0 {
			t.Errorf("queue %s: %d unacked after every channel closed", q.name, unacked)
		}
	}
}

func TestConcurrentPublishConsume(t *testing.T) {
	const (
		publishers = 8
		perPub     = 2500 // 20k messages
		nackPct    = 5
	)
	ctx, cancel := context.WithTimeout(context.Background(), stDeadline)
	defer cancel()
	b := New()
	defer stClose(ctx, b)
	setupConn, err := b.Connect(DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	setup, err := setupConn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		name string
		kind ExchangeKind
	}{{"st.fanout", Fanout}, {"st.direct", Direct}} {
		if err := setup.ExchangeDeclare(x.name, x.kind, ExchangeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, bd := range []struct{ q, x, key string }{{"f1", "st.fanout", ""}, {"f2", "st.fanout", ""}, {"d", "st.direct", "d"}} {
		if _, err := setup.QueueDeclare(bd.q, QueueOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := setup.QueueBind(bd.q, bd.x, bd.key, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Even ids go through the fanout exchange to f1 and f2, odd ones
	// through the direct exchange to d.
	want := map[string]int{"f1": publishers * perPub / 2, "f2": publishers * perPub / 2, "d": publishers * perPub / 2}
	total := int64(want["f1"] + want["f2"] + want["d"])

	// Consumers: two channels, four consumers, two of them competing on d.
	consConn, err := b.Connect(DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	chA, err := consConn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	chB, err := consConn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, qos := range []struct {
		ch   *Channel
		opts QosOptions
	}{
		{chA, QosOptions{PrefetchCount: 16}},
		{chB, QosOptions{PrefetchCount: 20, Global: true}},
		{chB, QosOptions{PrefetchCount: 10}},
	} {
		if err := qos.ch.Qos(qos.opts); err != nil {
			t.Fatal(err)
		}
	}
	type consumerSpec struct {
		ch *Channel
		q  string
	}
	specs := []consumerSpec{{chA, "f1"}, {chA, "d"}, {chB, "f2"}, {chB, "d"}}

	var (
		mu        sync.Mutex
		acked     = map[string]map[int]int{"f1": {}, "f2": {}, "d": {}}
		delivered = map[string]map[int]bool{"f1": {}, "f2": {}, "d": {}}
		ackedN    atomic.Int64
		nacked    atomic.Int64
		allDone   = make(chan struct{})
	)
	consCtx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	var consumers sync.WaitGroup
	for i, s := range specs {
		c, err := s.ch.Consume(s.q, ConsumeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			for {
				d, err := c.Receive(consCtx)
				if err != nil {
					if consCtx.Err() == nil {
						t.Errorf("consumer %d: %v", i, err)
					}
					return
				}
				id, err := strconv.Atoi(string(d.Body))
				if err != nil {
					t.Errorf("consumer %d: body %q", i, d.Body)
					return
				}
				mu.Lock()
				switch {
				case acked[s.q][id] > 0:
					t.Errorf("queue %s: message %d delivered after its ack", s.q, id)
				case delivered[s.q][id] && !d.Redelivered:
					t.Errorf("queue %s: message %d delivered again, not marked redelivered", s.q, id)
				case !delivered[s.q][id] && d.Redelivered:
					t.Errorf("queue %s: first delivery of message %d marked redelivered", s.q, id)
				}
				delivered[s.q][id] = true
				mu.Unlock()
				if rng.IntN(100) < nackPct {
					if err := s.ch.Nack(d.DeliveryTag, Requeue); err != nil {
						t.Errorf("consumer %d: nack: %v", i, err)
						return
					}
					nacked.Add(1)
					continue
				}
				if err := s.ch.Ack(d.DeliveryTag, 0); err != nil {
					t.Errorf("consumer %d: ack: %v", i, err)
					return
				}
				mu.Lock()
				acked[s.q][id]++
				mu.Unlock()
				if ackedN.Add(1) == total {
					close(allDone)
				}
			}
		}()
	}

	var pubs sync.WaitGroup
	pubConn, err := b.Connect(DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	var nacks atomic.Int64
	for p := range publishers {
		ch, err := pubConn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(func(c Confirmation) {
			if !c.Ack {
				nacks.Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := p * perPub; i < (p+1)*perPub; i++ {
				x, key := "st.fanout", ""
				if i%2 == 1 {
					x, key = "st.direct", "d"
				}
				if _, err := ch.Publish(x, key, Publishing{Body: strconv.AppendInt(nil, int64(i), 10)}, PublishOptions{Mandatory: true}); err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
			}
		}()
	}
	stWait(t, ctx, &pubs, "publishers")
	select {
	case <-allDone:
	case <-ctx.Done():
		mu.Lock()
		t.Logf("acked %d of %d", ackedN.Load(), total)
		mu.Unlock()
		stDump(t, "consumers")
	}
	stopConsumers()
	stWait(t, ctx, &consumers, "consumers exiting")
	if n := nacks.Load(); n != 0 {
		t.Errorf("%d publisher nacks", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for q, n := range want {
		if len(acked[q]) != n {
			t.Errorf("queue %s: %d messages acked, want %d", q, len(acked[q]), n)
		}
		for id, k := range acked[q] {
			if k != 1 || (id%2 == 1) != (q == "d") {
				t.Errorf("queue %s: message %d acked %d times", q, id, k)
			}
		}
	}
	vh := b.vhosts[DefaultVHost]
	for q, n := range want {
		qq := vh.queues[q]
		qq.mu.Lock()
		got, ready, unacked := qq.removed[removedAcked], qq.ready.Len(), qq.unacked
		qq.mu.Unlock()
		if got != uint64(n) || ready != 0 || unacked != 0 {
			t.Errorf("queue %s: acked %d, ready %d, unacked %d; want %d, 0, 0", q, got, ready, unacked, n)
		}
	}
	t.Logf("%d acks, %d nack-requeues", ackedN.Load(), nacked.Load())
}

// stWorker is one goroutine's connection and channel; it reopens them when
// a protocol error or the closer closed them.
type stWorker struct {
	b     *Broker
	reg   *stRegistry
	rng   *rand.Rand
	conn  *Conn
	ch    *Channel
	cons  []*Consumer
	tags  []uint64
	reops int
}

// stRegistry holds the channels and connections that the closer may close.
type stRegistry struct {
	mu    sync.Mutex
	chans []*Channel
	conns []*Conn
}

func (r *stRegistry) add(ch *Channel, c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chans = append(r.chans, ch)
	if c != nil {
		r.conns = append(r.conns, c)
	}
}

func (w *stWorker) ensure(t *testing.T) bool {
	if w.ch != nil && !w.ch.isClosed.Load() {
		return true
	}
	w.reops++
	w.cons, w.tags = nil, nil
	var newConn *Conn
	if w.conn == nil {
		c, err := w.b.Connect(DefaultVHost)
		if err != nil {
			t.Errorf("connect: %v", err)
			return false
		}
		w.conn, newConn = c, c
	}
	ch, err := w.conn.Channel()
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("channel: %v", err)
			return false
		}
		c, err := w.b.Connect(DefaultVHost)
		if err != nil {
			t.Errorf("connect: %v", err)
			return false
		}
		w.conn, newConn = c, c
		if ch, err = c.Channel(); err != nil {
			t.Errorf("channel: %v", err)
			return false
		}
	}
	w.ch = ch
	w.reg.add(ch, newConn)
	return true
}

// stCheckErr accepts broker protocol errors and closed channels, which
// chaos makes common; anything else fails the test.
func stCheckErr(t *testing.T, what string, err error) {
	if err == nil || errors.Is(err, ErrClosed) || Code(err) != 0 {
		return
	}
	t.Errorf("%s: unexpected error %v", what, err)
}

var (
	stQueues    = []string{"cq0", "cq1", "cq2", "cq3", "cq4"}
	stExchanges = []string{"cx.direct", "cx.fanout", "cx.topic", "cx.headers", "cx.tmp", ""}
	stKeys      = []string{"a", "b", "a.b", "cq0", "cq1", "cq2", "#", "*.b"}
	stQueueArgs = []Table{
		nil,
		{"x-max-length": int32(5)},
		// Dead letters can come back to the queues they died in through
		// the bindings that the topology workers make; cycle detection must
		// stop them (see TestBugDeadLetterCycleAfterRejection). cx.dlx
		// leads to cq.dead.
		{"x-max-length": int32(3), "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "cx.fanout"},
		{"x-dead-letter-exchange": "cx.topic", "x-dead-letter-routing-key": "a.b"},
		{"x-max-length": int32(2), "x-dead-letter-exchange": "cx.dlx"},
		{"x-message-ttl": int32(1)},
	}
)

func TestConcurrentTopologyChurn(t *testing.T) {
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	ctx, cancel := context.WithTimeout(context.Background(), stDeadline)
	defer cancel()
	b := New(WithConsumerWindow(8))
	defer stClose(ctx, b)
	reg := &stRegistry{}
	setupConn, _ := b.Connect(DefaultVHost)
	setup, _ := setupConn.Channel()
	for i, x := range stExchanges[:4] {
		if err := setup.ExchangeDeclare(x, ExchangeKind(i+1), ExchangeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := setup.ExchangeDeclare("cx.dlx", Fanout, ExchangeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := setup.QueueDeclare("cq.dead", QueueOptions{Args: Table{"x-max-length": int32(100)}}); err != nil {
		t.Fatal(err)
	}
	if err := setup.QueueBind("cq.dead", "cx.dlx", "", nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	run := func(seed uint64, fn func(w *stWorker)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &stWorker{b: b, reg: reg, rng: rand.New(rand.NewPCG(seed, 1))}
			for range iterations {
				if ctx.Err() != nil || !w.ensure(t) {
					return
				}
				fn(w)
			}
		}()
	}
	pick := func(w *stWorker, s []string) string { return s[w.rng.IntN(len(s))] }
	for i := range 2 {
		run(uint64(i), func(w *stWorker) {
			q, x := pick(w, stQueues), pick(w, stExchanges[:4])
			switch w.rng.IntN(9) {
			case 0, 1:
				_, err := w.ch.QueueDeclare(q, QueueOptions{Args: stQueueArgs[w.rng.IntN(len(stQueueArgs))]})
				stCheckErr(t, "declare", err)
			case 2:
				_, err := w.ch.QueueDelete(q, QueueDeleteOptions{IfUnused: w.rng.IntN(2) == 0})
				stCheckErr(t, "delete", err)
			case 3, 4:
				stCheckErr(t, "bind", w.ch.QueueBind(q, x, pick(w, stKeys), Table{"x-match": "any", "h": "v"}))
			case 5:
				stCheckErr(t, "unbind", w.ch.QueueUnbind(q, x, pick(w, stKeys), Table{"x-match": "any", "h": "v"}))
			case 6:
				stCheckErr(t, "declare exchange", w.ch.ExchangeDeclare("cx.tmp", Fanout, ExchangeOptions{Args: Table{"alternate-exchange": "cx.fanout"}}))
				stCheckErr(t, "bind exchange", w.ch.ExchangeBind("cx.tmp", x, pick(w, stKeys), nil))
				stCheckErr(t, "bind exchange", w.ch.ExchangeBind(x, "cx.tmp", "", nil))
			case 7:
				stCheckErr(t, "delete exchange", w.ch.ExchangeDelete("cx.tmp", ExchangeDeleteOptions{}))
			case 8:
				_, err := w.ch.QueuePurge(q)
				stCheckErr(t, "purge", err)
			}
		})
	}
	for i := range 3 {
		run(10+uint64(i), func(w *stWorker) {
			if w.rng.IntN(50) == 0 {
				stCheckErr(t, "confirm", w.ch.Confirm(func(Confirmation) {}))
			}
			var h Table
			if w.rng.IntN(2) == 0 {
				h = Table{"h": "v"}
			}
			_, err := w.ch.Publish(pick(w, stExchanges), pick(w, stKeys),
				Publishing{Properties: Properties{Headers: h}, Body: []byte("m")}, PublishOptions{Mandatory: w.rng.IntN(2) == 0})
			stCheckErr(t, "publish", err)
		})
	}
	for i := range 3 {
		run(20+uint64(i), func(w *stWorker) {
			switch op := w.rng.IntN(12); {
			case op == 0 && len(w.cons) < 4:
				stCheckErr(t, "qos", w.ch.Qos(QosOptions{PrefetchCount: w.rng.IntN(4), Global: w.rng.IntN(3) == 0}))
				c, err := w.ch.Consume(pick(w, stQueues), ConsumeOptions{NoAck: w.rng.IntN(4) == 0})
				stCheckErr(t, "consume", err)
				if err == nil {
					w.cons = append(w.cons, c)
				}
			case op == 1 && len(w.cons) > 0:
				k := w.rng.IntN(len(w.cons))
				stCheckErr(t, "cancel", w.cons[k].Cancel())
				w.cons = append(w.cons[:k], w.cons[k+1:]...)
			case op < 7 && len(w.cons) > 0:
				rctx, rcancel := context.WithTimeout(ctx, time.Millisecond)
				d, err := w.cons[w.rng.IntN(len(w.cons))].Receive(rctx)
				rcancel()
				if err == nil && d.DeliveryTag != 0 {
					w.tags = append(w.tags, d.DeliveryTag)
				}
			case op == 7:
				d, ok, err := w.ch.Get(pick(w, stQueues), GetOptions{NoAck: w.rng.IntN(2) == 0})
				stCheckErr(t, "get", err)
				if ok && d.DeliveryTag != 0 {
					w.tags = append(w.tags, d.DeliveryTag)
				}
			case len(w.tags) > 0:
				k := w.rng.IntN(len(w.tags))
				tag := w.tags[k]
				var err error
				switch w.rng.IntN(5) {
				case 0:
					err = w.ch.Ack(tag, 0)
				case 1:
					err = w.ch.Ack(tag, Multiple)
					w.tags = w.tags[:0] // some may stay pending; a recover or close settles them
				case 2:
					err = w.ch.Nack(tag, Requeue)
				case 3:
					err = w.ch.Reject(tag, 0)
				case 4:
					err = w.ch.Recover()
					w.tags = w.tags[:0]
				}
				stCheckErr(t, "settle", err)
				if k < len(w.tags) {
					w.tags = append(w.tags[:k], w.tags[k+1:]...)
				}
			}
		})
	}
	run(30, func(w *stWorker) {
		reg.mu.Lock()
		var ch *Channel
		var conn *Conn
		if n := len(reg.chans); n > 0 && w.rng.IntN(8) == 0 {
			ch = reg.chans[w.rng.IntN(n)]
		}
		if n := len(reg.conns); n > 0 && w.rng.IntN(200) == 0 {
			conn = reg.conns[w.rng.IntN(n)]
		}
		reg.mu.Unlock()
		if ch != nil {
			ch.Close()
		}
		if conn != nil {
			conn.Close()
		}
		// Touch the closer's own channel too, so that it is used.
		_, err := w.ch.QueueDeclare(pick(w, stQueues), QueueOptions{Passive: true})
		stCheckErr(t, "passive declare", err)
	})
	stWait(t, ctx, &wg, "churn workers")
	stCheckQueues(t, b, false)
	// Close every connection: all deliveries get settled.
	reg.mu.Lock()
	conns := append([]*Conn(nil), reg.conns...)
	chans := append([]*Channel(nil), reg.chans...)
	reg.mu.Unlock()
	closed := make(chan struct{})
	go func() {
		for _, c := range conns {
			c.Close()
		}
		close(closed)
	}()
	select {
	case <-closed:
	case <-ctx.Done():
		stDump(t, "closing connections")
	}
	stCheckQueues(t, b, true)
	for _, ch := range chans {
		ch.mu.Lock()
		live := ch.pend.live
		ch.mu.Unlock()
		if live != 0 || ch.inflight.Load() != 0 {
			t.Errorf("channel %d: %d pending, inflight %d after close", ch.id, live, ch.inflight.Load())
		}
	}
	t.Logf("%d channels opened", len(chans))
}
