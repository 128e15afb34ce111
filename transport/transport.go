// Package transport connects a service to its bus by URL: "mem://" (or "")
// for the bundled broker in process, "amqp://user:pass@host:port/vhost" for
// RabbitMQ or any AMQP 0-9-1 broker. Everything above it (handlers, the
// outbox relay, sagas) talks to watermill's message.Publisher and
// message.Subscriber and never knows which one is below.
//
// Both transports declare the same topology (package bus), speak the same
// message format (package envelope), publish with confirms and persistent
// delivery, and pass watermill's universal Pub/Sub suite and Troupe's own
// conformance suite (package transporttest).
//
// # In-process brokers
//
// "mem://" names the process's default bundled broker and "mem://NAME" a
// named one; every Open of the same URL in a process reaches the same
// broker, so the services of an all-in-one process meet on it. The vhost
// is "/"; "mem://NAME/VHOST" selects another (created on demand).
package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport/amqp"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/inproc"
)

// Transport is a connection to a bus. Implementations are safe for
// concurrent use.
type Transport interface {
	// NewPublisher returns a publisher whose Publish returns once the
	// broker confirmed every message.
	NewPublisher(bus.PublisherConfig) (message.Publisher, error)
	// NewSubscriber returns a subscriber that declares each subscribed
	// topic's queue and consumes it.
	NewSubscriber(bus.SubscriberConfig) (message.Subscriber, error)
	// Declare declares a topology; idempotent.
	Declare(context.Context, bus.Topology) error
	// Close closes every publisher and subscriber made from the transport.
	Close() error
}

// Option configures Open.
type Option interface{ apply(*options) }

type options struct{ logger *slog.Logger }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the transport's logger.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(o *options) { o.logger = l }) }

// Open connects to the bus named by rawURL. A malformed or unsupported URL
// is an error here, at start-up; an AMQP broker is dialled when the first
// publisher, subscriber or declaration needs it.
func Open(rawURL string, opts ...Option) (Transport, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	if rawURL == "" {
		rawURL = "mem://"
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("transport: bad URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "mem":
		return openMem(u, o)
	case "amqp", "amqps":
		t, err := amqp.New(rawURL, amqp.WithLogger(o.logger))
		if err != nil {
			return nil, fmt.Errorf("transport: %w", err)
		}
		return amqpTransport{t}, nil
	}
	return nil, fmt.Errorf("transport: unsupported URL scheme %q in %q: want mem:// or amqp://", u.Scheme, rawURL)
}

var (
	memMu      sync.Mutex
	memBrokers = map[string]*broker.Broker{}
)

// MemBroker returns the bundled broker that "mem://name" reaches in this
// process, creating it on first use.
func MemBroker(name string) *broker.Broker {
	memMu.Lock()
	defer memMu.Unlock()
	b, ok := memBrokers[name]
	if !ok {
		b = broker.New(broker.WithLogger(slog.Default()))
		memBrokers[name] = b
	}
	return b
}

// MemAddress reads a "mem://[NAME][/VHOST]" URL: the bundled broker it
// reaches in this process (MemBroker) and the virtual host (the default
// one when the URL has no path).
func MemAddress(u *url.URL) (b *broker.Broker, vhost string, err error) {
	if u.Scheme != "mem" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Port() != "" {
		return nil, "", fmt.Errorf("transport: bad mem URL %q: want mem://[NAME][/VHOST]", u.String())
	}
	vhost = strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = broker.DefaultVHost
	}
	return MemBroker(u.Hostname()), vhost, nil
}

func openMem(u *url.URL, o options) (Transport, error) {
	b, vhost, err := MemAddress(u)
	if err != nil {
		return nil, err
	}
	if vhost != broker.DefaultVHost {
		if err := b.AddVHost(vhost); err != nil {
			return nil, fmt.Errorf("transport: %w", err)
		}
	}
	t, err := inproc.New(b, vhost, inproc.WithLogger(o.logger))
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	return inprocTransport{t}, nil
}

// The adapters give both implementations the Transport interface.

type inprocTransport struct{ *inproc.Transport }

func (t inprocTransport) NewPublisher(c bus.PublisherConfig) (message.Publisher, error) {
	return t.Transport.NewPublisher(c)
}

func (t inprocTransport) NewSubscriber(c bus.SubscriberConfig) (message.Subscriber, error) {
	return t.Transport.NewSubscriber(c)
}

type amqpTransport struct{ *amqp.Transport }

func (t amqpTransport) NewPublisher(c bus.PublisherConfig) (message.Publisher, error) {
	return t.Transport.NewPublisher(c)
}
