package broker

import (
	"fmt"
	"testing"
)

// TestInternedHeaders publishes more distinct routing keys than a channel
// interns, twice over, with and without properties, and checks that every
// message keeps its own exchange, routing key and properties, and that
// messages without properties share their header while the channel still
// holds it.
func TestInternedHeaders(t *testing.T) {
	b := New()
	t.Cleanup(b.Close)
	conn, err := b.Connect(DefaultVHost)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("fan", Fanout, ExchangeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q", QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("q", "fan", "", nil); err != nil {
		t.Fatal(err)
	}

	type published struct {
		exchange, key, msgID string
	}
	var want []published
	keys := maxInternedHeaders + 44
	for round := range 2 {
		for i := range keys {
			key := fmt.Sprintf("k%d", i)
			p := published{exchange: "fan", key: key}
			var props Properties
			if i%7 == 0 {
				p.msgID = fmt.Sprintf("m%d.%d", round, i)
				props.MessageID = p.msgID
			}
			// Twice in a row: the second message reuses the first's header.
			for range 2 {
				if _, err := ch.Publish(p.exchange, p.key, Publishing{Properties: props, Body: []byte(key)}, PublishOptions{}); err != nil {
					t.Fatal(err)
				}
				want = append(want, p)
			}
		}
	}

	var prev *Message
	for i, w := range want {
		d, ok, err := ch.Get("q", GetOptions{NoAck: true})
		if err != nil || !ok {
			t.Fatalf("get %d: %v, %t", i, err, ok)
		}
		got := published{exchange: d.Exchange(), key: d.RoutingKey(), msgID: d.Properties().MessageID}
		if got != w || string(d.Body) != w.key {
			t.Fatalf("message %d = %+v with body %q, want %+v", i, got, d.Body, w)
		}
		if i%2 == 1 {
			shared := d.hdr == prev.hdr
			if shared != (w.msgID == "") {
				t.Fatalf("message %d (%+v) shares its predecessor's header: %t", i, w, shared)
			}
		}
		prev = d.Message
	}
	if n := len(ch.headers); n > maxInternedHeaders {
		t.Errorf("channel interns %d headers, bound is %d", n, maxInternedHeaders)
	}
}

// TestZeroMessage checks the accessors of a Message built outside the
// broker, with no header.
func TestZeroMessage(t *testing.T) {
	var m Message
	if m.Exchange() != "" || m.RoutingKey() != "" || !m.Properties().isZero() || m.Persistent() {
		t.Errorf("zero Message: exchange %q, key %q, properties %+v", m.Exchange(), m.RoutingKey(), m.Properties())
	}
}
