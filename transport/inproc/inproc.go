// Package inproc is the in-process transport: a watermill Publisher and
// Subscriber that call the bundled broker's core directly, with no socket
// and no goroutine per message. It declares Troupe's topology (package
// bus) and speaks the same message format as the AMQP transport
// (package envelope).
package inproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/bus"
)

// Transport is a connection to a bundled broker. Safe for concurrent use.
type Transport struct {
	b      *broker.Broker
	conn   *broker.Conn
	owned  bool
	logger *slog.Logger

	mu      sync.Mutex
	closed  bool
	closers []func() error
}

// Option configures a Transport.
type Option interface{ apply(*Transport) }

type optionFunc func(*Transport)

func (f optionFunc) apply(t *Transport) { f(t) }

// WithLogger sets the logger; default none.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(t *Transport) {
		if l != nil {
			t.logger = l
		}
	})
}

// OwnBroker makes Close close the broker too.
func OwnBroker() Option { return optionFunc(func(t *Transport) { t.owned = true }) }

// New connects to b's vhost ("" is "/").
func New(b *broker.Broker, vhost string, opts ...Option) (*Transport, error) {
	if vhost == "" {
		vhost = broker.DefaultVHost
	}
	conn, err := b.Connect(vhost)
	if err != nil {
		return nil, fmt.Errorf("inproc: connect to vhost %q: %w", vhost, err)
	}
	t := &Transport{b: b, conn: conn, logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o.apply(t)
	}
	return t, nil
}

// Broker returns the broker the transport is connected to.
func (t *Transport) Broker() *broker.Broker { return t.b }

// Declare declares a topology; idempotent.
func (t *Transport) Declare(_ context.Context, top bus.Topology) error {
	ch, err := t.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return top.Declare(declarer{ch})
}

// channel opens a broker channel on the transport's connection.
func (t *Transport) channel() (*broker.Channel, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return t.conn.Channel()
}

func (t *Transport) onClose(f func() error) {
	t.mu.Lock()
	t.closers = append(t.closers, f)
	t.mu.Unlock()
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("inproc: transport closed")

// Close closes the publishers and subscribers made from t, then its
// connection (and the broker, with OwnBroker). Idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	closers := t.closers
	t.closers = nil
	t.mu.Unlock()
	var errs []error
	for _, f := range closers {
		errs = append(errs, f())
	}
	errs = append(errs, t.conn.Close())
	if t.owned {
		t.b.Close()
	}
	return errors.Join(errs...)
}

// declarer declares topology on a broker channel.
type declarer struct{ ch *broker.Channel }

func (d declarer) DeclareExchange(x bus.ExchangeDecl) error {
	kind, err := broker.ParseExchangeKind(x.Kind)
	if err != nil {
		return err
	}
	return d.ch.ExchangeDeclare(x.Name, kind, broker.ExchangeOptions{Durable: x.Durable})
}

func (d declarer) DeclareQueue(q bus.QueueDecl) error {
	_, err := d.ch.QueueDeclare(q.Name, broker.QueueOptions{Durable: q.Durable, Args: broker.Table(q.Args)})
	return err
}

func (d declarer) Bind(b bus.BindingDecl) error {
	return d.ch.QueueBind(b.Queue, b.Exchange, b.Key, nil)
}

// MessagingSystem names the bundled broker in telemetry: "troupe", the
// messaging.system of the spans of messages through it (tracing.SystemOf).
func (t *Transport) MessagingSystem() string { return "troupe" }
