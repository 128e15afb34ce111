// Package amqp is the AMQP 0-9-1 transport: Troupe's topology on RabbitMQ
// (or any AMQP 0-9-1 broker) behind watermill's Publisher and Subscriber.
//
// The Subscriber is watermill-amqp's, configured for Troupe's topology
// (declared by package bus through a TopologyBuilder) and message
// format (package envelope). The Publisher is written here on amqp091-go,
// because watermill-amqp's waits one round trip per message for its
// confirm: this one keeps publisher confirms on but pipelines them —
// concurrent Publish calls share a channel, each waits only for the
// confirms of its own messages — and turns a mandatory message that
// reaches no queue into an error instead of dropping it. Both reconnect
// after the connection is lost.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/transport/bus"
)

// Transport reaches one AMQP broker by URL. Publishers made from it share a
// connection; each Subscriber has its own (RabbitMQ blocks publishing
// connections under flow control; consumers should not be stuck behind
// them). Safe for concurrent use.
type Transport struct {
	url    string
	logger *slog.Logger

	// admin is the connection for declarations.
	admin *dialer

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

// ErrClosed is returned after Close.
var ErrClosed = errors.New("amqp: transport closed")

// New checks the URL and returns a transport; connections are opened when
// the first publisher or subscriber is made. A malformed URL is an error
// here, at start-up.
func New(url string, opts ...Option) (*Transport, error) {
	if _, err := amqp091.ParseURI(url); err != nil {
		return nil, fmt.Errorf("amqp: bad URL: %w", err)
	}
	t := &Transport{url: url, logger: slog.New(slog.DiscardHandler), admin: &dialer{url: url}}
	for _, o := range opts {
		o.apply(t)
	}
	return t, nil
}

func (t *Transport) onClose(f func() error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.closers = append(t.closers, f)
	return nil
}

// Declare declares a topology on the broker; idempotent.
func (t *Transport) Declare(ctx context.Context, top bus.Topology) error {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return ErrClosed
	}
	conn, err := t.admin.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open channel: %w", err)
	}
	defer ch.Close()
	return top.Declare(declarer{ch})
}

// Close closes every publisher and subscriber made from t and the shared
// connection. Idempotent.
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
	errs = append(errs, t.admin.close())
	return errors.Join(errs...)
}

// declarer declares topology on an amqp091 channel.
type declarer struct{ ch *amqp091.Channel }

func (d declarer) DeclareExchange(x bus.ExchangeDecl) error {
	return d.ch.ExchangeDeclare(x.Name, x.Kind, x.Durable, false, false, false, nil)
}

func (d declarer) DeclareQueue(q bus.QueueDecl) error {
	_, err := d.ch.QueueDeclare(q.Name, q.Durable, false, false, false, amqp091.Table(q.Args))
	return err
}

func (d declarer) Bind(b bus.BindingDecl) error {
	return d.ch.QueueBind(b.Queue, b.Key, b.Exchange, false, nil)
}

// MessagingSystem names an AMQP 0-9-1 broker in telemetry: "rabbitmq", the
// messaging.system of the spans of messages through it (tracing.SystemOf).
func (t *Transport) MessagingSystem() string { return "rabbitmq" }
