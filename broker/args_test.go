package broker_test

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/troupehq/troupe/broker"
)

// dlxEnv has a fanout dead-letter exchange "dlx" bound to queue "dlq".
func dlxEnv(t *testing.T) *env {
	e := newEnv(t)
	e.exchange("dlx", broker.Fanout, nil)
	e.queue("dlq", nil)
	e.bind("dlq", "dlx", "", nil)
	return e
}

func deaths(t *testing.T, d broker.Delivery) []broker.Table {
	t.Helper()
	raw, ok := d.Properties().Headers["x-death"].([]any)
	if !ok {
		t.Fatalf("no x-death header in %v", d.Properties().Headers)
	}
	out := make([]broker.Table, len(raw))
	for i, r := range raw {
		out[i] = r.(broker.Table)
	}
	return out
}

func TestMessageTTLExpiresToDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := dlxEnv(t)
		e.queue("q", broker.Table{"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"})
		e.publish("", "q", "old")
		time.Sleep(600 * time.Millisecond)
		e.publish("", "q", "young")
		time.Sleep(500 * time.Millisecond) // "old" is 1.1 s old, "young" 0.5 s
		synctest.Wait()
		if got := e.drain("dlq"); !slices.Equal(got, []string{"old"}) {
			t.Fatalf("dead letters %v, want [old]", got)
		}
		if e.count("q") != 1 {
			t.Fatalf("young message expired early")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if e.count("q") != 0 || e.count("dlq") != 1 {
			t.Fatalf("young message did not expire")
		}
	})
}

func TestPerMessageExpiration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := dlxEnv(t)
		e.queue("q", broker.Table{"x-message-ttl": 10000, "x-dead-letter-exchange": "dlx"})
		// The smaller of the queue's TTL and the message's expiration wins.
		e.publishProps("", "q", "short", broker.Properties{Expiration: "100"})
		e.publishProps("", "q", "long", broker.Properties{Expiration: "60000"})
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		dl := e.get("dlq")
		if string(dl.Body) != "short" {
			t.Fatalf("dead letter %q", dl.Body)
		}
		if dl.Properties().Expiration != "" {
			t.Fatal("dead letter keeps its expiration")
		}
		if got := deaths(t, dl)[0]["original-expiration"]; got != "100" {
			t.Fatalf("original-expiration %v", got)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := e.drain("dlq"); !slices.Equal(got, []string{"long"}) {
			t.Fatalf("queue TTL did not cap the message's: %v", got)
		}
		_, err := e.ch.Publish("", "q", broker.Publishing{Properties: broker.Properties{Expiration: "soon"}}, broker.PublishOptions{})
		wantCode(t, err, broker.PreconditionFailed)
	})
}

func TestZeroExpirationOnlyReachesWaitingConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := dlxEnv(t)
		e.queue("q", broker.Table{"x-dead-letter-exchange": "dlx"})
		e.publishProps("", "q", "nobody-waits", broker.Properties{Expiration: "0"})
		synctest.Wait()
		c, err := e.ch.Consume("q", broker.ConsumeOptions{NoAck: true})
		must(t, err)
		e.publishProps("", "q", "taken", broker.Properties{Expiration: "0"})
		if d := receive(t, c); string(d.Body) != "taken" {
			t.Fatalf("got %q", d.Body)
		}
		if got := e.drain("dlq"); !slices.Equal(got, []string{"nobody-waits"}) {
			t.Fatalf("dead letters %v", got)
		}
	})
}

func TestQueueExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.queue("idle", broker.Table{"x-expires": 1000})
		e.queue("used", broker.Table{"x-expires": 1000})
		c, err := e.channel().Consume("used", broker.ConsumeOptions{})
		must(t, err)
		time.Sleep(900 * time.Millisecond)
		e.get0("idle") // a basic.get is a use: the period restarts
		time.Sleep(900 * time.Millisecond)
		synctest.Wait()
		e.count("idle")
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		_, err = e.ch.QueueDeclare("idle", broker.QueueOptions{Passive: true})
		wantCode(t, err, broker.NotFound)
		e.ch = e.channel()
		time.Sleep(5 * time.Second)
		e.count("used") // a queue with a consumer never expires
		must(t, c.Cancel())
		time.Sleep(1100 * time.Millisecond)
		synctest.Wait()
		_, err = e.ch.QueueDeclare("used", broker.QueueOptions{Passive: true})
		wantCode(t, err, broker.NotFound)
	})
}

// get0 is a basic.get that may find nothing.
func (e *env) get0(queue string) {
	e.t.Helper()
	_, _, err := e.ch.Get(queue, broker.GetOptions{NoAck: true})
	must(e.t, err)
}

func TestMaxLengthOverflow(t *testing.T) {
	tests := []struct {
		name      string
		give      broker.Table
		wantReady []string
		wantDead  []string
		wantNacks []uint64
	}{
		{"drop-head by count", broker.Table{"x-max-length": 2}, []string{"2", "3"}, []string{"1"}, nil},
		{"drop-head by bytes", broker.Table{"x-max-length-bytes": 2}, []string{"2", "3"}, []string{"1"}, nil},
		{"reject-publish", broker.Table{"x-max-length": 2, "x-overflow": "reject-publish"}, []string{"1", "2"}, nil, []uint64{3}},
		{"reject-publish-dlx", broker.Table{"x-max-length": 2, "x-overflow": "reject-publish-dlx"}, []string{"1", "2"}, []string{"3"}, []uint64{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := dlxEnv(t)
			args := broker.Table{"x-dead-letter-exchange": "dlx"}
			for k, v := range tt.give {
				args[k] = v
			}
			e.queue("q", args)
			var nacks []uint64
			must(t, e.ch.Confirm(func(c broker.Confirmation) {
				if !c.Ack {
					nacks = append(nacks, c.DeliveryTag)
				}
			}))
			for _, b := range []string{"1", "2", "3"} {
				e.publish("", "q", b)
			}
			if got := e.drain("q"); !slices.Equal(got, tt.wantReady) {
				t.Errorf("ready %v, want %v", got, tt.wantReady)
			}
			dead := e.drain("dlq")
			if !slices.Equal(dead, tt.wantDead) {
				t.Errorf("dead letters %v, want %v", dead, tt.wantDead)
			}
			if !slices.Equal(nacks, tt.wantNacks) {
				t.Errorf("nacks %v, want %v", nacks, tt.wantNacks)
			}
		})
	}
}

func TestDeadLetterOnRejectWithXDeath(t *testing.T) {
	e := newEnv(t)
	e.exchange("dlx", broker.Direct, nil)
	e.queue("dlq", nil)
	e.bind("dlq", "dlx", "failed", nil)
	e.queue("work", broker.Table{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "failed"})
	e.exchange("orders", broker.Direct, nil)
	e.bind("work", "orders", "order.placed", nil)
	e.publishProps("orders", "order.placed", "m", broker.Properties{Headers: broker.Table{"trace": "t1"}})

	d := e.get("work")
	must(t, e.ch.Nack(d.DeliveryTag, 0))
	dl := e.get("dlq")
	if dl.Exchange() != "dlx" || dl.RoutingKey() != "failed" || dl.Properties().Headers["trace"] != "t1" {
		t.Fatalf("dead letter %+v %+v", dl.Message, dl.Properties())
	}
	x := deaths(t, dl)
	want := broker.Table{"count": int64(1), "reason": "rejected", "queue": "work", "exchange": "orders"}
	for k, v := range want {
		if x[0][k] != v {
			t.Errorf("x-death %s = %v, want %v", k, x[0][k], v)
		}
	}
	if keys := x[0]["routing-keys"].([]any); len(keys) != 1 || keys[0] != "order.placed" {
		t.Errorf("routing-keys %v", keys)
	}
	if _, ok := x[0]["time"].(time.Time); !ok {
		t.Errorf("x-death time %T", x[0]["time"])
	}
	hdr := dl.Properties().Headers
	if hdr["x-first-death-reason"] != "rejected" || hdr["x-first-death-queue"] != "work" || hdr["x-first-death-exchange"] != "orders" {
		t.Errorf("x-first-death headers %v", hdr)
	}

	// Shovel it back and reject again: the same (queue, reason) entry
	// counts up instead of growing the list.
	_, err := e.ch.Publish("", "work", broker.Publishing{Properties: *dl.Properties(), Body: dl.Body}, broker.PublishOptions{})
	must(t, err)
	must(t, e.ch.Ack(dl.DeliveryTag, 0))
	d = e.get("work")
	must(t, e.ch.Reject(d.DeliveryTag, 0))
	x = deaths(t, e.get("dlq"))
	if len(x) != 1 || x[0]["count"] != int64(2) {
		t.Fatalf("x-death after second rejection: %v", x)
	}
}

func TestDeadLetterCycleIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		// Expired messages of q go to its own dead-letter exchange, which
		// routes back to q: RabbitMQ drops them instead of cycling.
		e.exchange("loop", broker.Fanout, nil)
		e.queue("q", broker.Table{"x-message-ttl": 10, "x-dead-letter-exchange": "loop"})
		e.bind("q", "loop", "", nil)
		e.publish("", "q", "m")
		time.Sleep(time.Second)
		synctest.Wait()
		if n := e.count("q"); n != 0 {
			t.Fatalf("%d messages still cycling", n)
		}
	})
}

func TestSingleActiveConsumer(t *testing.T) {
	e := newEnv(t)
	e.queue("q", broker.Table{"x-single-active-consumer": true})
	first, err := e.ch.Consume("q", broker.ConsumeOptions{NoAck: true})
	must(t, err)
	second, err := e.ch.Consume("q", broker.ConsumeOptions{NoAck: true})
	must(t, err)
	for _, b := range []string{"1", "2", "3"} {
		e.publish("", "q", b)
	}
	for _, want := range []string{"1", "2", "3"} {
		if d := receive(t, first); string(d.Body) != want {
			t.Fatalf("active consumer got %q, want %q", d.Body, want)
		}
	}
	noDelivery(t, second)
	must(t, first.Cancel())
	e.publish("", "q", "4")
	if d := receive(t, second); string(d.Body) != "4" {
		t.Fatalf("next consumer got %q", d.Body)
	}
}
