package bus

import (
	"errors"
	"time"
)

// PublisherConfig configures a transport's publisher.
type PublisherConfig struct {
	// Exchange is where messages go with the topic as routing key;
	// DefaultExchange when empty. With ToQueue the topic names a queue
	// instead, reached through the broker's default exchange (for retry and
	// dead-letter queues).
	Exchange string
	ToQueue  bool
	// Mandatory makes a message that reaches no queue an error
	// (ErrUnroutable) instead of being dropped by the broker.
	Mandatory bool
	// Transient publishes without the persistent delivery mode.
	Transient bool
	// ReconnectTimeout bounds how long a publish waits for a lost broker
	// connection to come back; 30 s when 0. The in-process transport never
	// loses its connection.
	ReconnectTimeout time.Duration
}

// ExchangeName is the exchange a publisher with this configuration uses.
func (c PublisherConfig) ExchangeName() string {
	switch {
	case c.ToQueue:
		return ""
	case c.Exchange == "":
		return DefaultExchange
	}
	return c.Exchange
}

// SubscriberConfig configures a transport's subscriber.
type SubscriberConfig struct {
	// Group is the consumer group: subscribers of one group compete for a
	// topic's messages, each group gets them all. The queue of a topic is
	// "<group>.<topic>" unless QueueName says otherwise.
	Group     string
	QueueName func(topic string) string
	// Exchange is the bus; DefaultExchange when empty.
	Exchange string
	// Prefetch bounds the deliveries in flight per subscription; 64 when 0.
	Prefetch int
	// RetryDelays are declared as retry queues of each subscribed queue.
	RetryDelays []time.Duration
	// Passive subscribers consume queues that exist (a dead-letter queue,
	// a retry queue) and declare nothing.
	Passive bool
}

// ErrNoQueueName is returned for a subscriber with neither a Group nor a
// QueueName function.
var ErrNoQueueName = errors.New("bus: subscriber needs a Group or a QueueName function")

// WithDefaults checks c and fills in its defaults.
func (c SubscriberConfig) WithDefaults() (SubscriberConfig, error) {
	if c.Group == "" && c.QueueName == nil {
		return c, ErrNoQueueName
	}
	if c.Prefetch == 0 {
		c.Prefetch = 64
	}
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	return c, nil
}

// Queue names the queue of a topic.
func (c SubscriberConfig) Queue(topic string) string {
	if c.QueueName != nil {
		return c.QueueName(topic)
	}
	return WorkQueue(c.Group, topic)
}

// Topology is the topology a subscription to topic needs: its queue (with
// retry and dead-letter queues) bound to the bus with the topic as key;
// nothing for a passive subscriber.
func (c SubscriberConfig) Topology(topic string) Topology {
	if c.Passive {
		return Topology{Exchange: c.Exchange}
	}
	return Topology{
		Exchange: c.Exchange,
		Queues:   []Queue{{Name: c.Queue(topic), Events: []string{topic}, RetryDelays: c.RetryDelays}},
	}
}

// Errors a publisher returns; match with errors.Is.
var (
	// ErrUnroutable: a mandatory message reached no queue.
	ErrUnroutable = errors.New("bus: message unroutable")
	// ErrNacked: the broker refused the message (e.g. a queue at its
	// x-max-length with x-overflow reject-publish).
	ErrNacked = errors.New("bus: message refused by the broker")
)

// RedeliveredKey is the metadata key a subscriber sets to "true" on a
// message the broker delivered before.
const RedeliveredKey = "x-redelivered"

// BrokerKeys are the metadata keys the broker or the subscriber sets on a
// delivery (RabbitMQ's dead-lettering headers, RedeliveredKey): a copy of
// the message published again (to a retry or dead-letter queue, or
// replayed from one) drops them, or they would be stale, or as text
// malformed.
var BrokerKeys = []string{"x-death", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange", RedeliveredKey}
