package amqp

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Publisher publishes watermill messages with publisher confirms. Publish
// is safe for concurrent use and returns once every one of its messages is
// confirmed; concurrent calls share a channel, so their confirms pipeline.
type Publisher struct {
	t        *Transport
	cfg      bus.PublisherConfig
	exchange string
	dialer   *dialer

	mu     sync.Mutex
	cur    *pubChannel
	closed bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher makes a publisher; it connects on its first Publish.
func (t *Transport) NewPublisher(cfg bus.PublisherConfig) (*Publisher, error) {
	if cfg.ReconnectTimeout == 0 {
		cfg.ReconnectTimeout = 30 * time.Second
	}
	p := &Publisher{t: t, cfg: cfg, exchange: cfg.ExchangeName(), dialer: &dialer{url: t.url}}
	if err := t.onClose(p.Close); err != nil {
		return nil, err
	}
	return p, nil
}

// Publish publishes msgs to topic and waits for their confirms. It returns
// the first failure; messages before it in msgs were confirmed.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx := msgs[0].Context()
	pc, err := p.channel(ctx)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	mode := amqp091.Persistent
	if p.cfg.Transient {
		mode = amqp091.Transient
	}
	dcs := make([]*amqp091.DeferredConfirmation, len(msgs))
	for i, msg := range msgs {
		dcs[i], err = pc.ch.PublishWithDeferredConfirmWithContext(msg.Context(), p.exchange, topic, p.cfg.Mandatory, false,
			amqp091.Publishing{
				Headers:      amqp091.Table(envelope.Headers(msg)),
				DeliveryMode: mode,
				MessageId:    msg.UUID,
				Body:         msg.Payload,
			})
		if err != nil {
			p.discard(pc)
			return fmt.Errorf("publish %s to %s: %w", msg.UUID, topic, err)
		}
	}
	for i, dc := range dcs {
		acked, err := dc.WaitContext(msgs[i].Context())
		switch {
		case err != nil:
			return fmt.Errorf("confirm of %s: %w", msgs[i].UUID, err)
		case !acked && pc.isClosed():
			return fmt.Errorf("confirm of %s: channel closed before the broker confirmed", msgs[i].UUID)
		case !acked:
			return fmt.Errorf("publish %s to %s: %w", msgs[i].UUID, topic, bus.ErrNacked)
		}
	}
	if p.cfg.Mandatory {
		return pc.checkReturns(topic, msgs)
	}
	return nil
}

// channel returns the shared publishing channel, opening one (and
// reconnecting) when needed.
func (p *Publisher) channel(ctx context.Context) (*pubChannel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.cur != nil && !p.cur.isClosed() {
		return p.cur, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ReconnectTimeout)
	defer cancel()
	conn, err := p.dialer.connection(ctx)
	if err != nil {
		return nil, err
	}
	pc, err := newPubChannel(conn)
	if err != nil {
		return nil, err
	}
	if p.exchange != "" {
		// Declare the bus, so that publishing before any subscriber works.
		if err := (declarer{pc.ch}).DeclareExchange(bus.Topology{Exchange: p.exchange}.ExchangeDecl()); err != nil {
			pc.close()
			return nil, fmt.Errorf("declare exchange %s: %w", p.exchange, err)
		}
	}
	p.cur = pc
	return pc, nil
}

func (p *Publisher) discard(pc *pubChannel) {
	p.mu.Lock()
	if p.cur == pc {
		p.cur = nil
	}
	p.mu.Unlock()
	pc.close()
}

// Close closes the publisher's channel and connection. Idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	pc := p.cur
	p.cur = nil
	p.mu.Unlock()
	if pc != nil {
		pc.close()
	}
	return p.dialer.close()
}

// pubChannel is a channel in confirm mode with its returned messages.
type pubChannel struct {
	ch      *amqp091.Channel
	closing chan *amqp091.Error
	returns chan amqp091.Return
	flush   chan chan struct{}
	done    chan struct{} // closed by close
	stopped chan struct{} // closed when collectReturns ends
	wg      sync.WaitGroup

	mu       sync.Mutex
	returned map[string]amqp091.Return
}

func newPubChannel(conn *amqp091.Connection) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("confirm.select: %w", err)
	}
	pc := &pubChannel{
		ch:       ch,
		closing:  ch.NotifyClose(make(chan *amqp091.Error, 1)),
		returns:  ch.NotifyReturn(make(chan amqp091.Return, 256)),
		flush:    make(chan chan struct{}),
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
		returned: make(map[string]amqp091.Return),
	}
	pc.wg.Go(pc.collectReturns)
	return pc, nil
}

// collectReturns moves returned messages into the map. amqp091 hands a
// basic.return to the returns channel before it processes the confirm of
// the same message, so after a confirm a flush finds its return, if any.
func (pc *pubChannel) collectReturns() {
	defer close(pc.stopped)
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			pc.record(r)
		case reply := <-pc.flush:
			pc.drain()
			close(reply)
		case <-pc.done:
			return
		}
	}
}

func (pc *pubChannel) drain() {
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			pc.record(r)
		default:
			return
		}
	}
}

func (pc *pubChannel) record(r amqp091.Return) {
	pc.mu.Lock()
	pc.returned[r.MessageId] = r
	pc.mu.Unlock()
}

// checkReturns reports the first of msgs that the broker returned.
func (pc *pubChannel) checkReturns(topic string, msgs []*message.Message) error {
	reply := make(chan struct{})
	select {
	case pc.flush <- reply:
		<-reply
	case <-pc.stopped: // closed channel or publisher: read what is left
		pc.drain()
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var first error
	for _, msg := range msgs {
		r, ok := pc.returned[msg.UUID]
		if !ok {
			continue
		}
		delete(pc.returned, msg.UUID)
		if first == nil {
			first = fmt.Errorf("publish %s to %s: %w (%d %s)", msg.UUID, topic, bus.ErrUnroutable, r.ReplyCode, r.ReplyText)
		}
	}
	return first
}

func (pc *pubChannel) isClosed() bool { return pc.ch.IsClosed() }

func (pc *pubChannel) close() {
	select {
	case <-pc.done:
	default:
		close(pc.done)
	}
	_ = pc.ch.Close()
	pc.wg.Wait()
}

// dialer keeps one connection, redialling it with backoff when it is lost.
type dialer struct {
	url string

	mu     sync.Mutex
	conn   *amqp091.Connection
	closed bool
}

func (d *dialer) connection(ctx context.Context) (*amqp091.Connection, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.conn != nil && !d.conn.IsClosed() {
		return d.conn, nil
	}
	wait := 50 * time.Millisecond
	for {
		conn, err := dial(d.url)
		if err == nil {
			d.conn = conn
			return conn, nil
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, 2*time.Second)
		case <-ctx.Done():
			return nil, fmt.Errorf("connect: %w (last error: %w)", ctx.Err(), err)
		}
	}
}

func (d *dialer) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn == nil || d.conn.IsClosed() {
		return nil
	}
	return d.conn.Close()
}

// MessagingSystem is the transport's (Transport.MessagingSystem).
func (p *Publisher) MessagingSystem() string { return p.t.MessagingSystem() }
