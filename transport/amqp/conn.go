package amqp

import (
	"errors"
	"net"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

const (
	// connectTimeout bounds the TCP connect and the AMQP handshake, as
	// amqp091.Dial does.
	connectTimeout = 30 * time.Second
	// maxPending bounds the bytes a coalescingConn holds before Write waits
	// for the socket.
	maxPending = 1 << 20
	// closeGrace is how long Close lets the writer send what is pending
	// before it closes the socket under it.
	closeGrace = 5 * time.Second
)

// dial opens an AMQP connection whose socket writes are coalesced (see
// coalescingConn), with amqp091.Dial's defaults otherwise.
func dial(url string) (*amqp091.Connection, error) {
	tcp := amqp091.DefaultDial(connectTimeout)
	return amqp091.DialConfig(url, amqp091.Config{
		Locale: "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			conn, err := tcp(network, addr)
			if err != nil {
				return nil, err
			}
			return newCoalescingConn(conn), nil
		},
	})
}

// errConnClosed is returned by Write after Close.
var errConnClosed = errors.New("amqp: connection closed")

// coalescingConn batches the writes of an AMQP connection. amqp091-go
// flushes its buffered writer after every frame group, so each publish
// would be one write system call, and one TCP segment that RabbitMQ reads
// on its own, while the writing goroutine holds the connection's send lock.
// Here Write copies into a buffer and returns; one writer goroutine sends
// whatever accumulated while its previous write was in the kernel. There
// is no timer: an idle connection writes at once, a busy one writes
// larger blocks. Writes keep their order. A failed write closes the
// socket, which fails amqp091's reader and so the connection, and is
// returned by every later Write.
//
// Safe for concurrent use; reads and deadlines go straight to the socket.
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	data    sync.Cond // signalled when pending grows or the conn closes
	space   sync.Cond // broadcast when pending was taken or the writer ends
	pending []byte
	spare   []byte
	err     error
	closing bool

	done chan struct{} // closed when the writer ends
}

func newCoalescingConn(conn net.Conn) *coalescingConn {
	c := &coalescingConn{Conn: conn, done: make(chan struct{})}
	c.data.L, c.space.L = &c.mu, &c.mu
	go c.writer()
	return c
}

// Write queues p for the writer. It waits while maxPending bytes are
// queued already.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) >= maxPending && c.err == nil && !c.closing {
		c.space.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closing:
		return 0, errConnClosed
	}
	c.pending = append(c.pending, p...)
	if len(c.pending) == len(p) {
		c.data.Signal() // the writer may be waiting for data
	}
	return len(p), nil
}

// writer sends pending bytes until the conn closes and nothing is left, or
// a write fails. The Close that stops it waits for it.
func (c *coalescingConn) writer() {
	defer close(c.done)
	c.mu.Lock()
	for {
		for len(c.pending) == 0 && !c.closing {
			c.data.Wait()
		}
		if len(c.pending) == 0 {
			break // closing with nothing left
		}
		buf := c.pending
		c.pending = c.spare[:0]
		c.space.Broadcast()
		c.mu.Unlock()
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.err = err
			break
		}
	}
	c.space.Broadcast()
	failed := c.err != nil
	c.mu.Unlock()
	if failed {
		_ = c.Conn.Close()
	}
}

// Close lets the writer send what is queued (for closeGrace at most), then
// closes the socket. Idempotent.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.closing = true
	c.data.Signal()
	c.space.Broadcast()
	c.mu.Unlock()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C: // stuck in a write to a peer that does not read
	}
	err := c.Conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		return nil // closed before, by the writer or a second Close
	}
	return err
}
