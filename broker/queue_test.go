package broker_test

import (
	"strings"
	"testing"

	"github.com/troupehq/troupe/broker"
)

func TestQueueRedeclareEquivalence(t *testing.T) {
	base := broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": int32(1000), "x-max-length": int64(10)}}
	tests := []struct {
		name string
		give broker.QueueOptions
		want broker.ReplyCode // 0: accepted
	}{
		{"same", base, 0},
		{"same args, other integer widths", broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": int64(1000), "x-max-length": int16(10)}}, 0},
		{"unknown args are not compared", broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": 1000, "x-max-length": 10, "my-arg": "v"}}, 0},
		{"explicit classic type", broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": 1000, "x-max-length": 10, "x-queue-type": "classic"}}, 0},
		{"durable differs", broker.QueueOptions{Args: base.Args}, broker.PreconditionFailed},
		{"auto-delete differs", broker.QueueOptions{Durable: true, AutoDelete: true, Args: base.Args}, broker.PreconditionFailed},
		{"exclusive differs", broker.QueueOptions{Durable: true, Exclusive: true, Args: base.Args}, broker.ResourceLocked},
		{"ttl differs", broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": 999, "x-max-length": 10}}, broker.PreconditionFailed},
		{"arg missing", broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": 1000}}, broker.PreconditionFailed},
		{"arg added", broker.QueueOptions{Durable: true, Args: broker.Table{"x-message-ttl": 1000, "x-max-length": 10, "x-overflow": "reject-publish"}}, broker.PreconditionFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			_, err := e.ch.QueueDeclare("q", base)
			must(t, err)
			_, err = e.ch.QueueDeclare("q", tt.give)
			wantCode(t, err, tt.want)
		})
	}
}

func TestQueueArgumentValidation(t *testing.T) {
	tests := []struct {
		name string
		give broker.QueueOptions
		want broker.ReplyCode
	}{
		{"negative ttl", broker.QueueOptions{Args: broker.Table{"x-message-ttl": -1}}, broker.PreconditionFailed},
		{"string ttl", broker.QueueOptions{Args: broker.Table{"x-message-ttl": "10"}}, broker.PreconditionFailed},
		{"zero expires", broker.QueueOptions{Args: broker.Table{"x-expires": 0}}, broker.PreconditionFailed},
		{"negative max length", broker.QueueOptions{Args: broker.Table{"x-max-length": -5}}, broker.PreconditionFailed},
		{"unknown overflow", broker.QueueOptions{Args: broker.Table{"x-overflow": "drop-tail"}}, broker.PreconditionFailed},
		{"routing key without exchange", broker.QueueOptions{Args: broker.Table{"x-dead-letter-routing-key": "k"}}, broker.PreconditionFailed},
		{"sac not bool", broker.QueueOptions{Args: broker.Table{"x-single-active-consumer": 1}}, broker.PreconditionFailed},
		{"unknown mode", broker.QueueOptions{Args: broker.Table{"x-queue-mode": "eager"}}, broker.PreconditionFailed},
		{"stream type", broker.QueueOptions{Durable: true, Args: broker.Table{"x-queue-type": "stream"}}, broker.PreconditionFailed},
		{"transient quorum", broker.QueueOptions{Args: broker.Table{"x-queue-type": "quorum"}}, broker.PreconditionFailed},
		{"reserved name", broker.QueueOptions{}, broker.AccessRefused},
		{"lazy mode hint", broker.QueueOptions{Args: broker.Table{"x-queue-mode": "lazy"}}, 0},
		{"quorum hint", broker.QueueOptions{Durable: true, Args: broker.Table{"x-queue-type": "quorum"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			name := "q"
			if tt.name == "reserved name" {
				name = "amq.q"
			}
			_, err := e.ch.QueueDeclare(name, tt.give)
			wantCode(t, err, tt.want)
		})
	}
}

func TestServerNamedQueue(t *testing.T) {
	e := newEnv(t)
	a := e.queue("", nil)
	b := e.queue("", nil)
	if !strings.HasPrefix(a, "amq.gen-") || a == b {
		t.Fatalf("server names %q, %q", a, b)
	}
	e.publish("", a, "m")
	if e.count(a) != 1 {
		t.Fatal("server-named queue does not take messages")
	}
}

func TestPassiveDeclare(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	e.publish("", "q", "1")
	e.publish("", "q", "2")
	c, err := e.ch.Consume("q", broker.ConsumeOptions{Tag: "c"})
	must(t, err)
	receive(t, c)
	info, err := e.ch.QueueDeclare("q", broker.QueueOptions{Passive: true, Durable: true})
	must(t, err)
	if info.Messages != 0 || info.Consumers != 1 {
		t.Fatalf("info %+v: want 0 ready (both delivered, in the buffer) and 1 consumer", info)
	}
	_, err = e.ch.QueueDeclare("missing", broker.QueueOptions{Passive: true})
	wantCode(t, err, broker.NotFound)
}

func TestExclusiveQueue(t *testing.T) {
	e := newEnv(t)
	_, err := e.ch.QueueDeclare("mine", broker.QueueOptions{Exclusive: true})
	must(t, err)
	other, och := e.otherConn()
	tests := []struct {
		name string
		give func(ch *broker.Channel) error
	}{
		{"declare", func(ch *broker.Channel) error {
			_, err := ch.QueueDeclare("mine", broker.QueueOptions{Exclusive: true})
			return err
		}},
		{"passive declare", func(ch *broker.Channel) error {
			_, err := ch.QueueDeclare("mine", broker.QueueOptions{Passive: true})
			return err
		}},
		{"consume", func(ch *broker.Channel) error { _, err := ch.Consume("mine", broker.ConsumeOptions{}); return err }},
		{"get", func(ch *broker.Channel) error { _, _, err := ch.Get("mine", broker.GetOptions{}); return err }},
		{"bind", func(ch *broker.Channel) error { return ch.QueueBind("mine", "amq.direct", "k", nil) }},
		{"purge", func(ch *broker.Channel) error { _, err := ch.QueuePurge("mine"); return err }},
		{"delete", func(ch *broker.Channel) error {
			_, err := ch.QueueDelete("mine", broker.QueueDeleteOptions{})
			return err
		}},
	}
	for _, tt := range tests {
		och, err := other.Channel()
		must(t, err)
		wantCode(t, tt.give(och), broker.ResourceLocked)
	}
	// Publishing to it from elsewhere is allowed.
	_, err = och.Publish("", "mine", broker.Publishing{Body: []byte("m")}, broker.PublishOptions{})
	wantCode(t, err, 0)
	if e.count("mine") != 1 {
		t.Fatal("message not delivered to exclusive queue")
	}
	must(t, e.conn.Close())
	ch, err := other.Channel()
	must(t, err)
	_, err = ch.QueueDeclare("mine", broker.QueueOptions{Passive: true})
	wantCode(t, err, broker.NotFound)
}

func TestAutoDeleteQueue(t *testing.T) {
	e := newEnv(t)
	_, err := e.ch.QueueDeclare("auto", broker.QueueOptions{AutoDelete: true})
	must(t, err)
	c1, err := e.ch.Consume("auto", broker.ConsumeOptions{Tag: "c1"})
	must(t, err)
	c2, err := e.ch.Consume("auto", broker.ConsumeOptions{Tag: "c2"})
	must(t, err)
	must(t, c1.Cancel())
	if e.count("auto") != 0 {
		t.Fatal("queue vanished while a consumer remains")
	}
	must(t, c2.Cancel())
	_, err = e.ch.QueueDeclare("auto", broker.QueueOptions{Passive: true})
	wantCode(t, err, broker.NotFound)
}

func TestPurge(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	for range 5 {
		e.publish("", "q", "m")
	}
	held := e.get("q") // unacked: not purged
	n, err := e.ch.QueuePurge("q")
	must(t, err)
	if n != 4 || e.count("q") != 0 {
		t.Fatalf("purged %d, left %d", n, e.count("q"))
	}
	must(t, e.ch.Reject(held.DeliveryTag, broker.Requeue))
	if e.count("q") != 1 {
		t.Fatal("unacked message lost by purge")
	}
}

func TestQueueDeleteConditions(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	e.publish("", "q", "m")
	_, err := e.ch.QueueDelete("q", broker.QueueDeleteOptions{IfEmpty: true})
	wantCode(t, err, broker.PreconditionFailed)

	cch := e.channel() // the consumer's channel stays open
	must(t, cch.Qos(broker.QosOptions{PrefetchCount: 1}))
	c, err := cch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	receive(t, c)
	e.ch = e.channel()
	_, err = e.ch.QueueDelete("q", broker.QueueDeleteOptions{IfUnused: true})
	wantCode(t, err, broker.PreconditionFailed)

	e.ch = e.channel()
	e.publish("", "q", "m2")
	n, err := e.ch.QueueDelete("q", broker.QueueDeleteOptions{})
	must(t, err)
	if n != 1 { // m was delivered to c, m2 is ready
		t.Fatalf("deleted %d ready messages, want 1", n)
	}
	<-c.Done() // the broker cancels consumers of a deleted queue
	wantCode(t, c.Cause(), broker.NotFound)
	n, err = e.ch.QueueDelete("q", broker.QueueDeleteOptions{})
	if err != nil || n != 0 {
		t.Fatalf("deleting a missing queue: %d, %v", n, err)
	}
}

func TestVHostsAreIsolated(t *testing.T) {
	e := newEnv(t)
	must(t, e.b.AddVHost("shop"))
	conn, err := e.b.Connect("shop")
	must(t, err)
	ch, err := conn.Channel()
	must(t, err)
	_, err = ch.QueueDeclare("q", broker.QueueOptions{})
	must(t, err)
	_, err = e.ch.QueueDeclare("q", broker.QueueOptions{Passive: true})
	wantCode(t, err, broker.NotFound)
	_, err = e.b.Connect("nowhere")
	wantCode(t, err, broker.NotAllowed)
	must(t, e.b.DeleteVHost("shop"))
	if closed, cause := conn.Done(); !closed || broker.Code(cause) != broker.ConnectionForced {
		t.Fatalf("connection to a deleted vhost: closed=%v cause=%v", closed, cause)
	}
}
