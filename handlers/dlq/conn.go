package dlq

import (
	"context"
	"fmt"
	"net/url"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/troupehq/troupe/broker"
	"github.com/troupehq/troupe/transport"
)

// Dial connects to the broker of a bus URL: amqp:// reaches RabbitMQ (or
// any AMQP broker); mem://NAME reaches a bundled broker of this process,
// mem://NAME/VHOST its virtual host VHOST (as transport.Open reads it).
func Dial(rawURL string) (Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dlq: bad URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "amqp", "amqps":
		return dialAMQP(rawURL)
	case "mem":
		b, vhost, err := transport.MemAddress(u)
		if err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		return dialMem(b, vhost)
	}
	return nil, fmt.Errorf("dlq: unsupported URL scheme %q: want amqp:// (or mem:// in process)", u.Scheme)
}

// amqpConn reads and replays through amqp091-go.
type amqpConn struct {
	conn *amqp091.Connection
	ch   *amqp091.Channel
}

func dialAMQP(rawURL string) (Conn, error) {
	conn, err := amqp091.Dial(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dlq: connect: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dlq: channel: %w", err)
	}
	return &amqpConn{conn: conn, ch: ch}, nil
}

func (c *amqpConn) Get(_ context.Context, queue string) (Letter, bool, error) {
	d, ok, err := c.ch.Get(queue, false)
	if err != nil || !ok {
		return Letter{}, false, err
	}
	return newLetter(d.MessageId, d.Headers, d.Body, d.DeliveryTag), true, nil
}

func (c *amqpConn) Ack(l Letter) error { return c.ch.Ack(l.tag, false) }

func (c *amqpConn) Publish(ctx context.Context, queue, id string, headers map[string]any, body []byte) error {
	dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp091.Publishing{
		Headers: amqp091.Table(headers), DeliveryMode: amqp091.Persistent, MessageId: id, Body: body,
	})
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("broker refused the message")
	}
	return nil
}

func (c *amqpConn) Close() error { return c.conn.Close() }

// memConn reads and replays on a bundled broker in process.
type memConn struct {
	conn *broker.Conn
	ch   *broker.Channel
	acks []broker.Confirmation
}

func dialMem(b *broker.Broker, vhost string) (Conn, error) {
	conn, err := b.Connect(vhost)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &memConn{conn: conn, ch: ch}
	if err := ch.Confirm(func(cf broker.Confirmation) { c.acks = append(c.acks, cf) }); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *memConn) Get(_ context.Context, queue string) (Letter, bool, error) {
	d, ok, err := c.ch.Get(queue, broker.GetOptions{})
	if err != nil || !ok {
		return Letter{}, false, err
	}
	p := d.Properties()
	return newLetter(p.MessageID, p.Headers, d.Body, d.DeliveryTag), true, nil
}

func (c *memConn) Ack(l Letter) error { return c.ch.Ack(l.tag, 0) }

func (c *memConn) Publish(_ context.Context, queue, id string, headers map[string]any, body []byte) error {
	returned := false
	c.ch.NotifyReturn(func(broker.Return) { returned = true })
	if _, err := c.ch.Publish("", queue, broker.Publishing{
		Properties: broker.Properties{Headers: broker.Table(headers), DeliveryMode: broker.Persistent, MessageID: id},
		Body:       body,
	}, broker.PublishOptions{Mandatory: true}); err != nil {
		return err
	}
	if returned {
		return fmt.Errorf("no queue %q", queue)
	}
	if n := len(c.acks); n == 0 || !c.acks[n-1].Ack {
		return fmt.Errorf("broker refused the message")
	}
	return nil
}

func (c *memConn) Close() error { return c.conn.Close() }
