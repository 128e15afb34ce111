package broker

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// AckFlags modify Ack, Nack and Reject.
type AckFlags uint8

const (
	// Multiple settles every outstanding delivery up to and including the
	// tag (all of them when the tag is 0). Reject ignores it.
	Multiple AckFlags = 1 << iota
	// Requeue puts nacked or rejected messages back in their queue, at
	// their place, marked redelivered. Without it they are dead-lettered
	// (or dropped when the queue has no dead-letter exchange).
	Requeue
)

// PublishOptions are the flags of basic.publish.
type PublishOptions struct {
	// Mandatory messages that reach no queue are handed back to the
	// publisher's return handler (NotifyReturn) with 312 NO_ROUTE.
	Mandatory bool
}

// QosOptions are basic.qos's.
type QosOptions struct {
	// PrefetchCount limits unacknowledged deliveries: per consumer created
	// after the call, or, with Global, shared by all consumers of the
	// channel (RabbitMQ's reading of the flag). 0 means no limit.
	PrefetchCount int
	// PrefetchSize must be 0: RabbitMQ does not implement it either.
	PrefetchSize uint32
	Global       bool
}

// QueueDeleteOptions are queue.delete's flags.
type QueueDeleteOptions struct {
	// IfUnused refuses (406) to delete a queue that has consumers.
	IfUnused bool
	// IfEmpty refuses (406) to delete a queue that has ready messages.
	IfEmpty bool
}

// ExchangeDeleteOptions are exchange.delete's flags.
type ExchangeDeleteOptions struct {
	// IfUnused refuses (406) to delete an exchange that has bindings.
	IfUnused bool
}

// GetOptions are basic.get's flags.
type GetOptions struct {
	NoAck bool
}

// Channel is an AMQP channel: the unit of publishing, consuming and
// acknowledging. A protocol error (404, 406, ...) closes the channel as in
// AMQP; later calls return an error wrapping ErrClosed and the cause. All
// methods are safe for concurrent use, and none blocks on a consumer.
type Channel struct {
	conn *Conn
	id   uint64

	isClosed       atomic.Bool
	inflight       atomic.Int64 // consumer deliveries awaiting an ack
	globalPrefetch atomic.Int64
	globalStalled  atomic.Bool

	mu         sync.Mutex
	cause      error
	pend       pendings
	nextTag    uint64
	consumers  map[string]*Consumer
	prefetch   int
	confirm    bool
	publishSeq uint64
	onConfirm  func(Confirmation)
	onReturn   func(Return)
	// headers interns the headers of messages published without
	// properties (headerForLocked); lastHeader is the latest one used.
	headers    map[headerKey]*header
	lastHeader *header
}

func newChannel(c *Conn, id uint64) *Channel {
	return &Channel{conn: c, id: id, consumers: make(map[string]*Consumer)}
}

// ID returns the channel's number on its connection.
func (ch *Channel) ID() uint64 { return ch.id }

func (ch *Channel) closedErr() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return closedError{ch.cause}
}

func (ch *Channel) check() error {
	if ch.isClosed.Load() {
		return ch.closedErr()
	}
	return nil
}

// fail closes the channel (or, for a hard error, the connection) when err
// is a protocol error, and returns err.
func (ch *Channel) fail(err error) error {
	e, ok := errors.AsType[*Error](err)
	switch {
	case !ok:
	case e.Code.Hard():
		ch.conn.closeWith(e)
	default:
		ch.closeWith(e)
	}
	return err
}

// Close closes the channel: its consumers are cancelled and its
// unacknowledged messages requeued. Idempotent.
func (ch *Channel) Close() error {
	ch.closeWith(nil)
	return nil
}

func (ch *Channel) closeWith(cause error) {
	ch.mu.Lock()
	if ch.isClosed.Load() {
		ch.mu.Unlock()
		return
	}
	ch.isClosed.Store(true)
	ch.cause = cause
	consumers := make([]*Consumer, 0, len(ch.consumers))
	for _, c := range ch.consumers {
		consumers = append(consumers, c)
	}
	ch.consumers = nil
	ps := ch.pend.takeAll()
	ch.mu.Unlock()
	for _, c := range consumers {
		c.dead.Store(true)
	}
	for _, c := range consumers {
		c.q.removeConsumer(c)
		c.cancel(closedError{cause})
	}
	ch.apply(ps, settleRequeue)
	ch.conn.forgetChannel(ch)
}

// ExchangeDeclare declares an exchange (exchange.declare). Redeclaring with
// other properties is a 406 error; names starting "amq." are reserved (403).
func (ch *Channel) ExchangeDeclare(name string, kind ExchangeKind, opts ExchangeOptions) error {
	if err := ch.check(); err != nil {
		return err
	}
	return ch.fail(ch.conn.vh.declareExchange(name, kind, opts))
}

// ExchangeDelete deletes an exchange and its bindings. Deleting a missing
// exchange succeeds, as in RabbitMQ.
func (ch *Channel) ExchangeDelete(name string, opts ExchangeDeleteOptions) error {
	if err := ch.check(); err != nil {
		return err
	}
	return ch.fail(ch.conn.vh.deleteExchange(name, opts.IfUnused))
}

// ExchangeBind binds exchange dst to exchange src (exchange.bind, a
// RabbitMQ extension): messages routed by src with a matching key flow on
// into dst.
func (ch *Channel) ExchangeBind(dst, src, key string, args Table) error {
	if err := ch.check(); err != nil {
		return err
	}
	return ch.fail(ch.conn.vh.bindExchange(dst, src, key, args, false))
}

// ExchangeUnbind removes an exchange-to-exchange binding; a missing binding
// is not an error.
func (ch *Channel) ExchangeUnbind(dst, src, key string, args Table) error {
	if err := ch.check(); err != nil {
		return err
	}
	return ch.fail(ch.conn.vh.bindExchange(dst, src, key, args, true))
}

// QueueDeclare declares a queue (queue.declare); an empty name asks the
// broker for a unique one. Redeclaring with other properties is an error.
func (ch *Channel) QueueDeclare(name string, opts QueueOptions) (QueueInfo, error) {
	if err := ch.check(); err != nil {
		return QueueInfo{}, err
	}
	info, err := ch.conn.vh.declareQueue(ch.conn, name, opts)
	return info, ch.fail(err)
}

// QueueBind binds a queue to an exchange with a routing key (a pattern for
// topic exchanges) and arguments (x-match and values for headers
// exchanges). Binding twice is harmless.
func (ch *Channel) QueueBind(queue, exchange, key string, args Table) error {
	if err := ch.check(); err != nil {
		return err
	}
	return ch.fail(ch.conn.vh.bindQueue(ch.conn, queue, exchange, key, args, false))
}

// QueueUnbind removes a binding; a missing binding is not an error.
func (ch *Channel) QueueUnbind(queue, exchange, key string, args Table) error {
	if err := ch.check(); err != nil {
		return err
	}
	return ch.fail(ch.conn.vh.bindQueue(ch.conn, queue, exchange, key, args, true))
}

// QueuePurge drops a queue's ready messages and returns how many.
func (ch *Channel) QueuePurge(name string) (int, error) {
	q, err := ch.queue(name)
	if err != nil {
		return 0, err
	}
	return q.purge(), nil
}

// QueueDelete deletes a queue, cancelling its consumers, and returns the
// number of ready messages it dropped. Deleting a missing queue succeeds.
func (ch *Channel) QueueDelete(name string, opts QueueDeleteOptions) (int, error) {
	if err := ch.check(); err != nil {
		return 0, err
	}
	n, err := ch.conn.vh.deleteQueueChecked(ch.conn, name, opts)
	return n, ch.fail(err)
}

// queue looks a queue up for an operation on it (404, 405 on failure).
func (ch *Channel) queue(name string) (*queue, error) {
	if err := ch.check(); err != nil {
		return nil, err
	}
	vh := ch.conn.vh
	vh.mu.RLock()
	q, err := vh.lookupQueue(name, ch.conn)
	vh.mu.RUnlock()
	return q, ch.fail(err)
}

// Qos sets prefetch limits (basic.qos).
func (ch *Channel) Qos(opts QosOptions) error {
	if err := ch.check(); err != nil {
		return err
	}
	if opts.PrefetchSize != 0 {
		return ch.fail(newError(NotImplemented, "prefetch_size!=0 (%d)", opts.PrefetchSize))
	}
	if opts.PrefetchCount < 0 || opts.PrefetchCount > 65535 {
		return ch.fail(newError(PreconditionFailed, "prefetch_count %d out of range 0..65535", opts.PrefetchCount))
	}
	if opts.Global {
		ch.globalPrefetch.Store(int64(opts.PrefetchCount))
		ch.kickAll()
		return nil
	}
	ch.mu.Lock()
	ch.prefetch = opts.PrefetchCount
	ch.mu.Unlock()
	return nil
}

// Confirm puts the channel in publisher-confirm mode (confirm.select): each
// Publish then gets a sequence number, and fn is called once per published
// message, in the publisher's goroutine before Publish returns for this
// in-memory broker (a durable store will confirm later, from its own
// goroutine). fn must not block for long.
func (ch *Channel) Confirm(fn func(Confirmation)) error {
	if err := ch.check(); err != nil {
		return err
	}
	ch.mu.Lock()
	ch.confirm, ch.onConfirm = true, fn
	ch.mu.Unlock()
	return nil
}

// NotifyReturn sets the handler of unroutable mandatory messages
// (basic.return). It is called in the publisher's goroutine, before the
// message's confirm.
func (ch *Channel) NotifyReturn(fn func(Return)) {
	ch.mu.Lock()
	ch.onReturn = fn
	ch.mu.Unlock()
}

// Publish routes a message (basic.publish). It returns the message's
// publish sequence number in confirm mode, else 0. Publishing to a missing
// exchange (404) or an internal one (403) closes the channel. The broker
// takes ownership of msg.Body and msg.Headers.
func (ch *Channel) Publish(exchange, key string, msg Publishing, opts PublishOptions) (uint64, error) {
	if err := ch.check(); err != nil {
		return 0, err
	}
	if len(msg.Body) > ch.conn.b.opts.maxMessageSize {
		return 0, ch.fail(newError(PreconditionFailed, "message size %d is larger than configured max size %d", len(msg.Body), ch.conn.b.opts.maxMessageSize))
	}
	hasProps := !msg.Properties.isZero()
	if hasProps {
		if _, _, err := parseExpiration(msg.Properties.Expiration); err != nil {
			return 0, ch.fail(err)
		}
		if err := msg.Properties.Headers.Validate(); err != nil {
			return 0, ch.fail(newError(PreconditionFailed, "invalid headers: %v", err))
		}
	}
	ch.mu.Lock()
	confirm, onConfirm, onReturn := ch.confirm, ch.onConfirm, ch.onReturn
	var seq uint64
	if confirm {
		ch.publishSeq++
		seq = ch.publishSeq
	}
	var hdr *header
	if !hasProps {
		hdr = ch.headerForLocked(exchange, key)
	}
	ch.mu.Unlock()
	var m *Message
	if hasProps {
		m = newMessage(exchange, key, &msg.Properties, msg.Body)
	} else {
		m = &Message{hdr: hdr, Body: msg.Body}
	}
	routed, refused, err := ch.conn.vh.publish(exchange, m)
	if err != nil {
		return 0, ch.fail(err)
	}
	if routed == 0 && opts.Mandatory && onReturn != nil {
		onReturn(Return{ReplyCode: NoRoute, ReplyText: NoRoute.String(), Message: m})
	}
	if confirm && onConfirm != nil {
		onConfirm(Confirmation{DeliveryTag: seq, Ack: !refused})
	}
	return seq, nil
}

// Consume starts a consumer on a queue (basic.consume).
func (ch *Channel) Consume(queue string, opts ConsumeOptions) (*Consumer, error) {
	q, err := ch.queue(queue)
	if err != nil {
		return nil, err
	}
	tag := opts.Tag
	if tag == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		tag = "amq.ctag-" + base64.RawURLEncoding.EncodeToString(b[:])
	}
	ch.mu.Lock()
	if ch.isClosed.Load() {
		ch.mu.Unlock()
		return nil, ch.closedErr()
	}
	if _, dup := ch.consumers[tag]; dup {
		ch.mu.Unlock()
		return nil, ch.fail(newError(NotAllowed, "attempt to reuse consumer tag '%s'", tag))
	}
	c := newConsumer(ch, q, tag, opts, ch.prefetch)
	ch.consumers[tag] = c
	ch.mu.Unlock()
	if err := q.addConsumer(c); err != nil {
		ch.forgetConsumer(c)
		if errors.Is(err, ErrCancelled) && ch.isClosed.Load() {
			return nil, ch.closedErr()
		}
		return nil, ch.fail(err)
	}
	return c, nil
}

// Cancel cancels a consumer by tag (basic.cancel); an unknown tag is not an
// error.
func (ch *Channel) Cancel(tag string) error {
	if err := ch.check(); err != nil {
		return err
	}
	ch.mu.Lock()
	c, ok := ch.consumers[tag]
	delete(ch.consumers, tag)
	ch.mu.Unlock()
	if ok {
		// Marked first, so that a Consume still on its way into the queue
		// (addConsumer) refuses it instead of adding it after this removal.
		c.dead.Store(true)
		c.q.removeConsumer(c)
		c.cancel(nil)
	}
	return nil
}

func (ch *Channel) forgetConsumer(c *Consumer) {
	ch.mu.Lock()
	if ch.consumers[c.tag] == c {
		delete(ch.consumers, c.tag)
	}
	ch.mu.Unlock()
}

// Get fetches one message (basic.get); ok is false when the queue is
// empty. Prefetch limits do not apply.
func (ch *Channel) Get(queue string, opts GetOptions) (d Delivery, ok bool, err error) {
	q, err := ch.queue(queue)
	if err != nil {
		return Delivery{}, false, err
	}
	d, ok, err = q.get(ch, opts.NoAck)
	return d, ok, ch.fail(err)
}

// Ack acknowledges a delivery (basic.ack), or with Multiple all up to tag.
// An unknown tag is a 406 error that closes the channel.
func (ch *Channel) Ack(tag uint64, flags AckFlags) error {
	return ch.settleTags(tag, flags&Multiple != 0, settleAck)
}

// Nack refuses deliveries (basic.nack): requeued with Requeue, else
// dead-lettered.
func (ch *Channel) Nack(tag uint64, flags AckFlags) error {
	return ch.settleTags(tag, flags&Multiple != 0, requeueOrReject(flags))
}

// Reject refuses one delivery (basic.reject): requeued with Requeue, else
// dead-lettered.
func (ch *Channel) Reject(tag uint64, flags AckFlags) error {
	return ch.settleTags(tag, false, requeueOrReject(flags))
}

func requeueOrReject(flags AckFlags) settleAction {
	if flags&Requeue != 0 {
		return settleRequeue
	}
	return settleReject
}

// Recover requeues every unacknowledged delivery of the channel
// (basic.recover with requeue, the form RabbitMQ supports).
func (ch *Channel) Recover() error {
	if err := ch.check(); err != nil {
		return err
	}
	ch.mu.Lock()
	ps := ch.pend.takeAll()
	ch.mu.Unlock()
	ch.apply(ps, settleRequeue)
	return nil
}

func (ch *Channel) settleTags(tag uint64, multiple bool, action settleAction) error {
	ch.mu.Lock()
	if ch.isClosed.Load() {
		ch.mu.Unlock()
		return ch.closedErr()
	}
	if !multiple {
		p, ok := ch.pend.take(tag)
		ch.mu.Unlock()
		if !ok {
			return ch.fail(newError(PreconditionFailed, "unknown delivery tag %d", tag))
		}
		ch.apply([]pending{p}, action)
		return nil
	}
	ps := ch.pend.takeUpTo(tag)
	ch.mu.Unlock()
	if len(ps) == 0 && tag != 0 {
		return ch.fail(newError(PreconditionFailed, "unknown delivery tag %d", tag))
	}
	ch.apply(ps, action)
	return nil
}

// apply settles deliveries queue by queue, keeping their order, then gives
// back their channel-wide credit.
func (ch *Channel) apply(ps []pending, action settleAction) {
	credit := 0
	for len(ps) > 0 {
		q := ps[0].q
		n := 1
		for n < len(ps) && ps[n].q == q {
			n++
		}
		q.settle(ps[:n], action)
		for _, p := range ps[:n] {
			if p.c != nil {
				credit++
			}
		}
		ps = ps[n:]
	}
	if credit > 0 {
		ch.inflight.Add(-int64(credit))
		if ch.globalStalled.Load() && ch.globalStalled.CompareAndSwap(true, false) {
			ch.kickAll()
		}
	}
}

// reserve takes one unit of channel-wide prefetch credit.
func (ch *Channel) reserve() bool {
	for {
		n := ch.inflight.Load()
		if limit := ch.globalPrefetch.Load(); limit > 0 && n >= limit {
			ch.globalStalled.Store(true)
			if ch.inflight.Load() >= limit {
				return false
			}
			continue
		}
		if ch.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release gives back credit taken by reserve without kicking queues: the
// caller holds a queue's lock.
func (ch *Channel) release() { ch.inflight.Add(-1) }

// kickAll retries delivery on every queue this channel consumes from.
func (ch *Channel) kickAll() {
	ch.mu.Lock()
	queues := make([]*queue, 0, len(ch.consumers))
	for _, c := range ch.consumers {
		if !slices.Contains(queues, c.q) {
			queues = append(queues, c.q)
		}
	}
	ch.mu.Unlock()
	for _, q := range queues {
		q.kick()
	}
}

// maxInternedHeaders bounds a channel's interned headers. A publisher that
// uses more (exchange, routing key) pairs than this starts over.
const maxInternedHeaders = 256

// headerKey identifies an interned header.
type headerKey struct{ exchange, routingKey string }

// headerForLocked returns the shared header of the messages without
// properties that ch publishes to exchange with key. Publishers repeat
// their exchanges and routing keys, so sharing saves each message the
// header's allocation. Lock should be held (ch.mu).
func (ch *Channel) headerForLocked(exchange, key string) *header {
	if h := ch.lastHeader; h != nil && h.exchange == exchange && h.routingKey == key {
		return h
	}
	k := headerKey{exchange, key}
	h, ok := ch.headers[k]
	if !ok {
		if ch.headers == nil || len(ch.headers) >= maxInternedHeaders {
			ch.headers = make(map[headerKey]*header)
		}
		h = &header{exchange: exchange, routingKey: key}
		ch.headers[k] = h
	}
	ch.lastHeader = h
	return h
}

// track records an unacknowledged delivery and returns its tag; false
// when the channel is closed. Lock order: queue.mu may be held.
func (ch *Channel) track(q *queue, c *Consumer, e entry) (uint64, bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.isClosed.Load() {
		return 0, false
	}
	ch.nextTag++
	ch.pend.add(pending{tag: ch.nextTag, q: q, c: c, e: e})
	return ch.nextTag, true
}

// pending is an unacknowledged delivery.
type pending struct {
	tag  uint64
	q    *queue
	c    *Consumer // nil for basic.get
	e    entry
	done bool
}

// pendings are a channel's unacknowledged deliveries in tag order. Settled
// entries in the middle are tombstones, swept when they pile up.
type pendings struct {
	list []pending
	head int
	live int
}

func (p *pendings) add(x pending) {
	if len(p.list) == cap(p.list) && p.head >= len(p.list)/2 {
		// Reuse the settled prefix instead of growing, when it is at least
		// half of the list: the copy is then paid for by as many adds.
		n := copy(p.list, p.list[p.head:])
		clear(p.list[n:])
		p.list, p.head = p.list[:n], 0
	}
	p.list = append(p.list, x)
	p.live++
}

// take settles one tag.
func (p *pendings) take(tag uint64) (pending, bool) {
	rest := p.list[p.head:]
	i := sort.Search(len(rest), func(i int) bool { return rest[i].tag >= tag })
	if i == len(rest) || rest[i].tag != tag || rest[i].done {
		return pending{}, false
	}
	x := rest[i]
	rest[i] = pending{tag: tag, done: true}
	p.live--
	p.sweep()
	return x, true
}

// takeUpTo settles every tag <= tag (all when tag is 0).
func (p *pendings) takeUpTo(tag uint64) []pending {
	var out []pending
	for i := p.head; i < len(p.list) && (tag == 0 || p.list[i].tag <= tag); i++ {
		if !p.list[i].done {
			out = append(out, p.list[i])
			p.list[i] = pending{tag: p.list[i].tag, done: true}
			p.live--
		}
	}
	p.sweep()
	return out
}

func (p *pendings) takeAll() []pending {
	out := p.takeUpTo(0)
	*p = pendings{}
	return out
}

// sweep drops settled entries from the front, and compacts the list when
// tombstones outnumber live entries.
func (p *pendings) sweep() {
	for p.head < len(p.list) && p.list[p.head].done {
		p.list[p.head] = pending{}
		p.head++
	}
	if p.head == len(p.list) {
		p.list, p.head = p.list[:0], 0
		return
	}
	if n := len(p.list) - p.head; n >= 64 && n > 2*p.live {
		kept := p.list[:0]
		for _, x := range p.list[p.head:] {
			if !x.done {
				kept = append(kept, x)
			}
		}
		clear(p.list[len(kept):])
		p.list, p.head = kept, 0
	}
}
