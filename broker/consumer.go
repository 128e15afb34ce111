package broker

import (
	"context"
	"sync"
	"sync/atomic"
)

// ConsumeOptions are the flags of basic.consume.
type ConsumeOptions struct {
	// Tag names the consumer on its channel; empty: the broker makes one
	// ("amq.ctag-...").
	Tag string
	// NoAck consumers get messages settled at delivery (AMQP no-ack, the
	// "automatic acknowledgement" mode).
	NoAck bool
	// Exclusive consumers are the only consumer of their queue.
	Exclusive bool
	Args      Table
}

// Consumer receives the deliveries of one queue (AMQP basic.consume). The
// broker pushes deliveries into the consumer's buffer, up to its prefetch
// limit and a flow-control window, and Receive takes them out. Receive and
// TryReceive are safe for concurrent use.
type Consumer struct {
	ch        *Channel
	q         *queue
	tag       string
	noAck     bool
	exclusive bool
	prefetch  int // per-consumer limit, fixed at consume time; 0: none

	unacked  int // guarded by q.mu
	dead     atomic.Bool
	stalled  atomic.Bool
	buffered atomic.Int64

	mu        sync.Mutex
	buf       []Delivery
	head      int
	notify    chan struct{}
	done      chan struct{}
	cancelled bool
	cause     error
}

func newConsumer(ch *Channel, q *queue, tag string, opts ConsumeOptions, prefetch int) *Consumer {
	return &Consumer{
		ch:        ch,
		q:         q,
		tag:       tag,
		noAck:     opts.NoAck,
		exclusive: opts.Exclusive,
		prefetch:  prefetch,
		notify:    make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// Tag returns the consumer tag.
func (c *Consumer) Tag() string { return c.tag }

// Queue returns the name of the consumed queue.
func (c *Consumer) Queue() string { return c.q.name }

// Done is closed when the consumer is cancelled. Deliveries buffered before
// that can still be received.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Cause returns why the broker cancelled the consumer (its queue was
// deleted, its channel closed on an error), or nil while it runs or when
// its owner cancelled it.
func (c *Consumer) Cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Cancel cancels the consumer (basic.cancel). Unacknowledged deliveries stay
// pending on the channel until acked, nacked or the channel closes.
func (c *Consumer) Cancel() error { return c.ch.Cancel(c.tag) }

// takeCredit reports whether c can take one more delivery now, and takes
// the channel-wide credit when it can. Lock should be held (queue.mu).
func (c *Consumer) takeCredit(window int) bool {
	if c.dead.Load() {
		return false
	}
	if !c.noAck && c.prefetch > 0 && c.unacked >= c.prefetch {
		return false
	}
	if c.buffered.Load() >= int64(window) {
		// Publish the stall before looking again, so that a receiver that
		// drains the buffer meanwhile sees it and kicks the queue.
		c.stalled.Store(true)
		if c.buffered.Load() >= int64(window) {
			return false
		}
	}
	return c.noAck || c.ch.reserve()
}

// push appends a delivery to the buffer. Lock should be held (queue.mu).
func (c *Consumer) push(d Delivery) {
	c.mu.Lock()
	empty := len(c.buf) == c.head
	c.buf = append(c.buf, d)
	c.buffered.Add(1)
	c.mu.Unlock()
	if empty {
		c.signal()
	}
}

func (c *Consumer) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// pop takes the oldest buffered delivery. Lock should be held (c.mu).
func (c *Consumer) popLocked() (Delivery, bool) {
	if c.head == len(c.buf) {
		return Delivery{}, false
	}
	d := c.buf[c.head]
	c.buf[c.head] = Delivery{}
	c.head++
	switch {
	case c.head == len(c.buf):
		c.buf, c.head = c.buf[:0], 0
	case c.head >= 1024 && 2*c.head >= len(c.buf):
		n := copy(c.buf, c.buf[c.head:])
		clear(c.buf[n:])
		c.buf, c.head = c.buf[:n], 0
	}
	return d, true
}

// taken does the flow-control bookkeeping after a delivery left the buffer.
func (c *Consumer) taken() {
	left := c.buffered.Add(-1)
	if left <= int64(c.q.vh.b.opts.consumerWindow/2) && c.stalled.Load() && c.stalled.CompareAndSwap(true, false) {
		c.q.kick()
	}
}

// TryReceive returns a buffered delivery without blocking.
func (c *Consumer) TryReceive() (Delivery, bool) {
	c.mu.Lock()
	d, ok := c.popLocked()
	c.mu.Unlock()
	if ok {
		c.taken()
	}
	return d, ok
}

// Receive blocks until a delivery arrives, ctx is done, or the consumer is
// cancelled and its buffer is empty (ErrCancelled).
func (c *Consumer) Receive(ctx context.Context) (Delivery, error) {
	for {
		c.mu.Lock()
		d, ok := c.popLocked()
		more := c.head < len(c.buf)
		cancelled := c.cancelled
		c.mu.Unlock()
		if ok {
			if more {
				// push signals only an empty buffer's first delivery: pass
				// the signal on to another receiver waiting on c.
				c.signal()
			}
			c.taken()
			return d, nil
		}
		if cancelled {
			return Delivery{}, ErrCancelled
		}
		select {
		case <-c.notify:
		case <-c.done:
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		}
	}
}

// cancel marks c cancelled; cause is nil when its owner asked.
func (c *Consumer) cancel(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancelled {
		return
	}
	c.cancelled, c.cause = true, cause
	close(c.done)
}
