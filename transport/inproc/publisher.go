package inproc

import (
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Publisher publishes watermill messages to the bundled broker with
// publisher confirms. Publish is safe for concurrent use and returns once
// the broker has taken (confirmed) every message.
type Publisher struct {
	t        *Transport
	exchange string
	cfg      bus.PublisherConfig

	mu     sync.Mutex
	idle   []*pubChannel
	closed bool
}

var _ message.Publisher = (*Publisher)(nil)

// pubChannel is a broker channel in confirm mode, used by one Publish call
// at a time. The broker confirms synchronously, so the outcome of the last
// publish is in the fields when Publish returns.
type pubChannel struct {
	ch       *broker.Channel
	nacked   bool
	returned bool
}

// NewPublisher makes a publisher on the transport.
func (t *Transport) NewPublisher(cfg bus.PublisherConfig) (*Publisher, error) {
	p := &Publisher{t: t, cfg: cfg, exchange: cfg.ExchangeName()}
	t.onClose(p.Close)
	return p, nil
}

func (p *Publisher) take() (*pubChannel, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if n := len(p.idle); n > 0 {
		pc := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return pc, nil
	}
	p.mu.Unlock()
	ch, err := p.t.channel()
	if err != nil {
		return nil, err
	}
	if p.exchange != "" {
		// Declare the bus, so that publishing before any subscriber works.
		x := bus.Topology{Exchange: p.exchange}.ExchangeDecl()
		if err := (declarer{ch}).DeclareExchange(x); err != nil {
			return nil, fmt.Errorf("declare exchange %s: %w", p.exchange, err)
		}
	}
	pc := &pubChannel{ch: ch}
	if err := ch.Confirm(func(c broker.Confirmation) { pc.nacked = pc.nacked || !c.Ack }); err != nil {
		return nil, err
	}
	ch.NotifyReturn(func(broker.Return) { pc.returned = true })
	return pc, nil
}

func (p *Publisher) give(pc *pubChannel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		pc.ch.Close()
		return
	}
	p.idle = append(p.idle, pc)
}

// Publish publishes messages to topic. It stops at the first message that
// fails and returns its error; the messages before it were published.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	pc, err := p.take()
	if err != nil {
		return err
	}
	mode := broker.Persistent
	if p.cfg.Transient {
		mode = broker.Transient
	}
	for _, msg := range msgs {
		pc.nacked, pc.returned = false, false
		_, err := pc.ch.Publish(p.exchange, topic, broker.Publishing{
			Properties: broker.Properties{
				Headers:      broker.Table(envelope.Headers(msg)),
				DeliveryMode: mode,
				MessageID:    msg.UUID,
			},
			Body: msg.Payload,
		}, broker.PublishOptions{Mandatory: p.cfg.Mandatory})
		switch {
		case err != nil:
			pc.ch.Close() // a broker error closed it; drop it
			return fmt.Errorf("publish %s to %s: %w", msg.UUID, topic, err)
		case pc.returned:
			p.give(pc)
			return fmt.Errorf("publish %s to %s: %w", msg.UUID, topic, bus.ErrUnroutable)
		case pc.nacked:
			p.give(pc)
			return fmt.Errorf("publish %s to %s: %w", msg.UUID, topic, bus.ErrNacked)
		}
	}
	p.give(pc)
	return nil
}

// Close closes the publisher's channels. Idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, pc := range idle {
		pc.ch.Close()
	}
	return nil
}

// MessagingSystem is the transport's (Transport.MessagingSystem).
func (p *Publisher) MessagingSystem() string { return p.t.MessagingSystem() }
