package broker_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/troupehq/troupe/broker"
)

func TestMandatoryReturnsUnroutable(t *testing.T) {
	e := newEnv(t)
	e.exchange("x", broker.Direct, nil)
	e.queue("q", nil)
	e.bind("q", "x", "known", nil)
	var returns []broker.Return
	var events []string
	e.ch.NotifyReturn(func(r broker.Return) {
		returns = append(returns, r)
		events = append(events, "return")
	})
	must(t, e.ch.Confirm(func(c broker.Confirmation) { events = append(events, "confirm") }))
	publish := func(key string, mandatory bool) {
		_, err := e.ch.Publish("x", key, broker.Publishing{Body: []byte(key)}, broker.PublishOptions{Mandatory: mandatory})
		must(t, err)
	}
	publish("known", true)
	publish("unknown", false) // dropped silently
	publish("unknown", true)
	if len(returns) != 1 || string(returns[0].Body) != "unknown" || returns[0].ReplyCode != broker.NoRoute ||
		returns[0].Exchange() != "x" || returns[0].RoutingKey() != "unknown" {
		t.Fatalf("returns %+v", returns)
	}
	// As in RabbitMQ, the return comes before the confirm.
	if want := []string{"confirm", "confirm", "return", "confirm"}; !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
}

func TestPublisherConfirmsAreNumbered(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	seq, err := e.ch.Publish("", "q", broker.Publishing{}, broker.PublishOptions{})
	must(t, err)
	if seq != 0 {
		t.Fatalf("sequence %d before confirm mode", seq)
	}
	var acks []uint64
	must(t, e.ch.Confirm(func(c broker.Confirmation) {
		if c.Ack {
			acks = append(acks, c.DeliveryTag)
		}
	}))
	for want := uint64(1); want <= 3; want++ {
		seq, err := e.ch.Publish("", "q", broker.Publishing{}, broker.PublishOptions{})
		must(t, err)
		if seq != want {
			t.Fatalf("sequence %d, want %d", seq, want)
		}
	}
	if !slices.Equal(acks, []uint64{1, 2, 3}) {
		t.Fatalf("acks %v", acks)
	}
}

func TestFanoutSharesOneMessage(t *testing.T) {
	e := newEnv(t)
	e.exchange("fan", broker.Fanout, nil)
	for _, q := range []string{"a", "b", "c"} {
		e.queue(q, nil)
		e.bind(q, "fan", "", nil)
	}
	e.publish("fan", "", "shared")
	a, b, c := e.get("a"), e.get("b"), e.get("c")
	if a.Message != b.Message || b.Message != c.Message {
		t.Fatal("fan-out copied the message")
	}
}

func TestMaxMessageSize(t *testing.T) {
	e := newEnv(t, broker.WithMaxMessageSize(10))
	e.queue("q", nil)
	_, err := e.ch.Publish("", "q", broker.Publishing{Body: make([]byte, 11)}, broker.PublishOptions{})
	wantCode(t, err, broker.PreconditionFailed)
}

func TestInvalidHeaderValue(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	_, err := e.ch.Publish("", "q", broker.Publishing{Properties: broker.Properties{Headers: broker.Table{"k": []int{1}}}}, broker.PublishOptions{})
	wantCode(t, err, broker.PreconditionFailed)
}

func TestErrorCarriesCodeAndText(t *testing.T) {
	e := newEnv(t)
	_, err := e.ch.QueueDeclare("missing", broker.QueueOptions{Passive: true})
	be, ok := errors.AsType[*broker.Error](err)
	if !ok {
		t.Fatalf("%T is not a *broker.Error", err)
	}
	if be.Code != broker.NotFound || be.Text != "NOT_FOUND - no queue 'missing' in vhost '/'" {
		t.Fatalf("error %d %q", be.Code, be.Text)
	}
	if broker.NotFound.Hard() || !broker.NotAllowed.Hard() {
		t.Fatal("soft/hard classification")
	}
	// The closed channel reports the cause that closed it.
	_, err = e.ch.QueueDeclare("q", broker.QueueOptions{})
	if !errors.Is(err, broker.ErrClosed) || broker.Code(err) != broker.NotFound {
		t.Fatalf("after close: %v", err)
	}
}

func TestBrokerCloseCancelsEverything(t *testing.T) {
	b := broker.New()
	conn, err := b.Connect("/")
	must(t, err)
	ch, err := conn.Channel()
	must(t, err)
	_, err = ch.QueueDeclare("q", broker.QueueOptions{})
	must(t, err)
	c, err := ch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	b.Close()
	<-c.Done()
	if _, err := b.Connect("/"); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("connect after close: %v", err)
	}
}
