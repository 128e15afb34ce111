package broker

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Lock ordering (a lock may be taken while holding only those above it):
//
//	Broker.mu
//	vhost.mu
//	queue.mu
//	Channel.mu, Conn.mu
//	Consumer.mu
//
// Dead letters produced under queue.mu are routed only after it is released.

// DefaultVHost is the virtual host every Broker starts with.
const DefaultVHost = "/"

// Broker is the bundled routing broker: RabbitMQ's model (vhosts, exchanges,
// queues, bindings, consumers) in memory. It is safe for concurrent use.
// Clients reach it through a Conn and its Channels, which mirror AMQP 0-9-1's
// connection and channel.
type Broker struct {
	opts   options
	connID atomic.Uint64

	mu     sync.Mutex
	vhosts map[string]*vhost
	conns  map[*Conn]struct{}
	closed bool
}

// New returns a running broker with the default vhost "/" and its
// predeclared exchanges (amq.direct, amq.fanout, amq.topic, amq.headers,
// amq.match).
func New(opts ...Option) *Broker {
	b := &Broker{
		opts:   defaultOptions(),
		vhosts: make(map[string]*vhost),
		conns:  make(map[*Conn]struct{}),
	}
	for _, o := range opts {
		o.apply(&b.opts)
	}
	b.vhosts[DefaultVHost] = newVHost(b, DefaultVHost)
	return b
}

// AddVHost creates a virtual host. It is idempotent.
func (b *Broker) AddVHost(name string) error {
	if name == "" || len(name) > maxNameLen {
		return newError(PreconditionFailed, "invalid vhost name '%s'", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return closedError{}
	}
	if _, ok := b.vhosts[name]; !ok {
		b.vhosts[name] = newVHost(b, name)
	}
	return nil
}

// DeleteVHost closes every connection to the vhost and deletes it with all
// its exchanges, queues and messages.
func (b *Broker) DeleteVHost(name string) error {
	b.mu.Lock()
	vh, ok := b.vhosts[name]
	if ok {
		delete(b.vhosts, name)
	}
	var victims []*Conn
	for c := range b.conns {
		if c.vh == vh {
			victims = append(victims, c)
		}
	}
	b.mu.Unlock()
	if !ok {
		return newError(NotFound, "no vhost '%s'", name)
	}
	for _, c := range victims {
		c.closeWith(newError(ConnectionForced, "vhost '%s' is deleted", name))
	}
	vh.destroy()
	return nil
}

// VHosts returns the names of the virtual hosts, sorted.
func (b *Broker) VHosts() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, 0, len(b.vhosts))
	for n := range b.vhosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Connect opens a connection to a vhost; an unknown vhost is a 530
// NOT_ALLOWED error, as AMQP's connection.open.
func (b *Broker) Connect(vhostName string) (*Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, closedError{}
	}
	vh, ok := b.vhosts[vhostName]
	if !ok {
		return nil, newError(NotAllowed, "vhost '%s' not found", vhostName)
	}
	c := &Conn{
		b:         b,
		vh:        vh,
		id:        b.connID.Add(1),
		channels:  make(map[*Channel]struct{}),
		exclusive: make(map[*queue]struct{}),
	}
	b.conns[c] = struct{}{}
	return c, nil
}

// Close closes every connection and refuses new ones. Messages are
// dropped (the broker is in memory).
func (b *Broker) Close() {
	b.mu.Lock()
	b.closed = true
	conns := make([]*Conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	vhosts := make([]*vhost, 0, len(b.vhosts))
	for _, vh := range b.vhosts {
		vhosts = append(vhosts, vh)
	}
	b.mu.Unlock()
	for _, c := range conns {
		c.closeWith(newError(ConnectionForced, "broker shutdown"))
	}
	for _, vh := range vhosts {
		vh.destroy()
	}
}

func (b *Broker) forget(c *Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// Conn is a client connection: it owns channels and exclusive queues, which
// are deleted when it closes. Safe for concurrent use.
type Conn struct {
	b  *Broker
	vh *vhost
	id uint64

	mu        sync.Mutex
	channels  map[*Channel]struct{}
	exclusive map[*queue]struct{}
	closed    bool
	closeErr  error
	chanSeq   uint64
}

// VHost returns the name of the connection's virtual host.
func (c *Conn) VHost() string { return c.vh.name }

// Channel opens a channel on the connection.
func (c *Conn) Channel() (*Channel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, closedError{c.closeErr}
	}
	c.chanSeq++
	ch := newChannel(c, c.chanSeq)
	c.channels[ch] = struct{}{}
	return ch, nil
}

// Close closes the connection: its channels close (their unacknowledged
// messages are requeued) and its exclusive queues are deleted. Idempotent.
func (c *Conn) Close() error {
	c.closeWith(nil)
	return nil
}

// closeWith closes the connection because of cause (nil: by the client).
func (c *Conn) closeWith(cause error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closeErr = true, cause
	chans := make([]*Channel, 0, len(c.channels))
	for ch := range c.channels {
		chans = append(chans, ch)
	}
	queues := make([]*queue, 0, len(c.exclusive))
	for q := range c.exclusive {
		queues = append(queues, q)
	}
	c.mu.Unlock()
	for _, ch := range chans {
		ch.closeWith(cause)
	}
	for _, q := range queues {
		c.vh.deleteQueue(q)
	}
	c.b.forget(c)
}

// Done reports whether the connection is closed, and why (nil: closed by
// the client or still open).
func (c *Conn) Done() (closed bool, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.closeErr
}

func (c *Conn) forgetChannel(ch *Channel) {
	c.mu.Lock()
	delete(c.channels, ch)
	c.mu.Unlock()
}

// own records an exclusive queue; false when the connection is closed.
// Lock order: vhost.mu held.
func (c *Conn) own(q *queue) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.exclusive[q] = struct{}{}
	return true
}

func (c *Conn) disown(q *queue) {
	c.mu.Lock()
	delete(c.exclusive, q)
	c.mu.Unlock()
}
