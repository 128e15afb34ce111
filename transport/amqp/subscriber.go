package amqp

import (
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/internal/wmlog"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// NewSubscriber makes a watermill-amqp subscriber configured for Troupe's
// topology: it declares the topic's queue with its retry and dead-letter
// queues, binds it to the bus with the topic as key, consumes with the
// prefetch set, requeues nacked messages and reconnects after a connection
// loss.
func (t *Transport) NewSubscriber(cfg bus.SubscriberConfig) (message.Subscriber, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	wcfg := wamqp.Config{
		Connection: wamqp.ConnectionConfig{AmqpURI: t.url, Reconnect: wamqp.DefaultReconnectConfig()},
		Marshaler:  marshaler{},
		Exchange: wamqp.ExchangeConfig{
			GenerateName: func(string) string { return cfg.Exchange },
			Type:         "topic",
			Durable:      true,
		},
		Queue:           wamqp.QueueConfig{GenerateName: cfg.Queue, Durable: true},
		QueueBind:       wamqp.QueueBindConfig{GenerateRoutingKey: func(topic string) string { return topic }},
		Consume:         wamqp.ConsumeConfig{Qos: wamqp.QosConfig{PrefetchCount: cfg.Prefetch}},
		TopologyBuilder: topologyBuilder{cfg: cfg},
	}
	sub, err := wamqp.NewSubscriber(wcfg, wmlog.New(t.logger))
	if err != nil {
		return nil, fmt.Errorf("amqp: subscriber: %w", err)
	}
	if err := t.onClose(sub.Close); err != nil {
		_ = sub.Close()
		return nil, err
	}
	return sub, nil
}

// topologyBuilder makes watermill-amqp declare Troupe's bus.
type topologyBuilder struct {
	cfg bus.SubscriberConfig
}

var _ wamqp.TopologyBuilder = topologyBuilder{}

func (b topologyBuilder) ExchangeDeclare(ch *amqp091.Channel, name string, _ wamqp.Config) error {
	if b.cfg.Passive {
		return nil
	}
	return declarer{ch}.DeclareExchange(bus.Topology{Exchange: name}.ExchangeDecl())
}

func (b topologyBuilder) BuildTopology(ch *amqp091.Channel, params wamqp.BuildTopologyParams, _ wamqp.Config, _ watermill.LoggerAdapter) error {
	return b.cfg.Topology(params.Topic).Declare(declarer{ch})
}

// marshaler is watermill-amqp's Marshaler in Troupe's format.
type marshaler struct{}

func (marshaler) Marshal(msg *message.Message) (amqp091.Publishing, error) {
	return amqp091.Publishing{
		Headers:      amqp091.Table(envelope.Headers(msg)),
		DeliveryMode: amqp091.Persistent,
		MessageId:    msg.UUID,
		Body:         msg.Payload,
	}, nil
}

func (marshaler) Unmarshal(d amqp091.Delivery) (*message.Message, error) {
	msg := envelope.Message(d.Headers, d.MessageId, d.Body)
	if d.Redelivered {
		msg.Metadata.Set(bus.RedeliveredKey, strconv.FormatBool(true))
	}
	return msg, nil
}
