package broker

import (
	"strconv"
	"time"
)

// DeliveryMode says whether a message should survive a broker restart when
// it sits in a durable queue.
type DeliveryMode uint8

// Delivery modes of AMQP basic.properties. The zero value means unset, which
// the broker treats as Transient.
const (
	Transient  DeliveryMode = 1
	Persistent DeliveryMode = 2
)

// Properties are AMQP basic.properties (spec class basic, "content header").
type Properties struct {
	ContentType     string
	ContentEncoding string
	Headers         Table
	DeliveryMode    DeliveryMode
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	// Expiration is the per-message TTL in milliseconds, as a decimal string
	// (RabbitMQ's format): "60000" expires after a minute, "0" unless a
	// consumer can take the message at once.
	Expiration string
	MessageID  string
	Timestamp  time.Time
	Type       string
	UserID     string
	AppID      string
}

func (p *Properties) isZero() bool {
	return p.ContentType == "" && p.ContentEncoding == "" && len(p.Headers) == 0 &&
		p.DeliveryMode == 0 && p.Priority == 0 && p.CorrelationID == "" &&
		p.ReplyTo == "" && p.Expiration == "" && p.MessageID == "" &&
		p.Timestamp.IsZero() && p.Type == "" && p.UserID == "" && p.AppID == ""
}

// Publishing is what a publisher hands to Channel.Publish. The broker takes
// ownership of Body and of Properties.Headers: the caller must not modify
// them after Publish returns.
type Publishing struct {
	Properties
	Body []byte
}

// Message is a published message as the broker keeps it. It is immutable
// once published and shared by every queue it was routed to (a fan-out to
// three queues keeps one Message): readers must not modify it, Body
// included.
//
// A Message is two words and a slice: everything besides the body sits in
// a header that messages published on one channel to the same exchange and
// routing key, without properties, share. A queued 256-byte message thus
// costs its body, 32 bytes of Message and a slot in the queue.
type Message struct {
	hdr  *header
	Body []byte
}

// header is a message's exchange, routing key and properties. Headers
// without properties are interned per channel (see Channel.headerFor), so
// it is immutable like the messages that share it.
type header struct {
	exchange   string
	routingKey string
	// props is nil when the publisher set no property.
	props *Properties
}

// messageWithProps is a message with properties, allocated at once.
type messageWithProps struct {
	m Message
	h header
	p Properties
}

// newMessage returns a message published (or dead-lettered) to exchange with
// key; props may be nil. With props, the message, its header and a copy of
// *props take one allocation.
func newMessage(exchange, key string, props *Properties, body []byte) *Message {
	if props == nil {
		return &Message{hdr: &header{exchange: exchange, routingKey: key}, Body: body}
	}
	mp := &messageWithProps{h: header{exchange: exchange, routingKey: key}, p: *props}
	mp.h.props = &mp.p
	mp.m = Message{hdr: &mp.h, Body: body}
	return &mp.m
}

// Exchange returns the exchange the message was published (or
// dead-lettered) to.
func (m *Message) Exchange() string {
	if m.hdr == nil {
		return ""
	}
	return m.hdr.exchange
}

// RoutingKey returns the routing key the message was published (or
// dead-lettered) with.
func (m *Message) RoutingKey() string {
	if m.hdr == nil {
		return ""
	}
	return m.hdr.routingKey
}

var zeroProps Properties

// Properties returns the message's properties; never nil. The result is
// shared and must not be modified.
func (m *Message) Properties() *Properties {
	if m.hdr == nil || m.hdr.props == nil {
		return &zeroProps
	}
	return m.hdr.props
}

// props returns the message's properties, nil when none was set.
func (m *Message) props() *Properties {
	if m.hdr == nil {
		return nil
	}
	return m.hdr.props
}

// Persistent reports whether the publisher asked for persistence.
func (m *Message) Persistent() bool {
	p := m.props()
	return p != nil && p.DeliveryMode == Persistent
}

// size is the message's weight for x-max-length-bytes: the body length, as
// in RabbitMQ.
func (m *Message) size() int64 { return int64(len(m.Body)) }

// expiration parses the per-message TTL. ok is false when none is set.
func (m *Message) expiration() (ttl time.Duration, ok bool, err error) {
	p := m.props()
	if p == nil {
		return 0, false, nil
	}
	return parseExpiration(p.Expiration)
}

// parseExpiration parses an expiration property. ok is false when s is
// empty.
func parseExpiration(s string) (ttl time.Duration, ok bool, err error) {
	if s == "" {
		return 0, false, nil
	}
	ms, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false, newError(PreconditionFailed, "invalid expiration '%s' for message", s)
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

// Delivery is a message handed to a consumer or returned by Get.
type Delivery struct {
	*Message
	// ConsumerTag is empty for a Get.
	ConsumerTag string
	// DeliveryTag identifies the delivery on its channel for Ack, Nack and
	// Reject. It is zero for a consumer in no-ack mode.
	DeliveryTag uint64
	// Redelivered is true when the message was delivered before (and
	// requeued).
	Redelivered bool
	// MessageCount is, for a Get, the number of messages left ready in the
	// queue.
	MessageCount int
}

// Return is an unroutable message published with the mandatory flag, handed
// back to its publisher (AMQP basic.return).
type Return struct {
	ReplyCode ReplyCode
	ReplyText string
	*Message
}

// Confirmation is a publisher confirm (AMQP basic.ack / basic.nack sent by the
// broker): the message with publish sequence number DeliveryTag was taken
// responsibility for (Ack) or refused (Ack false, e.g. by a queue's
// x-overflow=reject-publish).
type Confirmation struct {
	DeliveryTag uint64
	Ack         bool
}
