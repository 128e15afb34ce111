package broker

import (
	"slices"
	"sync"
	"time"
)

// removal is why a message left a queue for good.
type removal uint8

const (
	removedAcked removal = iota + 1
	removedRejected
	removedExpired
	removedMaxLen
	removedPurged
	removedDeleted
	numRemovals
)

var removalReasons = [...]string{
	removedRejected: "rejected",
	removedExpired:  "expired",
	removedMaxLen:   "maxlen",
}

// queue is an AMQP queue. Fields above mu are fixed at declaration (or, for
// bindings, guarded by the vhost's mu).
type queue struct {
	vh         *vhost
	name       string
	durable    bool
	exclusive  bool
	autoDelete bool
	owner      *Conn
	args       Table
	qa         queueArgs
	bindings   map[string]*binding

	mu           sync.Mutex
	ready        storage
	nextSeq      uint64
	consumers    []*Consumer
	rr           int
	exclusiveC   *Consumer
	unacked      int
	deleted      bool
	hadConsumers bool
	ttlTimer     *time.Timer
	ttlAt        int64
	expTimer     *time.Timer
	useGen       uint64
	enqueued     uint64
	removed      [numRemovals]uint64
}

func newQueue(vh *vhost, name string, opts QueueOptions, qa queueArgs) *queue {
	return &queue{
		vh:         vh,
		name:       name,
		durable:    opts.Durable,
		exclusive:  opts.Exclusive,
		autoDelete: opts.AutoDelete,
		args:       opts.Args,
		qa:         qa,
		bindings:   make(map[string]*binding),
		ready:      &ring{},
	}
}

// start arms the x-expires timer of a new queue.
func (q *queue) start() {
	q.mu.Lock()
	q.armExpiryLocked()
	q.mu.Unlock()
}

func (q *queue) info() QueueInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueInfo{Name: q.name, Messages: q.ready.Len(), Consumers: len(q.consumers)}
}

func (q *queue) checkOwner(conn *Conn) error {
	if q.exclusive && q.owner != conn {
		return newError(ResourceLocked, "cannot obtain exclusive access to locked %s. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", vhostQueue(q.vh.name, q.name))
	}
	return nil
}

// equivalent checks a redeclaration against q, as RabbitMQ does.
func (q *queue) equivalent(opts QueueOptions, qa queueArgs) error {
	where := vhostQueue(q.vh.name, q.name)
	switch {
	case opts.Durable != q.durable:
		return newError(PreconditionFailed, "inequivalent arg 'durable' for %s: received '%t' but current is '%t'", where, opts.Durable, q.durable)
	case opts.AutoDelete != q.autoDelete:
		return newError(PreconditionFailed, "inequivalent arg 'auto_delete' for %s: received '%t' but current is '%t'", where, opts.AutoDelete, q.autoDelete)
	case opts.Exclusive != q.exclusive:
		return newError(ResourceLocked, "cannot obtain exclusive access to locked %s. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", where)
	}
	for _, k := range checkedArgs {
		got, gok := normalizedArg(opts.Args, k)
		cur, cok := normalizedArg(q.args, k)
		if gok != cok || (gok && !valuesEqual(got, cur)) {
			return newError(PreconditionFailed, "inequivalent arg '%s' for %s: received '%v' but current is '%v'", k, where, orNone(got, gok), orNone(cur, cok))
		}
	}
	return nil
}

// normalizedArg treats an absent x-queue-type or x-queue-mode as its
// default, so "classic" and nothing are equivalent.
func normalizedArg(t Table, k string) (any, bool) {
	v, ok := t[k]
	if !ok {
		switch k {
		case "x-queue-type":
			return "classic", true
		case "x-queue-mode":
			return "default", true
		}
	}
	return v, ok
}

func orNone(v any, ok bool) any {
	if !ok {
		return "none"
	}
	return v
}

// touch records a use for x-expires. Lock should not be held.
func (q *queue) touch() {
	q.mu.Lock()
	q.armExpiryLocked()
	q.mu.Unlock()
}

// armExpiryLocked restarts the x-expires period. Lock should be held.
func (q *queue) armExpiryLocked() {
	q.useGen++
	if q.qa.expires == 0 || q.deleted || len(q.consumers) > 0 {
		return
	}
	gen := q.useGen
	if q.expTimer != nil {
		q.expTimer.Stop()
	}
	q.expTimer = time.AfterFunc(q.qa.expires, func() { q.vh.expireQueue(q, gen) })
}

// unusedSince reports whether nothing used q since generation gen.
func (q *queue) unusedSince(gen uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.deleted && q.useGen == gen && len(q.consumers) == 0
}

// abandoned reports whether q had consumers and has none left.
func (q *queue) abandoned() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.deleted && q.hadConsumers && len(q.consumers) == 0
}

// deadline computes when a message enqueued now expires (0: never). It
// reads the clock only for a message that can expire.
func (q *queue) deadline(m *Message) int64 {
	ttl, has := q.qa.ttl, q.qa.hasTTL
	if mttl, ok, _ := m.expiration(); ok && (!has || mttl < ttl) {
		ttl, has = mttl, true
	}
	if !has {
		return 0
	}
	return time.Now().Add(ttl).UnixNano()
}

// enqueue adds a published message; false when x-overflow refused it.
func (q *queue) enqueue(m *Message, dls *deadLetters) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return true
	}
	e := entry{msg: m, deadline: q.deadline(m)}
	if q.refusesLocked(m) {
		if q.qa.overflow == RejectPublishDLX {
			q.enqueued++
			q.deadLetterLocked(e, removedMaxLen, dls)
		}
		return false
	}
	// A refused message takes no seq, so that the ready messages' seqs
	// stay consecutive (the ring then implies them).
	e.seq = q.nextSeq
	q.nextSeq++
	q.enqueued++
	// Fast path: hand the message straight to a consumer that can take it.
	if q.ready.Len() == 0 {
		if c := q.pickLocked(); c != nil {
			q.deliverLocked(c, e)
			return true
		}
	}
	q.ready.Push(e)
	q.dropHeadLocked(dls)
	q.dispatchLocked(dls)
	return true
}

// refusesLocked reports whether reject-publish overflow refuses m.
// Lock should be held.
func (q *queue) refusesLocked(m *Message) bool {
	if q.qa.overflow == DropHead {
		return false
	}
	return (q.qa.maxLen >= 0 && int64(q.ready.Len()) >= q.qa.maxLen) ||
		(q.qa.maxBytes >= 0 && q.ready.Bytes()+m.size() > q.qa.maxBytes)
}

// dropHeadLocked enforces x-max-length(-bytes) with drop-head.
// Lock should be held.
func (q *queue) dropHeadLocked(dls *deadLetters) {
	if q.qa.overflow != DropHead {
		return
	}
	for (q.qa.maxLen >= 0 && int64(q.ready.Len()) > q.qa.maxLen) ||
		(q.qa.maxBytes >= 0 && q.ready.Bytes() > q.qa.maxBytes) {
		e, _ := q.ready.Pop()
		q.deadLetterLocked(e, removedMaxLen, dls)
	}
}

// dispatchLocked delivers ready messages to consumers with credit and
// expires the messages that reach the head past their deadline, as
// RabbitMQ does. Lock should be held.
func (q *queue) dispatchLocked(dls *deadLetters) {
	var now int64
	for {
		head, ok := q.ready.Peek()
		if !ok {
			break
		}
		if head.deadline != 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if head.deadline <= now {
				q.ready.Pop()
				q.deadLetterLocked(head, removedExpired, dls)
				continue
			}
		}
		c := q.pickLocked()
		if c == nil {
			break
		}
		q.ready.Pop()
		q.deliverLocked(c, head)
	}
	q.armTTLLocked()
}

// armTTLLocked makes sure a timer expires the head on time.
// Lock should be held.
func (q *queue) armTTLLocked() {
	head, ok := q.ready.Peek()
	if !ok || head.deadline == 0 || q.deleted || (q.ttlAt != 0 && q.ttlAt <= head.deadline) {
		return
	}
	q.ttlAt = head.deadline
	d := time.Duration(head.deadline - time.Now().UnixNano())
	if q.ttlTimer == nil {
		q.ttlTimer = time.AfterFunc(d, q.onTTL)
	} else {
		q.ttlTimer.Reset(d)
	}
}

func (q *queue) onTTL() {
	var dls deadLetters
	q.mu.Lock()
	q.ttlAt = 0
	if !q.deleted {
		q.dispatchLocked(&dls)
	}
	q.mu.Unlock()
	q.vh.flush(dls)
}

// pickLocked returns the next consumer in round-robin order that can take
// a message now, with its credit taken. Lock should be held.
func (q *queue) pickLocked() *Consumer {
	n := len(q.consumers)
	if n == 0 {
		return nil
	}
	if q.qa.sac {
		if c := q.consumers[0]; c.takeCredit(q.vh.b.opts.consumerWindow) {
			return c
		}
		return nil
	}
	for i := range n {
		idx := (q.rr + i) % n
		if c := q.consumers[idx]; c.takeCredit(q.vh.b.opts.consumerWindow) {
			q.rr = (idx + 1) % n
			return c
		}
	}
	return nil
}

// deliverLocked hands e to c, which has credit. Lock should be held.
func (q *queue) deliverLocked(c *Consumer, e entry) {
	e.deliveries++
	d := Delivery{Message: e.msg, ConsumerTag: c.tag, Redelivered: e.deliveries > 1}
	if c.noAck {
		q.removed[removedAcked]++
	} else {
		tag, ok := c.ch.track(q, c, e)
		if !ok { // the channel closed under us: c is going away
			c.dead.Store(true)
			c.ch.release()
			e.deliveries--
			q.ready.Insert(e)
			return
		}
		d.DeliveryTag = tag
		c.unacked++
		q.unacked++
	}
	c.push(d)
}

// get is basic.get.
func (q *queue) get(ch *Channel, noAck bool) (Delivery, bool, error) {
	var dls deadLetters
	defer func() { q.vh.flush(dls) }()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return Delivery{}, false, newError(NotFound, "no %s", vhostQueue(q.vh.name, q.name))
	}
	q.armExpiryLocked()
	q.dispatchLocked(&dls) // expires heads past their deadline
	e, ok := q.ready.Pop()
	if !ok {
		return Delivery{}, false, nil
	}
	e.deliveries++
	d := Delivery{Message: e.msg, Redelivered: e.deliveries > 1, MessageCount: q.ready.Len()}
	if noAck {
		q.removed[removedAcked]++
	} else {
		tag, ok := ch.track(q, nil, e)
		if !ok {
			e.deliveries--
			q.ready.Insert(e)
			return Delivery{}, false, ch.closedErr()
		}
		d.DeliveryTag = tag
		q.unacked++
	}
	q.armTTLLocked()
	return d, true, nil
}

// settleAction is what an ack, nack or reject does to a delivery.
type settleAction uint8

const (
	settleAck settleAction = iota + 1
	settleRequeue
	settleReject
)

// settle applies an ack, requeue or reject to deliveries from q.
func (q *queue) settle(ps []pending, action settleAction) {
	var dls deadLetters
	q.mu.Lock()
	for _, p := range ps {
		if p.c != nil {
			p.c.unacked--
		}
		q.unacked--
		if q.deleted {
			continue
		}
		switch action {
		case settleAck:
			q.removed[removedAcked]++
		case settleRequeue:
			q.ready.Insert(p.e)
		case settleReject:
			q.deadLetterLocked(p.e, removedRejected, &dls)
		}
	}
	if !q.deleted {
		q.dispatchLocked(&dls)
	}
	q.mu.Unlock()
	q.vh.flush(dls)
}

// kick retries delivery after a consumer gained room or credit.
func (q *queue) kick() {
	var dls deadLetters
	q.mu.Lock()
	if !q.deleted {
		q.dispatchLocked(&dls)
	}
	q.mu.Unlock()
	q.vh.flush(dls)
}

func (q *queue) addConsumer(c *Consumer) error {
	var dls deadLetters
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return newError(NotFound, "no %s", vhostQueue(q.vh.name, q.name))
	}
	if c.dead.Load() {
		// Cancelled, or its channel closed, while Consume ran: the removal
		// looked for it before it was added, so it must not be added now.
		q.mu.Unlock()
		return ErrCancelled
	}
	if q.exclusiveC != nil || (c.exclusive && len(q.consumers) > 0) {
		q.mu.Unlock()
		return newError(AccessRefused, "%s in exclusive use", vhostQueue(q.vh.name, q.name))
	}
	if c.exclusive {
		q.exclusiveC = c
	}
	q.consumers = append(q.consumers, c)
	q.hadConsumers = true
	q.useGen++ // a consumer keeps the queue in use: x-expires waits
	q.dispatchLocked(&dls)
	q.mu.Unlock()
	q.vh.flush(dls)
	return nil
}

func (q *queue) removeConsumer(c *Consumer) {
	var dls deadLetters
	q.mu.Lock()
	i := slices.Index(q.consumers, c)
	if i < 0 {
		q.mu.Unlock()
		return
	}
	q.consumers = slices.Delete(q.consumers, i, i+1)
	if q.rr > i {
		q.rr--
	}
	if q.rr >= len(q.consumers) {
		q.rr = 0
	}
	if q.exclusiveC == c {
		q.exclusiveC = nil
	}
	if len(q.consumers) == 0 {
		q.armExpiryLocked()
	}
	q.dispatchLocked(&dls) // with single-active-consumer, the next takes over
	q.mu.Unlock()
	q.vh.flush(dls)
	q.vh.maybeAutoDelete(q)
}

func (q *queue) checkDeletable(opts QueueDeleteOptions) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if opts.IfUnused && len(q.consumers) > 0 {
		return newError(PreconditionFailed, "%s in use", vhostQueue(q.vh.name, q.name))
	}
	if opts.IfEmpty && q.ready.Len() > 0 {
		return newError(PreconditionFailed, "%s not empty", vhostQueue(q.vh.name, q.name))
	}
	return nil
}

func (q *queue) purge() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.drainLocked(removedPurged)
}

// drainLocked removes every ready message. Lock should be held.
func (q *queue) drainLocked(why removal) int {
	n := 0
	for {
		if _, ok := q.ready.Pop(); !ok {
			break
		}
		q.removed[why]++
		n++
	}
	return n
}

// shutdown marks q deleted, drops its messages and cancels its consumers.
// It returns the number of ready messages dropped.
func (q *queue) shutdown() int {
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return 0
	}
	q.deleted = true
	n := q.drainLocked(removedDeleted)
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	if q.expTimer != nil {
		q.expTimer.Stop()
	}
	consumers := q.consumers
	q.consumers = nil
	q.mu.Unlock()
	cause := newError(NotFound, "%s was deleted", vhostQueue(q.vh.name, q.name))
	for _, c := range consumers {
		c.ch.forgetConsumer(c)
		c.cancel(cause)
	}
	return n
}
