package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/troupehq/troupe/broker"
)

// env is one broker with one connection and channel.
type env struct {
	t    *testing.T
	b    *broker.Broker
	conn *broker.Conn
	ch   *broker.Channel
}

func newEnv(t *testing.T, opts ...broker.Option) *env {
	t.Helper()
	b := broker.New(opts...)
	t.Cleanup(b.Close)
	conn, err := b.Connect(broker.DefaultVHost)
	must(t, err)
	ch, err := conn.Channel()
	must(t, err)
	return &env{t: t, b: b, conn: conn, ch: ch}
}

// channel opens another channel on the env's connection.
func (e *env) channel() *broker.Channel {
	e.t.Helper()
	ch, err := e.conn.Channel()
	must(e.t, err)
	return ch
}

// otherConn opens a second connection.
func (e *env) otherConn() (*broker.Conn, *broker.Channel) {
	e.t.Helper()
	c, err := e.b.Connect(broker.DefaultVHost)
	must(e.t, err)
	ch, err := c.Channel()
	must(e.t, err)
	return c, ch
}

func (e *env) queue(name string, args broker.Table) string {
	e.t.Helper()
	info, err := e.ch.QueueDeclare(name, broker.QueueOptions{Args: args})
	must(e.t, err)
	return info.Name
}

func (e *env) exchange(name string, kind broker.ExchangeKind, args broker.Table) {
	e.t.Helper()
	must(e.t, e.ch.ExchangeDeclare(name, kind, broker.ExchangeOptions{Args: args}))
}

func (e *env) bind(queue, exchange, key string, args broker.Table) {
	e.t.Helper()
	must(e.t, e.ch.QueueBind(queue, exchange, key, args))
}

func (e *env) publish(exchange, key, body string) {
	e.t.Helper()
	_, err := e.ch.Publish(exchange, key, broker.Publishing{Body: []byte(body)}, broker.PublishOptions{})
	must(e.t, err)
}

func (e *env) publishProps(exchange, key, body string, p broker.Properties) {
	e.t.Helper()
	_, err := e.ch.Publish(exchange, key, broker.Publishing{Properties: p, Body: []byte(body)}, broker.PublishOptions{})
	must(e.t, err)
}

// count is the number of ready messages of a queue.
func (e *env) count(queue string) int {
	e.t.Helper()
	info, err := e.ch.QueueDeclare(queue, broker.QueueOptions{Passive: true})
	must(e.t, err)
	return info.Messages
}

// drain gets every ready message of a queue (no-ack) and returns the bodies.
func (e *env) drain(queue string) []string {
	e.t.Helper()
	var out []string
	for {
		d, ok, err := e.ch.Get(queue, broker.GetOptions{NoAck: true})
		must(e.t, err)
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
}

func (e *env) get(queue string) broker.Delivery {
	e.t.Helper()
	d, ok, err := e.ch.Get(queue, broker.GetOptions{})
	must(e.t, err)
	if !ok {
		e.t.Fatalf("queue %s is empty", queue)
	}
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantCode(t testing.TB, err error, want broker.ReplyCode) {
	t.Helper()
	if got := broker.Code(err); got != want {
		t.Fatalf("error %v: code %d, want %d (%s)", err, got, want, want)
	}
}

func receive(t testing.TB, c *broker.Consumer) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	must(t, err)
	return d
}

func noDelivery(t testing.TB, c *broker.Consumer) {
	t.Helper()
	if d, ok := c.TryReceive(); ok {
		t.Fatalf("unexpected delivery %q", d.Body)
	}
}

func bodies(ds []broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Body)
	}
	return out
}

func errorsIsClosed(err error) bool { return errors.Is(err, broker.ErrClosed) }
