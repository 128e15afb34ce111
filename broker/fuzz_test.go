package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// This file holds white-box model tests of the broker:
//
//   - FuzzOperations drives one broker with a decoded sequence of AMQP
//     operations and checks, after every one, the broker's internal
//     bookkeeping and, at the end, that no message was lost or duplicated
//     against a reference model of where every message must be.
//   - TestRoutingMatchesModel compares routing with a plain reference model.
//   - TestAckBookkeeping checks prefetch, credit and acknowledgements under
//     random interleavings on one channel.
//   - TestBug... tests pin down bugs found on the way (see each one).

// ---------------------------------------------------------------------------
// Reference routing model, shared by the fuzzer and TestRoutingMatchesModel.

// fzBinding is a binding in the reference model: src routes to queue q or to
// exchange x.
type fzBinding struct {
	src  string
	q    string
	x    string
	key  string
	args Table
}

// id identifies the binding as the broker does (same source, destination,
// key and arguments).
func (b fzBinding) id() string {
	return fmt.Sprintf("%q>%q|%q:%q%s", b.src, b.q, b.x, b.key, b.args.canonical())
}

// fzTopology is the reference model of the exchanges and bindings of a
// vhost, routing as RabbitMQ does (rabbit_exchange:route/2): an exchange's
// alternate exchange takes a message when the exchange's own bindings match
// no destination at all; each exchange is visited once.
type fzTopology struct {
	kinds    map[string]ExchangeKind
	alt      map[string]string
	queues   map[string]bool
	bindings map[string]fzBinding
}

func newFzTopology() *fzTopology {
	return &fzTopology{
		kinds:    map[string]ExchangeKind{},
		alt:      map[string]string{},
		queues:   map[string]bool{},
		bindings: map[string]fzBinding{},
	}
}

func (m *fzTopology) bind(b fzBinding)   { m.bindings[b.id()] = b }
func (m *fzTopology) unbind(b fzBinding) { delete(m.bindings, b.id()) }

// deleteQueue forgets a queue and its bindings.
func (m *fzTopology) deleteQueue(name string) {
	delete(m.queues, name)
	maps.DeleteFunc(m.bindings, func(_ string, b fzBinding) bool { return b.q == name })
}

// route returns the sorted names of the queues a message reaches from
// exchange x.
func (m *fzTopology) route(x, key string, headers Table) []string {
	seen := map[string]bool{}
	out := map[string]bool{}
	var visit func(x string)
	visit = func(x string) {
		if seen[x] {
			return
		}
		seen[x] = true
		if x == "" {
			if m.queues[key] {
				out[key] = true
			}
			return
		}
		kind, ok := m.kinds[x]
		if !ok {
			return
		}
		var qs, xs []string
		for _, b := range m.bindings {
			if b.src != x || !fzMatches(kind, b, key, headers) {
				continue
			}
			if b.q != "" {
				qs = append(qs, b.q)
			} else {
				xs = append(xs, b.x)
			}
		}
		if len(qs)+len(xs) == 0 {
			if a := m.alt[x]; a != "" {
				visit(a)
			}
			return
		}
		for _, q := range qs {
			out[q] = true
		}
		for _, d := range xs {
			visit(d)
		}
	}
	visit(x)
	return slices.Sorted(maps.Keys(out))
}

func fzMatches(kind ExchangeKind, b fzBinding, key string, headers Table) bool {
	switch kind {
	case Direct:
		return b.key == key
	case Fanout:
		return true
	case Topic:
		return fzTopicMatch(fzWords(b.key), fzWords(key))
	case Headers:
		return fzHeadersMatch(b.args, headers)
	}
	return false
}

// fzWords splits a routing key or pattern as RabbitMQ does: "" has no words.
func fzWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// fzTopicMatch is the plain recursive topic matcher: "*" one word, "#" zero
// or more.
func fzTopicMatch(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if fzTopicMatch(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && fzTopicMatch(pattern[1:], key[1:])
	default:
		return len(key) > 0 && key[0] == pattern[0] && fzTopicMatch(pattern[1:], key[1:])
	}
}

// fzHeadersMatch is RabbitMQ's headers matching, written out plainly. The
// tests only use strings and integers as values, so comparing their printed
// forms compares integers by value whatever their width.
func fzHeadersMatch(args, headers Table) bool {
	mode := "all"
	if v, ok := args["x-match"]; ok {
		mode = v.(string)
	}
	withX := strings.HasSuffix(mode, "-with-x")
	all := strings.HasPrefix(mode, "all")
	n, hits := 0, 0
	for k, want := range args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		n++
		got, ok := headers[k]
		if ok && (want == nil || fmt.Sprintf("%T%v", fzNum(want), want) == fmt.Sprintf("%T%v", fzNum(got), got)) {
			hits++
		}
	}
	if all {
		return hits == n
	}
	return hits > 0
}

// fzNum maps integers of any width to one type, so that their printed forms
// compare by value; other values keep their type.
func fzNum(v any) any {
	switch v.(type) {
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64:
		return int64(0)
	}
	return v
}

// ---------------------------------------------------------------------------
// The fuzzed world: its fixed layout.

type fzQueueSpec struct {
	name      string
	args      Table
	maxLen    int // -1: none
	overflow  Overflow
	dlx       bool
	exclusive bool
}

var fzQueueSpecs = []fzQueueSpec{
	{name: "qa", args: Table{"x-dead-letter-exchange": "dlx"}, maxLen: -1, dlx: true},
	{name: "qb", args: Table{"x-max-length": int32(3), "x-dead-letter-exchange": "dlx"}, maxLen: 3, overflow: DropHead, dlx: true},
	{name: "qc", args: Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}, maxLen: 2, overflow: RejectPublish},
	{name: "qd", args: Table{"x-max-length": int64(2), "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "dlx"}, maxLen: 2, overflow: RejectPublishDLX, dlx: true},
	{name: "qe", args: Table{"x-message-ttl": int32(3_600_000)}, maxLen: -1}, // an hour: never expires here
	{name: "dlq", maxLen: -1},
	{name: "qs", args: Table{"x-single-active-consumer": true, "x-dead-letter-exchange": "dlx"}, maxLen: -1, dlx: true},
	// qx is exclusive to the connection that declared it: other
	// connections get 405, and it goes when its connection closes.
	{name: "qx", args: Table{"x-dead-letter-exchange": "dlx"}, maxLen: -1, dlx: true, exclusive: true},
}

var fzExchangeSpecs = []struct {
	name string
	kind ExchangeKind
	alt  string
}{
	{"x.direct", Direct, "x.alt"},
	{"x.alt", Fanout, ""},
	{"x.fanout", Fanout, ""},
	{"x.topic", Topic, ""},
	{"x.headers", Headers, ""},
	{"dlx", Fanout, ""},
}

// fzBindings are the candidate bindings that bind and unbind toggle. The
// first ones are bound at start; e2e ones (exchange to exchange) are not.
var fzBindings = []fzBinding{
	{src: "x.direct", q: "qa", key: "a"},
	{src: "x.direct", q: "qb", key: "b"},
	{src: "x.direct", q: "qc", key: "a"},
	{src: "x.direct", q: "qd", key: "a.b"},
	{src: "x.alt", q: "qe"},
	{src: "x.fanout", q: "qa", key: "k"},
	{src: "x.fanout", q: "qd"},
	{src: "x.fanout", q: "qe", key: "x"},
	{src: "x.topic", q: "qb", key: "a.*"},
	{src: "x.topic", q: "qc", key: "#"},
	{src: "x.topic", q: "qa", key: "*.b"},
	{src: "x.topic", q: "qe", key: "a.#"},
	{src: "x.headers", q: "qa", args: Table{"x-match": "all", "h1": "x"}},
	{src: "x.headers", q: "qb", args: Table{"x-match": "any", "h1": "x", "h2": "y"}},
	{src: "x.headers", q: "qc", args: Table{"h2": nil}},
	{src: "x.headers", q: "qd", args: Table{"x-match": "any"}},
	{src: "x.headers", q: "qe", args: Table{"x-match": "all"}},
	{src: "x.headers", q: "qa", args: Table{"h2": int64(1), "x-ignored": "z"}},
	{src: "dlx", q: "dlq"},
	{src: "x.direct", q: "qs", key: "b"},
	{src: "x.headers", q: "qs", args: Table{"x-match": "any", "h1": "x"}},
	{src: "x.fanout", q: "qx"},
	{src: "x.topic", q: "qx", key: "a.#"},
	// exchange to exchange
	{src: "x.topic", x: "x.fanout", key: "a.#"},
	{src: "x.fanout", x: "x.topic"},
	{src: "x.headers", x: "x.direct", args: Table{"x-match": "any", "h1": "y"}},
	{src: "x.fanout", x: "x.direct"},
	{src: "x.direct", x: "x.topic", key: "a.b"}, // matched, so no alternate, even when x.topic routes nowhere
	{src: "x.direct", x: "x.headers", key: "b"},
}

const fzDLXBinding = 18 // index of dlx -> dlq in fzBindings

var fzPublishExchanges = []string{"", "x.direct", "x.alt", "x.fanout", "x.topic", "x.headers", "dlx", "x.topic"}

var fzKeys = []string{"a", "b", "a.b", "a.b.c", "", "x", "k", "qa", "qb", "qc", "qd", "qe", "dlq", "b.b", "qs", "qx"}

var fzHeaders = []Table{
	nil,
	{"h1": "x"},
	{"h1": "y"},
	{"h2": "y"},
	{"h1": "x", "h2": "y"},
	{"h2": int32(1)},
	{"h1": "y", "h2": int8(1)},
}

// ---------------------------------------------------------------------------
// The model of where messages are.

// fzKey identifies a message in a queue: the published id and, for a dead
// letter, the queue it died in (its x-first-death-queue). No two copies of a
// message in one queue may share a key.
type fzKey struct {
	id     uint32
	origin string
}

type fzState uint8

const (
	fzLive     fzState = iota + 1 // ready, or delivered and not settled
	fzAcked                       // acked, or delivered in no-ack mode
	fzRejected                    // rejected or nacked without requeue
	fzMaxLen                      // dropped or refused by x-max-length
	fzPurged
	fzDeleted // its queue was deleted
)

type fzMsg struct {
	state fzState
	seq   uint64 // order in the queue; dead letters of one batch share one
	seen  bool   // delivered before (the next delivery is redelivered)
	out   bool   // delivered, unsettled, held by the test
}

// fzInst is one incarnation of a queue: a queue deleted and declared again
// is another instance.
type fzInst struct {
	q        *queue
	owner    *Conn // of an exclusive queue
	name     string
	spec     fzQueueSpec
	msgs     map[fzKey]*fzMsg
	seq      uint64
	deleted  bool
	enqueued uint64
	removed  [numRemovals]uint64
}

func (in *fzInst) add(k fzKey, seq uint64) {
	in.enqueued++
	in.msgs[k] = &fzMsg{state: fzLive, seq: seq}
}

// ready returns the keys of the messages that must be in the queue's ready
// storage (valid when every consumer buffer was drained), in queue order.
func (in *fzInst) ready() []fzKey {
	var ks []fzKey
	for k, m := range in.msgs {
		if m.state == fzLive && !m.out {
			ks = append(ks, k)
		}
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := in.msgs[ks[i]], in.msgs[ks[j]]
		if a.seq != b.seq {
			return a.seq < b.seq
		}
		if ks[i].id != ks[j].id {
			return ks[i].id < ks[j].id
		}
		return ks[i].origin < ks[j].origin
	})
	return ks
}

type fzRef struct {
	in *fzInst
	k  fzKey
}

type fzChan struct {
	ch       *Channel
	conn     int // index in world.conns
	out      map[uint64]fzRef
	prefetch int
	global   int
	handled  bool // its closing was handled

	confirms []Confirmation
	returns  []Return
}

type fzConsumer struct {
	c         *Consumer
	fc        *fzChan
	in        *fzInst
	noAck     bool
	exclusive bool
	active    bool
}

type fzWorld struct {
	t      testing.TB
	b      *Broker
	vh     *vhost
	conns  []*Conn
	slots  [3]*fzChan
	chans  []*fzChan // every channel ever opened
	cons   []*fzConsumer
	insts  map[string]*fzInst
	all    []*fzInst // every instance ever
	topo   *fzTopology
	insp   *Channel // inspector channel on its own connection
	nextID uint32
	dls    []fzDL
	opName string
	stats  *fzStats
}

// fzStats counts what the harness exercised, for TestOperationsRandom.
type fzStats struct {
	ops        [fzNumOps]int
	errs       int
	deliveries int
	states     [fzDeleted + 1]int
}

type fzDL struct {
	from *fzInst
	k    fzKey
}

func (w *fzWorld) fatalf(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("op %s: "+format, append([]any{w.opName}, args...)...)
}

func newFzWorld(t testing.TB) *fzWorld {
	b := New(WithConsumerWindow(3))
	w := &fzWorld{t: t, b: b, vh: b.vhosts[DefaultVHost], insts: map[string]*fzInst{}, topo: newFzTopology()}
	t.Cleanup(b.Close)
	for range 2 {
		c, err := b.Connect(DefaultVHost)
		if err != nil {
			t.Fatal(err)
		}
		w.conns = append(w.conns, c)
	}
	ic, err := b.Connect(DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	if w.insp, err = ic.Channel(); err != nil {
		t.Fatal(err)
	}
	for i := range w.slots {
		w.openSlot(i)
	}
	ch := w.slots[0].ch
	for _, x := range fzExchangeSpecs {
		var args Table
		if x.alt != "" {
			args = Table{"alternate-exchange": x.alt}
		}
		if err := ch.ExchangeDeclare(x.name, x.kind, ExchangeOptions{Args: args}); err != nil {
			t.Fatal(err)
		}
		w.topo.kinds[x.name] = x.kind
		w.topo.alt[x.name] = x.alt
	}
	for _, s := range fzQueueSpecs {
		w.declare(ch, s)
	}
	for i, b := range fzBindings {
		if b.x == "" && i != fzDLXBinding {
			w.doBind(ch, b)
		}
	}
	return w
}

func (w *fzWorld) openSlot(i int) {
	conn := i / 2 // slots 0 and 1 share connection 0
	if closed, _ := w.conns[conn].Done(); closed {
		c, err := w.b.Connect(DefaultVHost)
		if err != nil {
			w.t.Fatal(err)
		}
		w.conns[conn] = c
	}
	ch, err := w.conns[conn].Channel()
	if err != nil {
		w.t.Fatal(err)
	}
	fc := &fzChan{ch: ch, conn: conn, out: map[uint64]fzRef{}}
	if err := ch.Confirm(func(c Confirmation) { fc.confirms = append(fc.confirms, c) }); err != nil {
		w.t.Fatal(err)
	}
	ch.NotifyReturn(func(r Return) { fc.returns = append(fc.returns, r) })
	w.slots[i] = fc
	w.chans = append(w.chans, fc)
}

// declare declares a queue of the layout that does not exist, and binds the
// dead-letter queue to its exchange.
func (w *fzWorld) declare(ch *Channel, s fzQueueSpec) {
	if _, err := ch.QueueDeclare(s.name, QueueOptions{Args: s.args, Exclusive: s.exclusive}); err != nil {
		w.fatalf("declare %s: %v", s.name, err)
	}
	w.vh.mu.RLock()
	q := w.vh.queues[s.name]
	w.vh.mu.RUnlock()
	in := &fzInst{q: q, name: s.name, spec: s, msgs: map[fzKey]*fzMsg{}}
	if s.exclusive {
		in.owner = ch.conn
	}
	w.insts[s.name] = in
	w.all = append(w.all, in)
	w.topo.queues[s.name] = true
	if s.name == "dlq" {
		w.doBind(ch, fzBindings[fzDLXBinding])
	}
}

func (w *fzWorld) doBind(ch *Channel, b fzBinding) {
	var err error
	if b.q != "" {
		err = ch.QueueBind(b.q, b.src, b.key, b.args)
	} else {
		err = ch.ExchangeBind(b.x, b.src, b.key, b.args)
	}
	if err != nil {
		w.fatalf("bind %+v: %v", b, err)
	}
	w.topo.bind(b)
}

// fzBody encodes a message id as a body.
func fzBody(id uint32) []byte { return binary.BigEndian.AppendUint32([]byte("msg:"), id) }

func (w *fzWorld) keyOf(m *Message) fzKey {
	if len(m.Body) != 8 || string(m.Body[:4]) != "msg:" {
		w.fatalf("foreign body %q", m.Body)
	}
	k := fzKey{id: binary.BigEndian.Uint32(m.Body[4:])}
	if o, ok := m.Properties().Headers["x-first-death-queue"]; ok {
		k.origin = o.(string)
	}
	return k
}

// deadLetter records that in dead-letters k; the dead letters of an
// operation are routed when it ends, as the broker does.
func (w *fzWorld) deadLetter(in *fzInst, k fzKey) {
	if in.spec.dlx {
		w.dls = append(w.dls, fzDL{from: in, k: k})
	}
}

func (w *fzWorld) flushDLs() {
	if len(w.dls) == 0 {
		return
	}
	batch := map[*fzInst]uint64{} // the dead letters of one batch share a seq
	for _, dl := range w.dls {
		for _, qn := range w.topo.route("dlx", "", nil) {
			if qn == dl.from.name && dl.k.origin == "" {
				w.fatalf("dead-letter cycle in the layout")
			}
			to := w.insts[qn]
			k := fzKey{id: dl.k.id, origin: dl.from.name}
			if dl.k.origin != "" {
				k.origin = dl.k.origin
			}
			if _, dup := to.msgs[k]; dup {
				w.fatalf("model: dead letter %v twice in %s", k, qn)
			}
			if _, ok := batch[to]; !ok {
				to.seq++
				batch[to] = to.seq
			}
			to.add(k, batch[to])
		}
	}
	w.dls = w.dls[:0]
}

// delivered records a delivery made to the test. stale deliveries were
// buffered for a consumer of a channel that closed since: the broker
// requeued them.
func (w *fzWorld) delivered(fc *fzChan, in *fzInst, d Delivery, noAck, stale bool) {
	w.t.Helper()
	k := w.keyOf(d.Message)
	m := in.msgs[k]
	switch {
	case m == nil:
		w.fatalf("delivery of %v, never routed to %s", k, in.name)
	case m.state != fzLive:
		w.fatalf("delivery of %v from %s in state %d", k, in.name, m.state)
	case m.out:
		w.fatalf("delivery of %v from %s while an earlier delivery of it is unsettled", k, in.name)
	case m.seen && !d.Redelivered:
		w.fatalf("second delivery of %v from %s not marked redelivered", k, in.name)
	case !m.seen && d.Redelivered:
		w.fatalf("first delivery of %v from %s marked redelivered", k, in.name)
	}
	m.seen = true
	if w.stats != nil {
		w.stats.deliveries++
	}
	switch {
	case noAck:
		if d.DeliveryTag != 0 {
			w.fatalf("no-ack delivery with tag %d", d.DeliveryTag)
		}
		m.state = fzAcked
		in.removed[removedAcked]++
	case stale:
	default:
		if _, dup := fc.out[d.DeliveryTag]; dup || d.DeliveryTag == 0 {
			w.fatalf("delivery tag %d reused", d.DeliveryTag)
		}
		fc.out[d.DeliveryTag] = fzRef{in: in, k: k}
		m.out = true
	}
}

// drain receives everything buffered for the consumers of fc (all
// channels when fc is nil), until no more comes.
func (w *fzWorld) drain(fc *fzChan) {
	for {
		got := false
		for _, c := range w.cons {
			if fc != nil && c.fc != fc {
				continue
			}
			for {
				d, ok := c.c.TryReceive()
				if !ok {
					break
				}
				got = true
				w.delivered(c.fc, c.in, d, c.noAck, c.fc.handled)
			}
		}
		if !got {
			return
		}
	}
}

// settled applies a settlement of the test's outstanding tags.
func (w *fzWorld) settled(fc *fzChan, tags []uint64, action settleAction) {
	for _, tag := range tags {
		r := fc.out[tag]
		delete(fc.out, tag)
		m := r.in.msgs[r.k]
		m.out = false
		if r.in.deleted {
			continue
		}
		switch action {
		case settleAck:
			m.state = fzAcked
			r.in.removed[removedAcked]++
		case settleReject:
			m.state = fzRejected
			r.in.removed[removedRejected]++
			w.deadLetter(r.in, r.k)
		}
	}
	w.flushDLs()
}

func (fc *fzChan) tags() []uint64 { return slices.Sorted(maps.Keys(fc.out)) }

// handleClosed processes channels closed by the last operation: their
// unsettled deliveries were requeued. It reopens them.
func (w *fzWorld) handleClosed() {
	var closed []int
	for i, fc := range w.slots {
		if !fc.ch.isClosed.Load() {
			continue
		}
		closed = append(closed, i)
		fc.handled = true
		w.settled(fc, fc.tags(), settleRequeue)
		for _, c := range w.cons {
			if c.fc == fc {
				c.active = false
			}
		}
	}
	// Only then drain: when a connection closes, a message requeued by one
	// of its channels may have gone to a consumer of another before that
	// one closed too.
	for _, i := range closed {
		w.drain(w.slots[i]) // stale deliveries, and no-ack ones made before the close
	}
	for _, i := range closed {
		w.openSlot(i)
	}
}

// expect checks that an operation failed exactly when the model says so,
// with the given reply code.
func (w *fzWorld) expect(err error, code ReplyCode) {
	w.t.Helper()
	switch {
	case code == 0 && err != nil:
		w.fatalf("unexpected error %v", err)
	case code != 0 && Code(err) != code:
		w.fatalf("error %v, want code %d", err, code)
	}
}

// locked reports whether in is another connection's exclusive queue for
// fc, which then gets 405 RESOURCE_LOCKED.
func (w *fzWorld) locked(fc *fzChan, qn string) bool {
	in := w.insts[qn]
	return in != nil && in.spec.exclusive && in.owner != fc.ch.conn
}

func (w *fzWorld) activeConsumers(in *fzInst) int {
	n := 0
	for _, c := range w.cons {
		if c.active && c.in == in {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// Operations.

const (
	fzOpPublish = iota
	fzOpConsume
	fzOpCancel
	fzOpReceive
	fzOpAck
	fzOpAckMultiple
	fzOpNackRequeue
	fzOpNackDrop
	fzOpReject
	fzOpGet
	fzOpPurge
	fzOpClose
	fzOpRecover
	fzOpBind
	fzOpUnbind
	fzOpDelete
	fzOpDeclare
	fzOpQos
	fzOpCloseConn
	fzNumOps
)

var fzOpNames = [...]string{"publish", "consume", "cancel", "receive", "ack", "ack-multiple", "nack-requeue",
	"nack-drop", "reject", "get", "purge", "close", "recover", "bind", "unbind", "delete", "declare", "qos", "close-conn"}

const (
	fzMaxOps       = 300
	fzMaxConsumers = 24
)

type fzReader struct {
	b []byte
	i int
}

func (r *fzReader) next() byte {
	if r.i >= len(r.b) {
		return 0
	}
	v := r.b[r.i]
	r.i++
	return v
}

func (r *fzReader) more() bool { return r.i < len(r.b) }

func (w *fzWorld) run(data []byte) {
	r := &fzReader{b: data}
	for n := 0; n < fzMaxOps && r.more(); n++ {
		// Each operation is 5 bytes: the opcode, the channel slot and up to
		// three arguments, so that mutations keep the stream aligned.
		op := int(r.next()) % fzNumOps
		args := &fzReader{b: []byte{r.next(), r.next(), r.next(), r.next()}}
		w.opName = fmt.Sprintf("#%d %s", n, fzOpNames[op])
		before := make([]int64, len(w.slots))
		for i, fc := range w.slots {
			before[i] = fc.ch.inflight.Load()
		}
		w.step(op, args)
		if w.stats != nil {
			w.stats.ops[op]++
			for _, fc := range w.slots {
				if fc.ch.isClosed.Load() {
					w.stats.errs++
				}
			}
		}
		w.handleClosed()
		w.check(before)
	}
	w.opName = "end"
	w.finish()
}

func (w *fzWorld) pickTag(fc *fzChan, b byte) uint64 {
	tags := fc.tags()
	if b >= 0xf0 || len(tags) == 0 {
		return fc.ch.nextTag + uint64(b&3) // unknown (or 0 when b&3 is 0)
	}
	return tags[int(b)%len(tags)]
}

func (w *fzWorld) step(op int, r *fzReader) {
	fc := w.slots[int(r.next())%len(w.slots)]
	ch := fc.ch
	switch op {
	case fzOpPublish:
		w.publish(fc, r.next(), r.next(), r.next())
	case fzOpConsume:
		qn := fzQueueSpecs[int(r.next())%len(fzQueueSpecs)].name
		b := r.next()
		noAck, exclusive := b&1 == 1, b&0x82 == 0x82 // exclusive now and then
		if len(w.cons) >= fzMaxConsumers {
			return
		}
		c, err := ch.Consume(qn, ConsumeOptions{NoAck: noAck, Exclusive: exclusive})
		in, ok := w.insts[qn]
		if !ok {
			w.expect(err, NotFound)
			return
		}
		if w.locked(fc, qn) {
			w.expect(err, ResourceLocked)
			return
		}
		locked := false
		for _, o := range w.cons {
			if o.active && o.in == in && (o.exclusive || exclusive) {
				locked = true
			}
		}
		if locked {
			w.expect(err, AccessRefused)
			return
		}
		w.expect(err, 0)
		if c.prefetch != fc.prefetch {
			w.fatalf("consumer prefetch %d, want %d", c.prefetch, fc.prefetch)
		}
		w.cons = append(w.cons, &fzConsumer{c: c, fc: fc, in: in, noAck: noAck, exclusive: exclusive, active: true})
	case fzOpCancel:
		b := r.next()
		if len(w.cons) == 0 {
			return
		}
		c := w.cons[int(b)%len(w.cons)]
		if !c.active {
			return
		}
		w.expect(c.fc.ch.Cancel(c.c.Tag()), 0)
		c.active = false
	case fzOpReceive:
		b := r.next()
		if len(w.cons) == 0 {
			return
		}
		c := w.cons[int(b)%len(w.cons)]
		for range 1 + int(b>>6) {
			d, ok := c.c.TryReceive()
			if !ok {
				break
			}
			w.delivered(c.fc, c.in, d, c.noAck, c.fc.handled)
		}
	case fzOpAck, fzOpAckMultiple, fzOpNackRequeue, fzOpNackDrop, fzOpReject:
		w.settle(fc, op, r.next(), r.next())
	case fzOpGet:
		w.get(fc, fzQueueSpecs[int(r.next())%len(fzQueueSpecs)].name, r.next()&1 == 1)
	case fzOpPurge:
		qn := fzQueueSpecs[int(r.next())%len(fzQueueSpecs)].name
		w.drain(nil)
		n, err := ch.QueuePurge(qn)
		in, ok := w.insts[qn]
		if !ok {
			w.expect(err, NotFound)
			return
		}
		if w.locked(fc, qn) {
			w.expect(err, ResourceLocked)
			return
		}
		w.expect(err, 0)
		ready := in.ready()
		if n != len(ready) {
			w.fatalf("purge %s: %d messages, want %d", qn, n, len(ready))
		}
		for _, k := range ready {
			in.msgs[k].state = fzPurged
		}
		in.removed[removedPurged] += uint64(n)
	case fzOpClose:
		w.drain(fc)
		w.expect(ch.Close(), 0)
	case fzOpRecover:
		w.drain(fc)
		w.expect(ch.Recover(), 0)
		w.settled(fc, fc.tags(), settleRequeue)
	case fzOpBind, fzOpUnbind:
		b := fzBindings[int(r.next())%len(fzBindings)]
		var err error
		switch {
		case b.q != "" && op == fzOpBind:
			err = ch.QueueBind(b.q, b.src, b.key, b.args)
		case b.q != "":
			err = ch.QueueUnbind(b.q, b.src, b.key, b.args)
		case op == fzOpBind:
			err = ch.ExchangeBind(b.x, b.src, b.key, b.args)
		default:
			err = ch.ExchangeUnbind(b.x, b.src, b.key, b.args)
		}
		if b.q != "" && w.insts[b.q] == nil {
			w.expect(err, NotFound)
			return
		}
		if b.q != "" && w.locked(fc, b.q) {
			w.expect(err, ResourceLocked)
			return
		}
		w.expect(err, 0)
		if op == fzOpBind {
			w.topo.bind(b)
		} else {
			w.topo.unbind(b)
		}
	case fzOpDelete:
		b := r.next()
		w.deleteQueue(fc, fzQueueSpecs[int(b)%len(fzQueueSpecs)].name, QueueDeleteOptions{IfUnused: b&0x40 != 0, IfEmpty: b&0x80 != 0})
	case fzOpDeclare:
		b := r.next()
		s := fzQueueSpecs[int(b)%len(fzQueueSpecs)]
		if _, ok := w.insts[s.name]; !ok {
			w.declare(ch, s)
			return
		}
		args := s.args
		if b&0x80 != 0 {
			args = Table{"x-max-length": int32(7)} // inequivalent with every spec
		}
		_, err := ch.QueueDeclare(s.name, QueueOptions{Args: args, Exclusive: s.exclusive})
		if w.locked(fc, s.name) {
			w.expect(err, ResourceLocked)
		} else if b&0x80 != 0 {
			w.expect(err, PreconditionFailed)
		} else {
			w.expect(err, 0)
		}
	case fzOpQos:
		b := r.next()
		n, global := int(b&3), b&4 != 0
		w.expect(ch.Qos(QosOptions{PrefetchCount: n, Global: global}), 0)
		if global {
			fc.global = n
		} else {
			fc.prefetch = n
		}
	case fzOpCloseConn:
		// Its channels close (unacked requeued), then its exclusive
		// queues go.
		w.drain(nil)
		conn := fc.ch.conn
		w.expect(conn.Close(), 0)
		w.handleClosed()
		for _, in := range w.insts {
			if in.spec.exclusive && in.owner == conn {
				w.forget(in)
			}
		}
	}
}

func (w *fzWorld) publish(fc *fzChan, bx, bk, bh byte) {
	x := fzPublishExchanges[int(bx)%len(fzPublishExchanges)]
	if bx == 0xff {
		x = "no-such-exchange"
	}
	key := fzKeys[int(bk)%len(fzKeys)]
	h := fzHeaders[int(bh)%len(fzHeaders)]
	mandatory := bh&0x80 != 0
	id := w.nextID
	w.nextID++
	routes := w.topo.route(x, key, h)
	for _, qn := range routes {
		if w.insts[qn].spec.maxLen >= 0 {
			w.drain(nil) // to know which messages are ready
			break
		}
	}
	nc, nr := len(fc.confirms), len(fc.returns)
	_, err := fc.ch.Publish(x, key, Publishing{Properties: Properties{Headers: maps.Clone(h)}, Body: fzBody(id)}, PublishOptions{Mandatory: mandatory})
	if x == "no-such-exchange" {
		w.expect(err, NotFound)
		return
	}
	w.expect(err, 0)
	refused := false
	k := fzKey{id: id}
	for _, qn := range routes {
		in := w.insts[qn]
		s := in.spec
		ready := in.ready()
		if s.maxLen >= 0 && s.overflow != DropHead && len(ready) >= s.maxLen {
			refused = true
			if s.overflow == RejectPublishDLX {
				in.enqueued++
				in.removed[removedMaxLen]++
				in.msgs[k] = &fzMsg{state: fzMaxLen}
				w.deadLetter(in, k)
			}
			continue
		}
		in.seq++
		in.add(k, in.seq)
		if s.maxLen >= 0 && s.overflow == DropHead {
			for i := 0; len(ready)+1-i > s.maxLen; i++ {
				m := in.msgs[ready[i]]
				m.state = fzMaxLen
				in.removed[removedMaxLen]++
				w.deadLetter(in, ready[i])
			}
		}
	}
	w.flushDLs()
	if len(fc.confirms) != nc+1 || fc.confirms[nc].Ack == refused {
		w.fatalf("publish to %q %q: confirms %v, want one with ack %t", x, key, fc.confirms[nc:], !refused)
	}
	if wantRet := mandatory && len(routes) == 0; (len(fc.returns) == nr+1) != wantRet || len(fc.returns) > nr+1 {
		w.fatalf("publish to %q %q routed to %v: %d returns", x, key, routes, len(fc.returns)-nr)
	}
}

func (w *fzWorld) settle(fc *fzChan, op int, bt, bf byte) {
	w.drain(fc)
	if len(fc.out) == 0 && bt < 0xf0 {
		return // nothing to settle; unknown tags come from bt >= 0xf0
	}
	tag := w.pickTag(fc, bt)
	multiple := op == fzOpAckMultiple || (op != fzOpAck && op != fzOpReject && bf&1 == 1)
	var tags []uint64
	for _, t := range fc.tags() {
		if (multiple && (tag == 0 || t <= tag)) || t == tag {
			tags = append(tags, t)
		}
	}
	var err error
	action := settleAck
	switch op {
	case fzOpAck:
		err = fc.ch.Ack(tag, 0)
	case fzOpAckMultiple:
		err = fc.ch.Ack(tag, Multiple)
	case fzOpNackRequeue:
		action = settleRequeue
		err = fc.ch.Nack(tag, Requeue|AckFlags(bf&1))
	case fzOpNackDrop:
		action = settleReject
		err = fc.ch.Nack(tag, AckFlags(bf&1))
	case fzOpReject:
		action = settleReject
		if bf&2 != 0 {
			action = settleRequeue
		}
		err = fc.ch.Reject(tag, AckFlags(bf&2)|Multiple) // Multiple is ignored by Reject
	}
	if len(tags) == 0 && (tag != 0 || !multiple) {
		w.expect(err, PreconditionFailed)
		return
	}
	w.expect(err, 0)
	w.settled(fc, tags, action)
}

func (w *fzWorld) get(fc *fzChan, qn string, noAck bool) {
	w.drain(nil)
	d, ok, err := fc.ch.Get(qn, GetOptions{NoAck: noAck})
	in, exists := w.insts[qn]
	if !exists {
		w.expect(err, NotFound)
		return
	}
	if w.locked(fc, qn) {
		w.expect(err, ResourceLocked)
		return
	}
	w.expect(err, 0)
	ready := in.ready()
	if !ok {
		if len(ready) != 0 {
			w.fatalf("get %s: empty, want %d ready (%v)", qn, len(ready), ready)
		}
		return
	}
	if len(ready) == 0 {
		w.fatalf("get %s: got a message, want none", qn)
	}
	k := w.keyOf(d.Message)
	// The head, or one of the dead letters that arrived with it (their
	// relative order is the broker's routing order).
	if m := in.msgs[k]; m == nil || m.seq != in.msgs[ready[0]].seq {
		w.fatalf("get %s: got %v, want the head %v", qn, k, ready[0])
	}
	if d.MessageCount != len(ready)-1 {
		w.fatalf("get %s: message count %d, want %d", qn, d.MessageCount, len(ready)-1)
	}
	w.delivered(fc, in, d, noAck, false)
}

func (w *fzWorld) deleteQueue(fc *fzChan, qn string, opts QueueDeleteOptions) {
	w.drain(nil)
	n, err := fc.ch.QueueDelete(qn, opts)
	in, ok := w.insts[qn]
	if !ok {
		w.expect(err, 0)
		if n != 0 {
			w.fatalf("delete of a missing queue dropped %d", n)
		}
		return
	}
	if w.locked(fc, qn) {
		w.expect(err, ResourceLocked)
		return
	}
	ready := in.ready()
	if (opts.IfUnused && w.activeConsumers(in) > 0) || (opts.IfEmpty && len(ready) > 0) {
		w.expect(err, PreconditionFailed)
		return
	}
	w.expect(err, 0)
	if n != len(ready) {
		w.fatalf("delete %s dropped %d messages, want %d", qn, n, len(ready))
	}
	w.forget(in)
}

// forget records the deletion of a queue: its messages are gone, its
// consumers cancelled, its bindings removed.
func (w *fzWorld) forget(in *fzInst) {
	qn := in.name
	in.deleted = true
	for _, m := range in.msgs {
		if m.state == fzLive {
			m.state = fzDeleted
		}
	}
	for _, c := range w.cons {
		if c.in == in {
			c.active = false
		}
	}
	delete(w.insts, qn)
	w.topo.deleteQueue(qn)
}

// ---------------------------------------------------------------------------
// Invariants.

// check verifies the broker's bookkeeping after an operation. before holds
// each slot's channel-wide inflight count before it.
func (w *fzWorld) check(before []int64) {
	w.t.Helper()
	w.vh.mu.RLock()
	queues := maps.Clone(w.vh.queues)
	w.vh.mu.RUnlock()
	if got, want := slices.Sorted(maps.Keys(queues)), slices.Sorted(maps.Keys(w.insts)); !slices.Equal(got, want) {
		w.fatalf("queues %v, want %v", got, want)
	}
	for name, q := range queues {
		if w.insts[name].q != q {
			w.fatalf("queue %s is not the declared instance", name)
		}
		q.mu.Lock()
		ready := q.ready.Len()
		var removed uint64
		for _, n := range q.removed {
			removed += n
		}
		enq, unacked := q.enqueued, q.unacked
		q.mu.Unlock()
		if unacked < 0 || enq != uint64(ready)+uint64(unacked)+removed {
			w.fatalf("queue %s: enqueued %d != ready %d + unacked %d + removed %d", name, enq, ready, unacked, removed)
		}
		var info QueueInfo
		var err error
		if in := w.insts[name]; in.spec.exclusive {
			// The inspector's connection would get 405.
			info = q.info()
		} else if info, err = w.insp.QueueDeclare(name, QueueOptions{Passive: true}); err != nil {
			w.fatalf("passive declare %s: %v", name, err)
		}
		if info.Messages != ready {
			w.fatalf("passive declare %s: %d messages, ready holds %d", name, info.Messages, ready)
		}
		if want := w.activeConsumers(w.insts[name]); info.Consumers != want {
			w.fatalf("passive declare %s: %d consumers, want %d", name, info.Consumers, want)
		}
	}
	perQ := map[*queue]int{}
	perC := map[*Consumer]int{}
	for _, fc := range w.chans {
		ch := fc.ch
		ch.mu.Lock()
		p := ch.pend
		live, withC := 0, 0
		var last uint64
		for i, x := range p.list[p.head:] {
			if i > 0 && x.tag <= last {
				ch.mu.Unlock()
				w.fatalf("channel %d: pending tags out of order", ch.id)
			}
			last = x.tag
			if x.done {
				continue
			}
			live++
			perQ[x.q]++
			if x.c != nil {
				perC[x.c]++
				withC++
			}
		}
		headDone := p.head < len(p.list) && p.list[p.head].done
		ch.mu.Unlock()
		if live != p.live {
			w.fatalf("channel %d: pendings live %d, %d entries not done", ch.id, p.live, live)
		}
		if headDone {
			w.fatalf("channel %d: settled entry left at the head of the pendings", ch.id)
		}
		if got := ch.inflight.Load(); got != int64(withC) {
			w.fatalf("channel %d: inflight %d, %d consumer deliveries pending", ch.id, got, withC)
		}
		// Deliveries may wait in consumer buffers: the test holds at most
		// what the broker has pending.
		if len(fc.out) > live {
			w.fatalf("channel %d: test holds %d deliveries, broker %d", ch.id, len(fc.out), live)
		}
	}
	for i, fc := range w.slots {
		now := fc.ch.inflight.Load()
		if fc.global > 0 && now > before[i] && now > int64(fc.global) {
			w.fatalf("channel %d: inflight grew from %d to %d past the global prefetch %d", fc.ch.id, before[i], now, fc.global)
		}
	}
	for _, in := range w.all {
		q := in.q
		q.mu.Lock()
		unacked := q.unacked
		var bad *fzConsumer
		for _, c := range w.cons {
			if c.in == in && (c.c.unacked != perC[c.c] || (!c.noAck && c.c.prefetch > 0 && c.c.unacked > c.c.prefetch)) {
				bad = c
			}
		}
		q.mu.Unlock()
		if unacked != perQ[q] {
			w.fatalf("queue %s: unacked %d, %d pending on channels", in.name, unacked, perQ[q])
		}
		if bad != nil {
			w.fatalf("consumer %s: unacked %d, %d pending, prefetch %d", bad.c.tag, bad.c.unacked, perC[bad.c], bad.c.prefetch)
		}
	}
}

// finish settles everything and checks that every message is where the
// model says: no message lost or duplicated.
func (w *fzWorld) finish() {
	w.t.Helper()
	w.drain(nil)
	for _, fc := range w.slots {
		w.expect(fc.ch.Close(), 0)
	}
	w.handleClosed()
	for _, fc := range w.slots {
		w.expect(fc.ch.Close(), 0)
	}
	for _, c := range w.cons {
		if d, ok := c.c.TryReceive(); ok {
			w.fatalf("consumer %s still got %v after its channel closed", c.c.tag, w.keyOf(d.Message))
		}
	}
	if w.stats != nil {
		for _, in := range w.all {
			for _, m := range in.msgs {
				w.stats.states[m.state]++
			}
		}
	}
	for name, in := range w.insts {
		q := in.q
		q.mu.Lock()
		r := q.ready.(*ring)
		var got []fzKey
		var bytes int64
		for i := range r.Len() {
			e := r.at(i)
			got = append(got, w.keyOf(e.msg))
			bytes += e.msg.size()
		}
		unacked, consumers, enq, removed, rbytes := q.unacked, len(q.consumers), q.enqueued, q.removed, r.bytes
		q.mu.Unlock()
		want := in.ready()
		inOrder := true
		for i := 1; i < len(got); i++ {
			a, b := in.msgs[got[i-1]], in.msgs[got[i]]
			if a != nil && b != nil && a.seq > b.seq {
				inOrder = false
			}
		}
		// The order between dead letters of one batch is the broker's
		// routing order: compare as sets, and check the order by seq.
		sorted := slices.SortedFunc(slices.Values(got), fzKeyCmp)
		slices.SortFunc(want, fzKeyCmp)
		switch {
		case !slices.Equal(sorted, want):
			w.fatalf("queue %s holds %v, want %v", name, got, want)
		case !inOrder:
			w.fatalf("queue %s holds %v, out of queue order", name, got)
		case bytes != rbytes:
			w.fatalf("queue %s: ring bytes %d, entries weigh %d", name, rbytes, bytes)
		case unacked != 0 || consumers != 0:
			w.fatalf("queue %s: %d unacked, %d consumers after every channel closed", name, unacked, consumers)
		case enq != in.enqueued:
			w.fatalf("queue %s: enqueued %d, want %d", name, enq, in.enqueued)
		case removed != in.removed:
			w.fatalf("queue %s: removed %v, want %v (acked, rejected, expired, maxlen, purged, deleted)", name, removed[1:], in.removed[1:])
		}
	}
}

func fzKeyCmp(a, b fzKey) int {
	if a.id != b.id {
		return int(a.id) - int(b.id)
	}
	return strings.Compare(a.origin, b.origin)
}

// ---------------------------------------------------------------------------
// The fuzz target and its seeds.

// fzSeed encodes operations; each is an opcode and its argument bytes.
func fzSeed(ops ...[]byte) []byte { return slices.Concat(ops...) }

func fzOp(op int, args ...byte) []byte {
	b := make([]byte, 5)
	b[0] = byte(op)
	copy(b[1:], args)
	return b
}

// Queue indexes in fzQueueSpecs and exchange indexes in fzPublishExchanges.
const (
	fzQA, fzQB, fzQC, fzQD, fzQE, fzDLQ = 0, 1, 2, 3, 4, 5
	fzQS, fzQX                          = 6, 7
	fzXDefault, fzXDirect, fzXAlt       = 0, 1, 2
	fzXFanout, fzXTopic, fzXHeaders     = 3, 4, 5
)

func fzSeeds() [][]byte {
	pub := func(slot, x, key, h byte) []byte { return fzOp(fzOpPublish, slot, x, key, h) }
	return [][]byte{
		// Publish to every kind of exchange, consume with acks.
		fzSeed(pub(0, fzXDirect, 0, 0), pub(0, fzXFanout, 6, 0), pub(1, fzXTopic, 2, 0), pub(2, fzXHeaders, 0, 4),
			fzOp(fzOpConsume, 0, fzQA, 0), fzOp(fzOpReceive, 0, 0xc0), fzOp(fzOpAck, 0, 0, 0),
			fzOp(fzOpAckMultiple, 0, 0, 0), fzOp(fzOpGet, 1, fzQE, 0), fzOp(fzOpAck, 1, 0, 0)),
		// Overflow: drop-head to the DLQ, reject-publish, reject-publish-dlx.
		fzSeed(pub(0, fzXTopic, 2, 0), pub(0, fzXTopic, 2, 0), pub(0, fzXTopic, 2, 0), pub(0, fzXTopic, 2, 0),
			pub(0, fzXFanout, 0, 0), pub(0, fzXFanout, 0, 0), pub(0, fzXFanout, 0, 0),
			fzOp(fzOpGet, 2, fzDLQ, 1), fzOp(fzOpGet, 2, fzDLQ, 0), fzOp(fzOpReject, 2, 0, 0)),
		// Prefetch, nack with and without requeue, close with unacked.
		fzSeed(fzOp(fzOpQos, 0, 1), fzOp(fzOpConsume, 0, fzQA, 0), fzOp(fzOpQos, 0, 2), fzOp(fzOpConsume, 0, fzQA, 0),
			pub(1, fzXDirect, 0, 0), pub(1, fzXDirect, 0, 0), pub(1, fzXDirect, 0, 0), pub(1, fzXDirect, 0, 0),
			fzOp(fzOpReceive, 0, 0xc0), fzOp(fzOpReceive, 1, 0xc0), fzOp(fzOpNackRequeue, 0, 0, 1),
			fzOp(fzOpNackDrop, 0, 0, 0), fzOp(fzOpClose, 0), fzOp(fzOpGet, 1, fzDLQ, 1)),
		// Unknown tag (406), recover, no-ack consumers, cancel.
		fzSeed(pub(0, fzXAlt, 0, 0), pub(0, fzXDirect, 1, 0), fzOp(fzOpConsume, 1, fzQE, 1), fzOp(fzOpConsume, 1, fzQB, 0),
			fzOp(fzOpReceive, 1, 0), fzOp(fzOpRecover, 1), fzOp(fzOpReceive, 1, 0xc0), fzOp(fzOpAck, 1, 0xf1, 0),
			fzOp(fzOpCancel, 0, 1), fzOp(fzOpReceive, 0, 0xc0)),
		// Bindings, purge, delete and redeclare, global prefetch.
		fzSeed(fzOp(fzOpBind, 0, 21), fzOp(fzOpBind, 0, 24), pub(0, fzXTopic, 3, 0), pub(0, fzXHeaders, 0, 2),
			fzOp(fzOpUnbind, 0, 4), pub(0, fzXDirect, 5, 0), fzOp(fzOpPurge, 0, fzQC),
			fzOp(fzOpQos, 2, 5), fzOp(fzOpConsume, 2, fzQA, 0), fzOp(fzOpConsume, 2, fzQB, 0),
			fzOp(fzOpDelete, 1, fzQA), fzOp(fzOpDelete, 1, fzDLQ), pub(0, fzXDirect, 0, 0),
			fzOp(fzOpNackDrop, 2, 0, 1), fzOp(fzOpDeclare, 0, fzDLQ), fzOp(fzOpDeclare, 0, fzQA),
			fzOp(fzOpDeclare, 0, fzQB|0x80), pub(0, 0xff, 0, 0)),
		// Exclusive queue: 405 from the other connection, deleted with its
		// connection, declared again by the other; single active consumer.
		fzSeed(pub(0, fzXFanout, 0, 0), pub(1, fzXFanout, 0, 0), fzOp(fzOpConsume, 2, fzQX, 0),
			fzOp(fzOpConsume, 0, fzQX, 0), fzOp(fzOpReceive, 0, 0x40), fzOp(fzOpConsume, 1, fzQS, 0),
			fzOp(fzOpConsume, 1, fzQS, 0), pub(1, fzXDirect, 1, 0), pub(1, fzXDirect, 1, 0),
			fzOp(fzOpCloseConn, 1), fzOp(fzOpDeclare, 2, fzQX), pub(2, fzXTopic, 2, 0),
			fzOp(fzOpGet, 0, fzQX, 0), fzOp(fzOpGet, 2, fzQX, 0), fzOp(fzOpGet, 2, fzQS, 0)),
	}
}

func FuzzOperations(f *testing.F) {
	for _, s := range fzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 5*fzMaxOps {
			t.Skip()
		}
		newFzWorld(t).run(data)
	})
}

// TestOperationsRandom runs the fuzz harness on random operation sequences,
// so that plain `go test` covers more than the seeds.
func TestOperationsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	n := 300
	if testing.Short() {
		n = 30
	}
	// Weights of the operations, so that messages flow: mostly publish,
	// receive and settle.
	weights := [fzNumOps]int{
		fzOpPublish: 30, fzOpConsume: 5, fzOpCancel: 2, fzOpReceive: 15, fzOpAck: 8, fzOpAckMultiple: 3,
		fzOpNackRequeue: 4, fzOpNackDrop: 3, fzOpReject: 3, fzOpGet: 6, fzOpPurge: 1, fzOpClose: 1,
		fzOpRecover: 1, fzOpBind: 2, fzOpUnbind: 2, fzOpDelete: 1, fzOpDeclare: 2, fzOpQos: 3, fzOpCloseConn: 1,
	}
	var ops []byte
	for op, w := range weights {
		for range w {
			ops = append(ops, byte(op))
		}
	}
	var st fzStats
	for i := range n {
		var data []byte
		for range 50 + rng.IntN(250) {
			data = append(data, ops[rng.IntN(len(ops))])
			for range 4 {
				b := byte(rng.Uint32())
				if b >= 0xf0 && rng.IntN(8) != 0 {
					b &= 0x7f // few unknown tags and missing exchanges
				}
				data = append(data, b)
			}
		}
		ok := t.Run(fmt.Sprint(i), func(t *testing.T) {
			w := newFzWorld(t)
			w.stats = &st
			w.run(data)
		})
		if !ok {
			t.Logf("failing input: %x", data)
			return
		}
	}
	t.Logf("ops %v, channel closes %d, deliveries %d, final states (live acked rejected maxlen purged deleted) %v",
		st.ops, st.errs, st.deliveries, st.states[1:])
}

// ---------------------------------------------------------------------------
// Routing against the model.

func TestRoutingMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var exchanges []string
	kinds := map[string]ExchangeKind{}
	for _, k := range []ExchangeKind{Direct, Fanout, Topic, Headers} {
		for i := range 2 {
			n := fmt.Sprintf("%s%d", k, i)
			exchanges = append(exchanges, n)
			kinds[n] = k
		}
	}
	queues := []string{"q0", "q1", "q2", "q3", "q4", "q5"}
	words := []string{"a", "b", "c"}
	key := func() string {
		ws := make([]string, rng.IntN(4))
		for i := range ws {
			ws[i] = words[rng.IntN(len(words))]
		}
		return strings.Join(ws, ".")
	}
	pattern := func() string {
		ws := make([]string, rng.IntN(4))
		for i := range ws {
			ws[i] = []string{"a", "b", "*", "#"}[rng.IntN(4)]
		}
		return strings.Join(ws, ".")
	}
	hkeys := []string{"h1", "h2", "x-h"}
	hvals := []any{"v1", "v2", int32(1), int64(2)}
	bindArgs := func() Table {
		t := Table{}
		if m := rng.IntN(5); m < 4 {
			t["x-match"] = []string{"all", "any", "all-with-x", "any-with-x"}[m]
		}
		for range rng.IntN(3) {
			if rng.IntN(4) == 0 {
				t[hkeys[rng.IntN(len(hkeys))]] = nil
			} else {
				t[hkeys[rng.IntN(len(hkeys))]] = hvals[rng.IntN(len(hvals))]
			}
		}
		return t
	}
	headers := func() Table {
		t := Table{}
		for range rng.IntN(4) {
			t[hkeys[rng.IntN(len(hkeys))]] = hvals[rng.IntN(len(hvals))]
		}
		return t
	}
	iterations := 300
	if testing.Short() {
		iterations = 30
	}
	published := 0
	for it := range iterations {
		b := New()
		conn, err := b.Connect(DefaultVHost)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		var returns int
		ch.NotifyReturn(func(Return) { returns++ })
		m := newFzTopology()
		for _, x := range exchanges {
			var args Table
			if rng.IntN(3) == 0 {
				ae := exchanges[rng.IntN(len(exchanges))]
				if rng.IntN(6) == 0 {
					ae = "missing"
				}
				args = Table{"alternate-exchange": ae}
				m.alt[x] = ae
			}
			if err := ch.ExchangeDeclare(x, kinds[x], ExchangeOptions{Args: args}); err != nil {
				t.Fatal(err)
			}
			m.kinds[x] = kinds[x]
		}
		for _, q := range queues {
			if _, err := ch.QueueDeclare(q, QueueOptions{}); err != nil {
				t.Fatal(err)
			}
			m.queues[q] = true
		}
		var made []fzBinding
		for range 4 + rng.IntN(20) {
			bd := fzBinding{src: exchanges[rng.IntN(len(exchanges))]}
			if rng.IntN(4) != 0 {
				bd.q = queues[rng.IntN(len(queues))]
			} else {
				bd.x = exchanges[rng.IntN(len(exchanges))]
			}
			switch kinds[bd.src] {
			case Direct:
				bd.key = key()
			case Fanout:
				bd.key = words[rng.IntN(len(words))]
			case Topic:
				bd.key = pattern()
			case Headers:
				bd.args = bindArgs()
			}
			if bd.q != "" {
				err = ch.QueueBind(bd.q, bd.src, bd.key, bd.args)
			} else {
				err = ch.ExchangeBind(bd.x, bd.src, bd.key, bd.args)
			}
			if err != nil {
				t.Fatal(err)
			}
			m.bind(bd)
			made = append(made, bd)
		}
		for range rng.IntN(4) {
			bd := made[rng.IntN(len(made))]
			if bd.q != "" {
				err = ch.QueueUnbind(bd.q, bd.src, bd.key, bd.args)
			} else {
				err = ch.ExchangeUnbind(bd.x, bd.src, bd.key, bd.args)
			}
			if err != nil {
				t.Fatal(err)
			}
			m.unbind(bd)
		}
		for range 40 {
			x := exchanges[rng.IntN(len(exchanges))]
			if rng.IntN(10) == 0 {
				x = ""
			}
			k, h := key(), headers()
			if x == "" && rng.IntN(2) == 0 {
				k = queues[rng.IntN(len(queues))]
			}
			want := m.route(x, k, h)
			returns = 0
			if _, err := ch.Publish(x, k, Publishing{Properties: Properties{Headers: h}, Body: []byte("m")}, PublishOptions{Mandatory: true}); err != nil {
				t.Fatal(err)
			}
			published++
			var got []string
			for _, q := range queues {
				n, err := ch.QueuePurge(q)
				if err != nil {
					t.Fatal(err)
				}
				if n > 1 {
					t.Fatalf("queue %s got %d copies", q, n)
				}
				if n == 1 {
					got = append(got, q)
				}
			}
			if !slices.Equal(got, want) || returns != b2i(len(want) == 0) {
				t.Fatalf("iteration %d: publish to %q key %q headers %v\nbindings: %v\nalternates: %v\ngot %v (%d returns), want %v",
					it, x, k, h, slices.Collect(maps.Values(m.bindings)), m.alt, got, returns, want)
			}
		}
		b.Close()
	}
	t.Logf("%d publishes checked", published)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------
// Ack bookkeeping.

func TestAckBookkeeping(t *testing.T) {
	tests := []struct {
		name         string
		givePrefetch []int // per consumer, set before each consume
		giveGlobal   int
		giveWindow   int
		wantMessages int
	}{
		{name: "per-consumer", givePrefetch: []int{1, 2, 3}, wantMessages: 300},
		{name: "global", givePrefetch: []int{0, 0, 2}, giveGlobal: 3, wantMessages: 300},
		{name: "both", givePrefetch: []int{1, 4, 0, 2}, giveGlobal: 5, wantMessages: 300},
		{name: "unlimited-small-window", givePrefetch: []int{0, 0}, giveWindow: 2, wantMessages: 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(8) {
				ackBookkeeping(t, seed, tt.givePrefetch, tt.giveGlobal, tt.giveWindow, tt.wantMessages)
			}
		})
	}
}

func ackBookkeeping(t *testing.T, seed uint64, prefetch []int, global, window, n int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	var opts []Option
	if window > 0 {
		opts = append(opts, WithConsumerWindow(window))
	}
	b := New(opts...)
	defer b.Close()
	conn, err := b.Connect(DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q", QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	q := b.vhosts[DefaultVHost].queues["q"]
	if global > 0 {
		if err := ch.Qos(QosOptions{PrefetchCount: global, Global: true}); err != nil {
			t.Fatal(err)
		}
	}
	var cs []*Consumer
	for _, p := range prefetch {
		if err := ch.Qos(QosOptions{PrefetchCount: p}); err != nil {
			t.Fatal(err)
		}
		c, err := ch.Consume("q", ConsumeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	type held struct {
		id int
		c  *Consumer
	}
	out := map[uint64]held{} // deliveries received and not settled
	acked := make([]int, n)
	seen := make([]bool, n)
	published := 0
	receive := func(c *Consumer) bool {
		d, ok := c.TryReceive()
		if !ok {
			return false
		}
		var id int
		fmt.Sscan(string(d.Body), &id)
		if seen[id] != d.Redelivered {
			t.Fatalf("seed %d: message %d redelivered %t, delivered before %t", seed, id, d.Redelivered, seen[id])
		}
		if acked[id] > 0 {
			t.Fatalf("seed %d: message %d delivered after its ack", seed, id)
		}
		for _, h := range out {
			if h.id == id {
				t.Fatalf("seed %d: message %d delivered twice", seed, id)
			}
		}
		seen[id] = true
		out[d.DeliveryTag] = held{id, c}
		return true
	}
	drain := func() {
		for more := true; more; {
			more = false
			for _, c := range cs {
				for receive(c) {
					more = true
				}
			}
		}
	}
	tags := func() []uint64 { return slices.Sorted(maps.Keys(out)) }
	settle := func(upTo []uint64, requeue bool) {
		for _, tag := range upTo {
			if !requeue {
				acked[out[tag].id]++
			}
			delete(out, tag)
		}
	}
	for steps := 0; ; steps++ {
		if steps > 200_000 {
			t.Fatalf("seed %d: no progress", seed)
		}
		done := published == n && len(out) == 0
		if done {
			drain()
			if len(out) == 0 {
				break
			}
		}
		switch op := rng.IntN(10); {
		case op < 2 && published < n:
			for range 1 + rng.IntN(5) {
				if published < n {
					if _, err := ch.Publish("", "q", Publishing{Body: fmt.Append(nil, published)}, PublishOptions{}); err != nil {
						t.Fatal(err)
					}
					published++
				}
			}
		case op < 5:
			receive(cs[rng.IntN(len(cs))])
		case len(out) == 0:
		case op < 6: // ack one
			tag := tags()[rng.IntN(len(out))]
			if err := ch.Ack(tag, 0); err != nil {
				t.Fatal(err)
			}
			settle([]uint64{tag}, false)
		case op < 7: // ack multiple: everything up to the tag, received or not
			drain()
			ts := tags()
			i := rng.IntN(len(ts))
			if err := ch.Ack(ts[i], Multiple); err != nil {
				t.Fatal(err)
			}
			settle(ts[:i+1], false)
		case op < 8: // nack requeue, one or multiple
			drain()
			ts := tags()
			i := rng.IntN(len(ts))
			if rng.IntN(2) == 0 {
				if err := ch.Nack(ts[i], Requeue|Multiple); err != nil {
					t.Fatal(err)
				}
				settle(ts[:i+1], true)
			} else {
				if err := ch.Nack(ts[i], Requeue); err != nil {
					t.Fatal(err)
				}
				settle(ts[i:i+1], true)
			}
		case op < 9: // reject requeue
			tag := tags()[rng.IntN(len(out))]
			if err := ch.Reject(tag, Requeue); err != nil {
				t.Fatal(err)
			}
			settle([]uint64{tag}, true)
		default: // ack everything received so far, with multiple 0 after a drain
			drain()
			if err := ch.Ack(0, Multiple); err != nil {
				t.Fatal(err)
			}
			settle(tags(), false)
		}
		// Invariants: prefetch limits hold, and no consumer that has credit
		// and room is left idle while messages are ready.
		q.mu.Lock()
		ready, unacked := q.ready.Len(), q.unacked
		inflight := ch.inflight.Load()
		for i, c := range cs {
			if c.prefetch > 0 && c.unacked > c.prefetch {
				q.mu.Unlock()
				t.Fatalf("seed %d: consumer %d has %d unacked, prefetch %d", seed, i, c.unacked, c.prefetch)
			}
			// A consumer stalled on its window resumes at half of it.
			roomy := c.buffered.Load() <= int64(b.opts.consumerWindow/2)
			credit := (c.prefetch == 0 || c.unacked < c.prefetch) && (global == 0 || inflight < int64(global))
			if ready > 0 && roomy && credit {
				q.mu.Unlock()
				t.Fatalf("seed %d: %d ready while consumer %d has credit (unacked %d, prefetch %d, inflight %d/%d, buffered %d)",
					seed, ready, i, c.unacked, c.prefetch, inflight, global, c.buffered.Load())
			}
		}
		q.mu.Unlock()
		if global > 0 && inflight > int64(global) {
			t.Fatalf("seed %d: channel inflight %d, global prefetch %d", seed, inflight, global)
		}
		if inflight != int64(unacked) {
			t.Fatalf("seed %d: channel inflight %d, queue unacked %d", seed, inflight, unacked)
		}
	}
	for id, a := range acked {
		if a != 1 {
			t.Fatalf("seed %d: message %d acked %d times", seed, id, a)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.removed[removedAcked] != uint64(n) || q.ready.Len() != 0 || q.unacked != 0 {
		t.Fatalf("seed %d: acked %d, ready %d, unacked %d; want %d, 0, 0", seed, q.removed[removedAcked], q.ready.Len(), q.unacked, n)
	}
}

// ---------------------------------------------------------------------------
// Bugs, and regression tests of the ones fixed since.

// TestBugAlternateExchangeAndExchangeBindings (fixed in e6ad42a; kept as a
// regression test): router.visit (vhost.go) handed a message to an
// exchange's alternate exchange when nothing downstream of the exchange
// took it, and returned false for an exchange it had already visited.
// RabbitMQ (rabbit_exchange:route/process_alternate) uses the alternate
// exchange only when the exchange's own bindings match no destination at
// all; an exchange binding that matches counts even when the exchange it
// leads to routes nowhere, or was visited already. Two consequences were:
//
//   - a message matched by an exchange binding whose destination routes
//     nowhere went to the alternate exchange instead of being unroutable;
//   - routing depended on the order of the bindings: when the destination
//     exchange was visited first on another path, the alternate exchange
//     fired; when not, it did not.
func TestBugAlternateExchangeAndExchangeBindings(t *testing.T) {
	type bind struct{ dst, src string }
	tests := []struct {
		name string
		// giveBinds are the exchange bindings, in order. Exchanges: x
		// (fanout), y (fanout, bound to queue qy unless giveEmptyY), z
		// (fanout, alternate exchange w), w (fanout, bound to qw).
		giveBinds  []bind
		giveEmptyY bool
		giveFrom   string
		want       []string
	}{
		{
			name:       "exchange-binding-to-an-empty-exchange-counts-as-routed",
			giveBinds:  []bind{{"y", "z"}},
			giveEmptyY: true,
			giveFrom:   "z",
			want:       nil, // RabbitMQ: z matched y, so no alternate; y routes nowhere
		},
		{
			name:      "y-before-z",
			giveBinds: []bind{{"y", "x"}, {"z", "x"}, {"y", "z"}},
			giveFrom:  "x",
			want:      []string{"qy"},
		},
		{
			name:      "z-before-y",
			giveBinds: []bind{{"z", "x"}, {"y", "x"}, {"y", "z"}},
			giveFrom:  "x",
			want:      []string{"qy"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New()
			defer b.Close()
			conn, _ := b.Connect(DefaultVHost)
			ch, _ := conn.Channel()
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(ch.ExchangeDeclare("x", Fanout, ExchangeOptions{}))
			must(ch.ExchangeDeclare("y", Fanout, ExchangeOptions{}))
			must(ch.ExchangeDeclare("z", Fanout, ExchangeOptions{Args: Table{"alternate-exchange": "w"}}))
			must(ch.ExchangeDeclare("w", Fanout, ExchangeOptions{}))
			for _, q := range []string{"qy", "qw"} {
				_, err := ch.QueueDeclare(q, QueueOptions{})
				must(err)
			}
			if !tt.giveEmptyY {
				must(ch.QueueBind("qy", "y", "", nil))
			}
			must(ch.QueueBind("qw", "w", "", nil))
			for _, bd := range tt.giveBinds {
				must(ch.ExchangeBind(bd.dst, bd.src, "", nil))
			}
			_, err := ch.Publish(tt.giveFrom, "", Publishing{Body: []byte("m")}, PublishOptions{})
			must(err)
			var got []string
			for _, q := range []string{"qy", "qw"} {
				if n, _ := ch.QueuePurge(q); n > 0 {
					got = append(got, q)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("routed to %v, want %v", got, tt.want)
			}
		})
	}
}

// TestBugConcurrentReceiveLostWakeup (fixed in e6ad42a; kept as a
// regression test): Consumer.Receive is documented safe for concurrent use,
// but push (consumer.go) signals c.notify only when the buffer was empty,
// and a receiver that took one delivery of several did not pass the signal
// on. With two receivers waiting, two deliveries pushed
// back to back wake one receiver; it takes one delivery and returns, and the
// other receiver sleeps with a delivery in the buffer until its context
// expires.
func TestBugConcurrentReceiveLostWakeup(t *testing.T) {
	for attempt := range 20 {
		b := New()
		conn, _ := b.Connect(DefaultVHost)
		ch, _ := conn.Channel()
		other, _ := conn.Channel()
		if _, err := ch.QueueDeclare("q", QueueOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := ch.Publish("", "q", Publishing{Body: fmt.Append(nil, i)}, PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// Park both messages unacked on another channel.
		for range 2 {
			if _, ok, err := other.Get("q", GetOptions{}); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		c, err := ch.Consume("q", ConsumeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := c.Receive(ctx)
				errs <- err
			}()
		}
		if !waitForStacks(ctx, "(*Consumer).Receive", 2) {
			cancel()
			b.Close()
			t.Fatal("receivers did not start waiting")
		}
		// Closing the other channel requeues both messages; one dispatch
		// pushes both into c's buffer.
		other.Close()
		var failed error
		for range 2 {
			if err := <-errs; err != nil {
				failed = err
			}
		}
		left := c.buffered.Load()
		cancel()
		b.Close()
		if failed != nil {
			t.Fatalf("attempt %d: a receiver failed with %v while %d delivery stayed buffered", attempt, failed, left)
		}
	}
}

// waitForStacks waits until n goroutines are blocked in a select inside
// fn, or ctx is done.
func waitForStacks(ctx context.Context, fn string, n int) bool {
	return waitForBlocked(ctx, "[select", fn, n)
}

// waitForBlocked waits until n goroutines wait in state (as the goroutine
// dump prints it, e.g. "[sync.Mutex.Lock") inside fn, or ctx is done.
func waitForBlocked(ctx context.Context, state, fn string, n int) bool {
	buf := make([]byte, 1<<20)
	for ctx.Err() == nil {
		k := string(buf[:runtime.Stack(buf, true)])
		count := 0
		for _, g := range strings.Split(k, "\n\n") {
			if strings.Contains(g, state) && strings.Contains(g, fn) {
				count++
			}
		}
		if count >= n {
			return true
		}
		runtime.Gosched()
	}
	return false
}

// TestBugConsumeRacingCloseLeaksConsumer (fixed in e6ad42a, which checks
// c.dead in addConsumer; kept as a regression test): Channel.Consume
// (channel.go) registers the consumer on the channel under ch.mu, releases
// it, and only then adds it to the queue (queue.addConsumer). A
// Channel.Close that ran in between took the consumer from the channel and
// called q.removeConsumer, which found nothing yet; addConsumer then added
// the dead consumer to q.consumers, where it stayed for ever: the queue
// reported a consumer, was never auto-deleted nor expired, an exclusive
// consumer locked the queue, and a single-active-consumer queue stopped
// delivering. See TestBugConsumeRacingCancelLeaksConsumer for the same
// window with Cancel, which the fix left open.
func TestBugConsumeRacingCloseLeaksConsumer(t *testing.T) {
	consumeRace(t, func(ch *Channel, _ string) { ch.Close() }, func(t *testing.T, c *Consumer, q *queue) {
		t.Fatalf("a consumer of a closed channel stays on the queue (%d consumers)", len(q.consumers))
	})
}

// consumeRace runs interrupt (a Close or a Cancel of the consumer's tag)
// in the window of Channel.Consume between its registration on the channel
// and queue.addConsumer, deterministically: the test holds q.mu, so that
// Consume parks in addConsumer; then it releases q.mu and runs interrupt at
// once, with one P, so that interrupt takes q.mu (a woken waiter does not
// get a sync.Mutex before a running goroutine that asks for it) before
// Consume runs again. leaked is called, with q.mu held, when the consumer
// is on the queue afterwards.
func consumeRace(t *testing.T, interrupt func(ch *Channel, tag string), leaked func(t *testing.T, c *Consumer, q *queue)) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b := New()
	defer b.Close()
	conn, _ := b.Connect(DefaultVHost)
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("q", QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	q := b.vhosts[DefaultVHost].queues["q"]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		c   *Consumer
		err error
	}
	res := make(chan result, 1)
	q.mu.Lock()
	go func() {
		c, err := ch.Consume("q", ConsumeOptions{Tag: "t", Exclusive: true})
		res <- result{c, err}
	}()
	if !waitForBlocked(ctx, "[sync.Mutex.Lock", "(*queue).addConsumer", 1) {
		q.mu.Unlock()
		t.Fatal("Consume did not reach addConsumer")
	}
	q.mu.Unlock()
	interrupt(ch, "t")
	r := <-res
	q.mu.Lock()
	defer q.mu.Unlock()
	if r.c != nil && slices.Contains(q.consumers, r.c) {
		leaked(t, r.c, q)
	}
}

// TestBugDeadLetterCycleAfterRejection (fixed in e6ad42a; kept as a
// regression test): deadLetterCycle (deadletter.go) let a dead letter into
// a queue it already died in as soon as any entry of its x-death history
// said "rejected", however old. RabbitMQ (rabbit_dead_letter:is_cycle)
// looks only at the deaths since the last one in that queue: the newest
// x-death entries up to and including the first for the queue must hold no
// rejection. So a message rejected once and then dead-lettered
// automatically (x-max-length, expiry) back into the same queue circulated
// for ever: vhost.flush never returned, and the Reject that started it
// hung, spinning (with several such queues the letters multiplied on each
// round).
func TestBugDeadLetterCycleAfterRejection(t *testing.T) {
	b := New()
	defer b.Close()
	conn, _ := b.Connect(DefaultVHost)
	ch, _ := conn.Channel()
	admin, _ := conn.Channel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("dlx1", Fanout, ExchangeOptions{}))
	must(ch.ExchangeDeclare("dlx2", Fanout, ExchangeOptions{}))
	_, err := ch.QueueDeclare("q1", QueueOptions{Args: Table{"x-dead-letter-exchange": "dlx1"}})
	must(err)
	// q2 refuses every message and dead-letters it to dlx2, which routes
	// back to q2: the second refusal is a cycle without rejection.
	_, err = ch.QueueDeclare("q2", QueueOptions{Args: Table{
		"x-max-length": int32(0), "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "dlx2"}})
	must(err)
	must(ch.QueueBind("q2", "dlx1", "", nil))
	must(ch.QueueBind("q2", "dlx2", "", nil))
	_, err = ch.Publish("", "q1", Publishing{Body: []byte("m")}, PublishOptions{})
	must(err)
	d, ok, err := ch.Get("q1", GetOptions{})
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	q2 := b.vhosts[DefaultVHost].queues["q2"]
	done := make(chan error, 1)
	go func() { done <- ch.Reject(d.DeliveryTag, 0) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	select {
	case err := <-done:
		must(err)
	case <-ctx.Done():
		q2.mu.Lock()
		n := q2.removed[removedMaxLen]
		q2.mu.Unlock()
		// Deleting q2 unbinds it, which ends the loop.
		_, err := admin.QueueDelete("q2", QueueDeleteOptions{})
		stop, cancelStop := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelStop()
		select {
		case <-done:
		case <-stop.Done():
		}
		t.Fatalf("Reject did not return: the dead letter went round q2 %d times (delete: %v)", n, err)
	}
	q2.mu.Lock()
	defer q2.mu.Unlock()
	if n := q2.removed[removedMaxLen]; n != 1 {
		t.Fatalf("q2 refused the dead letter %d times, want 1", n)
	}
}

// TestBugConsumeRacingCancelLeaksConsumer: Channel.Cancel (channel.go)
// takes the consumer from ch.consumers and calls q.removeConsumer and
// c.cancel, but does not mark it dead. When it runs between Consume's
// registration on the channel and q.addConsumer (the window that the fix of
// the Consume/Close race closed for Close only, by checking c.dead in
// addConsumer), addConsumer adds the cancelled consumer to the queue: its
// Done channel is closed, yet the queue keeps pushing deliveries to it,
// unacked on the channel, and no Cancel can remove it any more (the channel
// forgot its tag). Fix: set c.dead in Cancel before removeConsumer (as
// closeWith does), so that addConsumer refuses it.
func TestBugConsumeRacingCancelLeaksConsumer(t *testing.T) {
	var ch *Channel
	consumeRace(t, func(c *Channel, tag string) {
		ch = c
		if err := c.Cancel(tag); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T, c *Consumer, q *queue) {
		select {
		case <-c.Done():
		default:
			t.Fatal("Cancel did not cancel the consumer")
		}
		// Still on the queue: it gets deliveries, and the channel no longer
		// knows its tag, so Cancel cannot remove it.
		q.mu.Unlock()
		_, _ = ch.Publish("", "q", Publishing{Body: []byte("m")}, PublishOptions{})
		_, got := c.TryReceive()
		_ = ch.Cancel("t")
		q.mu.Lock()
		t.Fatalf("a cancelled consumer stays on the queue (delivery after cancel: %t; consumers after a second Cancel: %d)", got, len(q.consumers))
	})
}
