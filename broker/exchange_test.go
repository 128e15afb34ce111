package broker_test

import (
	"slices"
	"testing"

	"github.com/troupehq/troupe/broker"
)

// routed publishes one message per key and returns, per queue, the keys it
// received.
func routed(e *env, exchange string, queues []string, keys []string) map[string][]string {
	e.t.Helper()
	for _, k := range keys {
		e.publish(exchange, k, k)
	}
	out := map[string][]string{}
	for _, q := range queues {
		out[q] = e.drain(q)
	}
	return out
}

func TestDirectExchangeRoutesByExactKey(t *testing.T) {
	e := newEnv(t)
	e.exchange("orders", broker.Direct, nil)
	e.queue("placed", nil)
	e.queue("all", nil)
	e.bind("placed", "orders", "order.placed", nil)
	e.bind("all", "orders", "order.placed", nil)
	e.bind("all", "orders", "order.paid", nil)
	got := routed(e, "orders", []string{"placed", "all"}, []string{"order.placed", "order.paid", "order.other", "ORDER.PLACED"})
	want := map[string][]string{"placed": {"order.placed"}, "all": {"order.placed", "order.paid"}}
	assertRouted(t, got, want)
}

func TestFanoutExchangeIgnoresKey(t *testing.T) {
	e := newEnv(t)
	e.exchange("fan", broker.Fanout, nil)
	for _, q := range []string{"a", "b", "c"} {
		e.queue(q, nil)
		e.bind(q, "fan", "ignored-"+q, nil)
	}
	got := routed(e, "fan", []string{"a", "b", "c"}, []string{"x", ""})
	want := map[string][]string{"a": {"x", ""}, "b": {"x", ""}, "c": {"x", ""}}
	assertRouted(t, got, want)
}

func TestTopicExchangeWildcards(t *testing.T) {
	e := newEnv(t)
	e.exchange("topics", broker.Topic, nil)
	bindings := map[string]string{"q1": "*.orange.*", "q2": "*.*.rabbit", "q3": "lazy.#", "q4": "#", "q5": "order.*.v2"}
	for q, p := range bindings {
		e.queue(q, nil)
		e.bind(q, "topics", p, nil)
	}
	e.bind("q2", "topics", "lazy.#", nil) // two patterns matching one message deliver once
	keys := []string{"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
		"lazy.pink.rabbit", "quick.brown.fox", "orange", "lazy", "order.placed.v2", "order.v2"}
	got := routed(e, "topics", []string{"q1", "q2", "q3", "q4", "q5"}, keys)
	want := map[string][]string{
		"q1": {"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"},
		"q2": {"quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit", "lazy"},
		"q3": {"lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit", "lazy"},
		"q4": keys,
		"q5": {"order.placed.v2"},
	}
	assertRouted(t, got, want)
}

func TestHeadersExchange(t *testing.T) {
	tests := []struct {
		name string
		give broker.Table // binding arguments
		want []string     // message names routed
	}{
		{"all is the default", broker.Table{"format": "pdf", "type": "report"}, []string{"pdf-report"}},
		{"all", broker.Table{"x-match": "all", "format": "pdf", "type": "report"}, []string{"pdf-report"}},
		{"any", broker.Table{"x-match": "any", "format": "pdf", "type": "log"}, []string{"pdf-report", "pdf-x", "zip-log"}},
		{"void value matches presence", broker.Table{"type": nil}, []string{"pdf-report", "zip-log"}},
		{"integers of any width are equal", broker.Table{"size": int8(3)}, []string{"zip-log"}},
		{"all ignores x- arguments", broker.Table{"x-match": "all", "x-tag": "a", "format": "pdf"}, []string{"pdf-report", "pdf-x"}},
		{"all-with-x compares x- headers", broker.Table{"x-match": "all-with-x", "x-tag": "a", "format": "pdf"}, []string{"pdf-x"}},
		{"any ignores x- arguments", broker.Table{"x-match": "any", "x-tag": "a"}, nil},
		{"any-with-x compares x- headers", broker.Table{"x-match": "any-with-x", "x-tag": "a"}, []string{"pdf-x"}},
		{"empty all matches everything", broker.Table{}, []string{"pdf-report", "pdf-x", "zip-log"}},
	}
	messages := []struct {
		name    string
		headers broker.Table
	}{
		{"pdf-report", broker.Table{"format": "pdf", "type": "report"}},
		{"pdf-x", broker.Table{"format": "pdf", "x-tag": "a"}},
		{"zip-log", broker.Table{"format": "zip", "type": "log", "size": int64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.exchange("hdr", broker.Headers, nil)
			e.queue("q", nil)
			e.bind("q", "hdr", "", tt.give)
			for _, m := range messages {
				e.publishProps("hdr", "", m.name, broker.Properties{Headers: m.headers})
			}
			if got := e.drain("q"); !slices.Equal(got, tt.want) {
				t.Fatalf("routed %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHeadersExchangeRejectsBadXMatch(t *testing.T) {
	e := newEnv(t)
	e.exchange("hdr", broker.Headers, nil)
	e.queue("q", nil)
	wantCode(t, e.ch.QueueBind("q", "hdr", "", broker.Table{"x-match": "some"}), broker.PreconditionFailed)
}

func TestDefaultExchange(t *testing.T) {
	e := newEnv(t)
	e.queue("work", nil)
	e.publish("", "work", "m1")
	e.publish("", "nowhere", "m2")
	if got := e.drain("work"); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("got %v", got)
	}
	wantCode(t, e.ch.QueueBind("work", "", "k", nil), broker.AccessRefused)
	e.ch = e.channel()
	wantCode(t, e.ch.ExchangeDelete("", broker.ExchangeDeleteOptions{}), broker.AccessRefused)
	e.ch = e.channel()
	wantCode(t, e.ch.ExchangeDelete("amq.direct", broker.ExchangeDeleteOptions{}), broker.AccessRefused)
}

func TestPredeclaredExchanges(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} {
		must(t, e.ch.ExchangeDeclare(name, broker.Direct, broker.ExchangeOptions{Passive: true}))
	}
	wantCode(t, e.ch.ExchangeDeclare("amq.mine", broker.Direct, broker.ExchangeOptions{}), broker.AccessRefused)
}

func TestExchangeToExchangeBinding(t *testing.T) {
	e := newEnv(t)
	e.exchange("front", broker.Topic, nil)
	e.exchange("orders", broker.Fanout, nil)
	e.exchange("audit", broker.Fanout, nil)
	must(t, e.ch.ExchangeBind("orders", "front", "order.#", nil))
	must(t, e.ch.ExchangeBind("audit", "front", "#", nil))
	must(t, e.ch.ExchangeBind("front", "audit", "", nil)) // a cycle must not loop
	e.queue("oq", nil)
	e.queue("aq", nil)
	e.bind("oq", "orders", "", nil)
	e.bind("aq", "audit", "", nil)
	e.bind("aq", "front", "order.placed", nil) // reached twice, delivered once
	got := routed(e, "front", []string{"oq", "aq"}, []string{"order.placed", "user.created"})
	assertRouted(t, got, map[string][]string{"oq": {"order.placed"}, "aq": {"order.placed", "user.created"}})

	must(t, e.ch.ExchangeUnbind("orders", "front", "order.#", nil))
	got = routed(e, "front", []string{"oq", "aq"}, []string{"order.placed"})
	assertRouted(t, got, map[string][]string{"aq": {"order.placed"}})
}

func TestAlternateExchange(t *testing.T) {
	e := newEnv(t)
	e.exchange("unrouted", broker.Fanout, nil)
	e.exchange("main", broker.Direct, broker.Table{"alternate-exchange": "unrouted"})
	e.queue("known", nil)
	e.queue("lost", nil)
	e.bind("known", "main", "k", nil)
	e.bind("lost", "unrouted", "", nil)
	returned := 0
	e.ch.NotifyReturn(func(broker.Return) { returned++ })
	_, err := e.ch.Publish("main", "other", broker.Publishing{Body: []byte("m")}, broker.PublishOptions{Mandatory: true})
	must(t, err)
	got := routed(e, "main", []string{"known", "lost"}, []string{"k"})
	assertRouted(t, got, map[string][]string{"known": {"k"}, "lost": {"m"}})
	if returned != 0 {
		t.Fatalf("a message taken by the alternate exchange was returned")
	}
}

func TestInternalExchange(t *testing.T) {
	e := newEnv(t)
	must(t, e.ch.ExchangeDeclare("inner", broker.Fanout, broker.ExchangeOptions{Internal: true}))
	e.exchange("outer", broker.Fanout, nil)
	must(t, e.ch.ExchangeBind("inner", "outer", "", nil))
	e.queue("q", nil)
	e.bind("q", "inner", "", nil)
	e.publish("outer", "", "via-outer")
	if got := e.drain("q"); !slices.Equal(got, []string{"via-outer"}) {
		t.Fatalf("got %v", got)
	}
	_, err := e.ch.Publish("inner", "", broker.Publishing{}, broker.PublishOptions{})
	wantCode(t, err, broker.AccessRefused)
}

func TestAutoDeleteExchange(t *testing.T) {
	e := newEnv(t)
	must(t, e.ch.ExchangeDeclare("temp", broker.Direct, broker.ExchangeOptions{AutoDelete: true}))
	e.queue("q1", nil)
	e.queue("q2", nil)
	e.bind("q1", "temp", "a", nil)
	e.bind("q2", "temp", "a", nil)
	must(t, e.ch.QueueUnbind("q1", "temp", "a", nil))
	must(t, e.ch.ExchangeDeclare("temp", broker.Direct, broker.ExchangeOptions{Passive: true}))
	_, err := e.ch.QueueDelete("q2", broker.QueueDeleteOptions{}) // removes the last binding
	must(t, err)
	wantCode(t, e.ch.ExchangeDeclare("temp", broker.Direct, broker.ExchangeOptions{Passive: true}), broker.NotFound)
}

func TestExchangeDeclareErrors(t *testing.T) {
	tests := []struct {
		name string
		give func(ch *broker.Channel) error
		want broker.ReplyCode
	}{
		{"passive missing", func(ch *broker.Channel) error {
			return ch.ExchangeDeclare("nope", broker.Direct, broker.ExchangeOptions{Passive: true})
		}, broker.NotFound},
		{"other type", func(ch *broker.Channel) error {
			return ch.ExchangeDeclare("x", broker.Fanout, broker.ExchangeOptions{Durable: true})
		}, broker.PreconditionFailed},
		{"other durability", func(ch *broker.Channel) error {
			return ch.ExchangeDeclare("x", broker.Direct, broker.ExchangeOptions{})
		}, broker.PreconditionFailed},
		{"other alternate exchange", func(ch *broker.Channel) error {
			return ch.ExchangeDeclare("x", broker.Direct, broker.ExchangeOptions{Durable: true, Args: broker.Table{"alternate-exchange": "ae"}})
		}, broker.PreconditionFailed},
		{"unknown type", func(ch *broker.Channel) error {
			return ch.ExchangeDeclare("y", broker.ExchangeKind(9), broker.ExchangeOptions{})
		}, broker.CommandInvalid},
		{"bad table value", func(ch *broker.Channel) error {
			return ch.ExchangeDeclare("y", broker.Direct, broker.ExchangeOptions{Args: broker.Table{"k": struct{}{}}})
		}, broker.PreconditionFailed},
		{"delete in use", func(ch *broker.Channel) error {
			return ch.ExchangeDelete("x", broker.ExchangeDeleteOptions{IfUnused: true})
		}, broker.PreconditionFailed},
		{"publish to missing", func(ch *broker.Channel) error {
			_, err := ch.Publish("nope", "k", broker.Publishing{}, broker.PublishOptions{})
			return err
		}, broker.NotFound},
		{"bind missing queue", func(ch *broker.Channel) error {
			return ch.QueueBind("nope", "x", "k", nil)
		}, broker.NotFound},
		{"bind missing exchange", func(ch *broker.Channel) error {
			return ch.QueueBind("q", "nope", "k", nil)
		}, broker.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			must(t, e.ch.ExchangeDeclare("x", broker.Direct, broker.ExchangeOptions{Durable: true}))
			e.queue("q", nil)
			e.bind("q", "x", "k", nil)
			err := tt.give(e.ch)
			wantCode(t, err, tt.want)
			// A soft error closes the channel, as in AMQP.
			_, err = e.ch.QueueDeclare("q", broker.QueueOptions{})
			if !errorsIsClosed(err) {
				t.Fatalf("channel still open after %v: %v", tt.want, err)
			}
		})
	}
}

func TestParseExchangeKind(t *testing.T) {
	for _, k := range []broker.ExchangeKind{broker.Direct, broker.Fanout, broker.Topic, broker.Headers} {
		got, err := broker.ParseExchangeKind(k.String())
		must(t, err)
		if got != k {
			t.Fatalf("ParseExchangeKind(%q) = %v", k, got)
		}
	}
	_, err := broker.ParseExchangeKind("x-delayed-message")
	wantCode(t, err, broker.CommandInvalid)
}

func assertRouted(t *testing.T, got, want map[string][]string) {
	t.Helper()
	for q := range got {
		if !slices.Equal(got[q], want[q]) {
			t.Errorf("queue %s got %v, want %v", q, got[q], want[q])
		}
	}
}
