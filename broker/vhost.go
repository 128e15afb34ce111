package broker

import (
	"crypto/rand"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
)

// vhost is a virtual host: its own exchanges, queues and bindings.
type vhost struct {
	b    *Broker
	name string

	mu        sync.RWMutex
	exchanges map[string]*exchange
	queues    map[string]*queue
}

var predeclared = []struct {
	name string
	kind ExchangeKind
}{
	{"amq.direct", Direct},
	{"amq.fanout", Fanout},
	{"amq.topic", Topic},
	{"amq.headers", Headers},
	{"amq.match", Headers},
}

func newVHost(b *Broker, name string) *vhost {
	vh := &vhost{
		b:         b,
		name:      name,
		exchanges: make(map[string]*exchange),
		queues:    make(map[string]*queue),
	}
	def := newExchange("", Direct, ExchangeOptions{Durable: true})
	def.isDefault = true
	vh.exchanges[""] = def
	for _, p := range predeclared {
		vh.exchanges[p.name] = newExchange(p.name, p.kind, ExchangeOptions{Durable: true})
	}
	return vh
}

// destroy deletes every queue, stopping their timers and cancelling their
// consumers.
func (vh *vhost) destroy() {
	vh.mu.Lock()
	queues := make([]*queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		queues = append(queues, q)
	}
	vh.mu.Unlock()
	for _, q := range queues {
		vh.deleteQueue(q)
	}
}

// ExchangeOptions are the flags and arguments of exchange.declare.
type ExchangeOptions struct {
	Durable    bool
	AutoDelete bool
	// Internal exchanges take messages only from other exchanges.
	Internal bool
	// Passive checks that the exchange exists (404 otherwise) and changes
	// nothing.
	Passive bool
	// Args: "alternate-exchange" names the exchange that takes the messages
	// this one cannot route.
	Args Table
}

func (vh *vhost) declareExchange(name string, kind ExchangeKind, opts ExchangeOptions) error {
	if opts.Passive {
		vh.mu.RLock()
		defer vh.mu.RUnlock()
		if _, ok := vh.exchanges[name]; !ok {
			return newError(NotFound, "no %s", vhostExchange(vh.name, name))
		}
		return nil
	}
	if err := checkName("exchange", name); err != nil {
		return err
	}
	if name == "" {
		return newError(AccessRefused, "operation not permitted on the default exchange")
	}
	if strings.HasPrefix(name, "amq.") {
		return newError(AccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", name)
	}
	if !kind.valid() {
		return newError(CommandInvalid, "invalid exchange type %s", kind)
	}
	if err := opts.Args.Validate(); err != nil {
		return newError(PreconditionFailed, "invalid arguments for %s: %v", vhostExchange(vh.name, name), err)
	}
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if x, ok := vh.exchanges[name]; ok {
		return x.equivalent(vh.name, kind, opts)
	}
	x := newExchange(name, kind, opts)
	if err := x.validateArgs(); err != nil {
		return err
	}
	vh.exchanges[name] = x
	return nil
}

func checkName(what, name string) error {
	if len(name) > maxNameLen {
		return newError(PreconditionFailed, "%s name is %d bytes long, more than %d", what, len(name), maxNameLen)
	}
	return nil
}

func (vh *vhost) deleteExchange(name string, ifUnused bool) error {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	x, ok := vh.exchanges[name]
	if !ok {
		return nil // RabbitMQ: deleting a missing exchange succeeds
	}
	if name == "" || strings.HasPrefix(name, "amq.") {
		return newError(AccessRefused, "operation not permitted on %s", vhostExchange(vh.name, name))
	}
	if ifUnused && len(x.out) > 0 {
		return newError(PreconditionFailed, "%s in use", vhostExchange(vh.name, name))
	}
	vh.removeExchangeLocked(x)
	return nil
}

// removeExchangeLocked deletes x and every binding it is part of.
// Lock should be held (vhost.mu).
func (vh *vhost) removeExchangeLocked(x *exchange) {
	delete(vh.exchanges, x.name)
	for _, b := range x.out {
		vh.unbindLocked(b)
	}
	for _, b := range x.in {
		vh.unbindLocked(b)
	}
}

// bind adds a binding from src to d. Lock should be held (vhost.mu).
func (vh *vhost) bindLocked(src *exchange, d dest, key string, args Table) error {
	if src.isDefault {
		return newError(AccessRefused, "operation not permitted on the default exchange")
	}
	if err := args.Validate(); err != nil {
		return newError(PreconditionFailed, "invalid binding arguments: %v", err)
	}
	id := bindingID(src.name, d, key, args)
	if _, ok := src.out[id]; ok {
		return nil
	}
	b := &binding{id: id, src: src, dst: d, key: key, args: args}
	if err := src.addRoute(b); err != nil {
		return err
	}
	src.out[id] = b
	src.hadBindings = true
	if d.q != nil {
		d.q.bindings[id] = b
	} else {
		d.x.in[id] = b
	}
	return nil
}

// unbindLocked removes b; an auto-delete source left without bindings is
// deleted. Lock should be held (vhost.mu).
func (vh *vhost) unbindLocked(b *binding) {
	src := b.src
	if _, ok := src.out[b.id]; !ok {
		return
	}
	delete(src.out, b.id)
	src.removeRoute(b)
	if b.dst.q != nil {
		delete(b.dst.q.bindings, b.id)
	} else {
		delete(b.dst.x.in, b.id)
	}
	if src.autoDelete && src.hadBindings && len(src.out) == 0 && vh.exchanges[src.name] == src {
		vh.removeExchangeLocked(src)
	}
}

// lookupDest finds a binding destination. Lock should be held (vhost.mu).
func (vh *vhost) lookupExchange(name string) (*exchange, error) {
	x, ok := vh.exchanges[name]
	if !ok {
		return nil, newError(NotFound, "no %s", vhostExchange(vh.name, name))
	}
	return x, nil
}

func (vh *vhost) lookupQueue(name string, conn *Conn) (*queue, error) {
	q, ok := vh.queues[name]
	if !ok {
		return nil, newError(NotFound, "no %s", vhostQueue(vh.name, name))
	}
	return q, q.checkOwner(conn)
}

func (vh *vhost) bindQueue(conn *Conn, qname, xname, key string, args Table, unbind bool) error {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	q, err := vh.lookupQueue(qname, conn)
	if err != nil {
		return err
	}
	x, err := vh.lookupExchange(xname)
	if err != nil {
		return err
	}
	return vh.bindOrUnbindLocked(x, dest{q: q}, key, args, unbind)
}

func (vh *vhost) bindExchange(dst, src, key string, args Table, unbind bool) error {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	d, err := vh.lookupExchange(dst)
	if err != nil {
		return err
	}
	s, err := vh.lookupExchange(src)
	if err != nil {
		return err
	}
	if d.isDefault {
		return newError(AccessRefused, "operation not permitted on the default exchange")
	}
	return vh.bindOrUnbindLocked(s, dest{x: d}, key, args, unbind)
}

func (vh *vhost) bindOrUnbindLocked(src *exchange, d dest, key string, args Table, unbind bool) error {
	if !unbind {
		return vh.bindLocked(src, d, key, args)
	}
	if src.isDefault {
		return newError(AccessRefused, "operation not permitted on the default exchange")
	}
	if b, ok := src.out[bindingID(src.name, d, key, args)]; ok {
		vh.unbindLocked(b)
	}
	return nil
}

// serverQueueName makes a server-named queue's name, as RabbitMQ's
// "amq.gen-" names.
func serverQueueName() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "amq.gen-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// QueueOptions are the flags and arguments of queue.declare.
type QueueOptions struct {
	Durable bool
	// Exclusive queues belong to the declaring connection and are deleted
	// when it closes; other connections get 405 RESOURCE_LOCKED.
	Exclusive bool
	// AutoDelete queues are deleted when their last consumer goes.
	AutoDelete bool
	// Passive checks that the queue exists (404 otherwise) and changes
	// nothing.
	Passive bool
	// Args: x-message-ttl, x-expires, x-max-length, x-max-length-bytes,
	// x-overflow, x-dead-letter-exchange, x-dead-letter-routing-key,
	// x-single-active-consumer, x-queue-mode, x-queue-type. See the package
	// documentation.
	Args Table
}

// QueueInfo is what queue.declare-ok reports.
type QueueInfo struct {
	Name string
	// Messages counts the ready messages (not those awaiting an ack).
	Messages  int
	Consumers int
}

func (vh *vhost) declareQueue(conn *Conn, name string, opts QueueOptions) (QueueInfo, error) {
	if opts.Passive {
		vh.mu.RLock()
		defer vh.mu.RUnlock()
		q, err := vh.lookupQueue(name, conn)
		if err != nil {
			return QueueInfo{}, err
		}
		return q.info(), nil
	}
	if err := checkName("queue", name); err != nil {
		return QueueInfo{}, err
	}
	if strings.HasPrefix(name, "amq.") {
		return QueueInfo{}, newError(AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
	}
	if name == "" {
		name = serverQueueName()
	}
	qa, err := parseQueueArgs(vh.name, name, opts)
	if err != nil {
		return QueueInfo{}, err
	}
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if q, ok := vh.queues[name]; ok {
		if err := q.checkOwner(conn); err != nil {
			return QueueInfo{}, err
		}
		if err := q.equivalent(opts, qa); err != nil {
			return QueueInfo{}, err
		}
		q.touch()
		return q.info(), nil
	}
	q := newQueue(vh, name, opts, qa)
	if opts.Exclusive {
		q.owner = conn
		if !conn.own(q) {
			return QueueInfo{}, closedError{}
		}
	}
	vh.queues[name] = q
	// Every queue is bound to the default exchange by its name; that
	// binding is implicit (routeDefault), as in RabbitMQ.
	q.start()
	return q.info(), nil
}

// deleteQueue removes q with its bindings, cancels its consumers and drops
// its messages. It returns the number of ready messages dropped.
func (vh *vhost) deleteQueue(q *queue) int {
	vh.mu.Lock()
	if vh.queues[q.name] != q {
		vh.mu.Unlock()
		return 0
	}
	delete(vh.queues, q.name)
	for _, b := range q.bindings {
		vh.unbindLocked(b)
	}
	vh.mu.Unlock()
	if q.owner != nil {
		q.owner.disown(q)
	}
	return q.shutdown()
}

// deleteQueueChecked is queue.delete with its if-unused / if-empty checks.
func (vh *vhost) deleteQueueChecked(conn *Conn, name string, opts QueueDeleteOptions) (int, error) {
	vh.mu.RLock()
	q, ok := vh.queues[name]
	vh.mu.RUnlock()
	if !ok {
		return 0, nil // RabbitMQ: deleting a missing queue succeeds
	}
	if err := q.checkOwner(conn); err != nil {
		return 0, err
	}
	if err := q.checkDeletable(opts); err != nil {
		return 0, err
	}
	return vh.deleteQueue(q), nil
}

// expireQueue deletes q if it is still unused after its x-expires period.
func (vh *vhost) expireQueue(q *queue, gen uint64) {
	if q.unusedSince(gen) {
		vh.deleteQueue(q)
	}
}

// maybeAutoDelete deletes an auto-delete queue that lost its last consumer.
func (vh *vhost) maybeAutoDelete(q *queue) {
	if q.autoDelete && q.abandoned() {
		vh.deleteQueue(q)
	}
}

// publish routes m from exchange xname and enqueues it. It reports how many
// queues took it and whether one refused it (x-overflow reject-publish).
func (vh *vhost) publish(xname string, m *Message) (routed int, refused bool, err error) {
	var dls deadLetters
	vh.mu.RLock()
	x, ok := vh.exchanges[xname]
	if !ok {
		vh.mu.RUnlock()
		return 0, false, newError(NotFound, "no %s", vhostExchange(vh.name, xname))
	}
	if x.internal {
		vh.mu.RUnlock()
		return 0, false, newError(AccessRefused, "cannot publish to internal %s", vhostExchange(vh.name, xname))
	}
	var buf [8]*queue
	qs := vh.route(x, m, buf[:0])
	for _, q := range qs {
		if !q.enqueue(m, &dls) {
			refused = true
		}
	}
	vh.mu.RUnlock()
	vh.flush(dls)
	return len(qs), refused, nil
}

// route returns the queues that m reaches from x, each once, following
// exchange-to-exchange bindings and alternate exchanges the way RabbitMQ's
// rabbit_exchange:route/2 does: a worklist of exchanges, each visited once;
// an exchange whose own bindings match nothing (not even another exchange)
// hands the message to its alternate exchange.
// Lock should be held (vhost.mu, read).
func (vh *vhost) route(x *exchange, m *Message, out []*queue) []*queue {
	var seenBuf, workBuf [4]*exchange
	seen := append(seenBuf[:0], x)
	work := append(workBuf[:0], x)
	headers := m.Properties().Headers
	for len(work) > 0 {
		cur := work[len(work)-1]
		work = work[:len(work)-1]
		matched := false
		visit := func(d dest) {
			matched = true
			switch {
			case d.q != nil:
				if !slices.Contains(out, d.q) {
					out = append(out, d.q)
				}
			case !slices.Contains(seen, d.x):
				seen = append(seen, d.x)
				work = append(work, d.x)
			}
		}
		if cur.isDefault {
			if q, ok := vh.queues[m.RoutingKey()]; ok {
				visit(dest{q: q})
			}
		} else {
			cur.match(m.RoutingKey(), headers, visit)
		}
		if !matched && cur.alternate != "" {
			if ae, ok := vh.exchanges[cur.alternate]; ok {
				visit(dest{x: ae})
			}
		}
	}
	return out
}
