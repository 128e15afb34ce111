package broker_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/troupehq/troupe/broker"
)

func publishN(e *env, queue string, n int) {
	e.t.Helper()
	for i := range n {
		e.publish("", queue, strconv.Itoa(i))
	}
}

// takeAll receives every buffered delivery of c.
func takeAll(c *broker.Consumer) []broker.Delivery {
	var out []broker.Delivery
	for {
		d, ok := c.TryReceive()
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

func TestPrefetchPerConsumer(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	must(t, e.ch.Qos(broker.QosOptions{PrefetchCount: 2}))
	c, err := e.ch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	publishN(e, "q", 5)
	got := takeAll(c)
	if len(got) != 2 || e.count("q") != 3 {
		t.Fatalf("delivered %d with prefetch 2, %d ready", len(got), e.count("q"))
	}
	must(t, e.ch.Ack(got[0].DeliveryTag, 0))
	if more := takeAll(c); len(more) != 1 || string(more[0].Body) != "2" {
		t.Fatalf("after one ack: %v", bodies(more))
	}
}

func TestPrefetchPerChannel(t *testing.T) {
	e := newEnv(t)
	e.queue("a", nil)
	e.queue("b", nil)
	must(t, e.ch.Qos(broker.QosOptions{PrefetchCount: 3, Global: true}))
	ca, err := e.ch.Consume("a", broker.ConsumeOptions{})
	must(t, err)
	cb, err := e.ch.Consume("b", broker.ConsumeOptions{})
	must(t, err)
	publishN(e, "a", 2)
	publishN(e, "b", 2)
	da, db := takeAll(ca), takeAll(cb)
	if len(da)+len(db) != 3 {
		t.Fatalf("channel limit 3 delivered %d+%d", len(da), len(db))
	}
	// Acking on one queue frees credit that the other queue uses.
	must(t, e.ch.Ack(da[0].DeliveryTag, 0))
	if n := len(takeAll(ca)) + len(takeAll(cb)); n != 1 {
		t.Fatalf("after an ack %d more deliveries, want 1", n)
	}
}

func TestAutoAck(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	c, err := e.ch.Consume("q", broker.ConsumeOptions{NoAck: true})
	must(t, err)
	publishN(e, "q", 3)
	got := takeAll(c)
	if len(got) != 3 || got[0].DeliveryTag != 0 {
		t.Fatalf("no-ack deliveries %v", got)
	}
	must(t, e.ch.Close()) // nothing to requeue
	e.ch = e.channel()
	if e.count("q") != 0 {
		t.Fatal("no-ack messages came back")
	}
}

func TestAckMultiple(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	c, err := e.ch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	publishN(e, "q", 5)
	got := takeAll(c)
	must(t, e.ch.Ack(got[2].DeliveryTag, broker.Multiple)) // acks 0, 1, 2
	wantCode(t, e.ch.Ack(got[1].DeliveryTag, 0), broker.PreconditionFailed)
	e.ch = e.channel()
	c2, err := e.ch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	if again := takeAll(c2); !slices.Equal(bodies(again), []string{"3", "4"}) {
		t.Fatalf("requeued after channel close %v, want [3 4]", bodies(again))
	}
}

func TestNackMultipleRequeue(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	c, err := e.ch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	publishN(e, "q", 3)
	got := takeAll(c)
	must(t, c.Cancel())
	must(t, e.ch.Nack(0, broker.Multiple|broker.Requeue)) // tag 0 + multiple: all
	if got := e.drain("q"); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Fatalf("requeued %v", got)
	}
	_ = got
}

func TestRequeueKeepsPlaceAndMarksRedelivered(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	publishN(e, "q", 4)
	d0, d1 := e.get("q"), e.get("q")
	// Requeue out of order: both go back before "2" and "3", in order.
	must(t, e.ch.Reject(d1.DeliveryTag, broker.Requeue))
	must(t, e.ch.Reject(d0.DeliveryTag, broker.Requeue))
	var got []string
	for range 4 {
		d := e.get("q")
		got = append(got, string(d.Body)+":"+strconv.FormatBool(d.Redelivered))
		must(t, e.ch.Ack(d.DeliveryTag, 0))
	}
	want := []string{"0:true", "1:true", "2:false", "3:false"}
	if !slices.Equal(got, want) {
		t.Fatalf("order after requeue %v, want %v", got, want)
	}
}

func TestRoundRobinAmongConsumers(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	var cs []*broker.Consumer
	for range 3 {
		c, err := e.ch.Consume("q", broker.ConsumeOptions{NoAck: true})
		must(t, err)
		cs = append(cs, c)
	}
	publishN(e, "q", 9)
	for i, c := range cs {
		got := bodies(takeAll(c))
		want := []string{strconv.Itoa(i), strconv.Itoa(i + 3), strconv.Itoa(i + 6)}
		if !slices.Equal(got, want) {
			t.Errorf("consumer %d got %v, want %v", i, got, want)
		}
	}
}

func TestExclusiveConsumer(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	_, err := e.ch.Consume("q", broker.ConsumeOptions{Exclusive: true})
	must(t, err)
	_, err = e.channel().Consume("q", broker.ConsumeOptions{})
	wantCode(t, err, broker.AccessRefused)

	e.queue("q2", nil)
	_, err = e.ch.Consume("q2", broker.ConsumeOptions{})
	must(t, err)
	_, err = e.channel().Consume("q2", broker.ConsumeOptions{Exclusive: true})
	wantCode(t, err, broker.AccessRefused)
}

func TestCancelStopsDeliveries(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	c, err := e.ch.Consume("q", broker.ConsumeOptions{Tag: "me"})
	must(t, err)
	publishN(e, "q", 1)
	d := receive(t, c)
	must(t, e.ch.Cancel("me"))
	publishN(e, "q", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Receive(ctx); !errors.Is(err, broker.ErrCancelled) {
		t.Fatalf("receive after cancel: %v", err)
	}
	if c.Cause() != nil {
		t.Fatalf("client cancel has a cause: %v", c.Cause())
	}
	must(t, e.ch.Ack(d.DeliveryTag, 0)) // acks still work after cancel
	if e.count("q") != 1 {
		t.Fatal("message after cancel was not left in the queue")
	}
}

func TestConsumerTagReuseClosesConnection(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	_, err := e.ch.Consume("q", broker.ConsumeOptions{Tag: "t"})
	must(t, err)
	_, err = e.ch.Consume("q", broker.ConsumeOptions{Tag: "t"})
	wantCode(t, err, broker.NotAllowed)
	if closed, _ := e.conn.Done(); !closed {
		t.Fatal("a hard error must close the connection")
	}
}

func TestBasicGet(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	if _, ok, err := e.ch.Get("q", broker.GetOptions{}); ok || err != nil {
		t.Fatalf("get on empty queue: %v %v", ok, err)
	}
	publishN(e, "q", 3)
	d := e.get("q")
	if string(d.Body) != "0" || d.MessageCount != 2 || d.DeliveryTag == 0 {
		t.Fatalf("get %+v", d)
	}
	must(t, e.ch.Close()) // the unacked get is requeued
	e.ch = e.channel()
	if got := e.drain("q"); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Fatalf("after close %v", got)
	}
	_, _, err := e.ch.Get("missing", broker.GetOptions{})
	wantCode(t, err, broker.NotFound)
}

func TestChannelCloseRequeuesUnacked(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	ch := e.channel()
	c, err := ch.Consume("q", broker.ConsumeOptions{})
	must(t, err)
	publishN(e, "q", 3)
	got := takeAll(c)
	must(t, ch.Ack(got[1].DeliveryTag, 0))
	must(t, ch.Close())
	<-c.Done()
	if left := e.drain("q"); !slices.Equal(left, []string{"0", "2"}) {
		t.Fatalf("requeued %v", left)
	}
	_, err = ch.Publish("", "q", broker.Publishing{}, broker.PublishOptions{})
	if !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish on closed channel: %v", err)
	}
}

func TestRecover(t *testing.T) {
	e := newEnv(t)
	e.queue("q", nil)
	publishN(e, "q", 2)
	e.get("q")
	e.get("q")
	must(t, e.ch.Recover())
	if e.count("q") != 2 {
		t.Fatalf("recover left %d ready", e.count("q"))
	}
}

func TestQosErrors(t *testing.T) {
	e := newEnv(t)
	wantCode(t, e.ch.Qos(broker.QosOptions{PrefetchCount: 70000}), broker.PreconditionFailed)
	e.ch = e.channel()
	wantCode(t, e.ch.Qos(broker.QosOptions{PrefetchSize: 1}), broker.NotImplemented)
}

func TestConsumerFlowControlWindow(t *testing.T) {
	e := newEnv(t, broker.WithConsumerWindow(4))
	e.queue("q", nil)
	c, err := e.ch.Consume("q", broker.ConsumeOptions{NoAck: true})
	must(t, err)
	publishN(e, "q", 10)
	if n := e.count("q"); n != 6 {
		t.Fatalf("%d ready with a window of 4, want 6", n)
	}
	var got []string
	for range 10 {
		got = append(got, string(receive(t, c).Body))
	}
	want := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	if !slices.Equal(got, want) {
		t.Fatalf("received %v", got)
	}
}
