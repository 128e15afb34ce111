package twopc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

type delivererFunc func(context.Context, twopc.Message) error

func (f delivererFunc) Deliver(ctx context.Context, m twopc.Message) error { return f(ctx, m) }

// TestUndecodableMessageDeadLettered: bytes on a node's queue that are not
// a protocol message are parked in its dead-letter queue with the
// decoder's error, where troupe dlq finds them, and the node goes on with
// the next message.
func TestUndecodableMessageDeadLettered(t *testing.T) {
	ctx := t.Context()
	const url = "mem://twopc-dead-letters"
	tr, err := transport.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	b, err := twopc.NewBus(tr, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Declare(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	got := make(chan twopc.Message, 1)
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- b.Serve(sctx, "p", delivererFunc(func(_ context.Context, m twopc.Message) error { got <- m; return nil }), 1)
	}()
	defer func() { cancel(); <-served }()

	pub, err := tr.NewPublisher(bus.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(twopc.Topic("p"), message.NewMessage("garbage-1", []byte("{not json"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(ctx, twopc.Message{Kind: twopc.KindPrepare, GID: "g1", From: "c", To: "p"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.GID != "g1" {
			t.Fatalf("delivered %v, want the PREPARE of g1", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message after the undecodable one was not delivered")
	}

	conn, err := dlq.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	letters, err := dlq.List(ctx, conn, bus.DeadLetterQueue(twopc.Topic("p")))
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want the undecodable message alone: %+v", len(letters), letters)
	}
	l := letters[0]
	if l.ID != "garbage-1" || string(l.Body) != "{not json" || l.ErrorKind() != "decode" ||
		!strings.Contains(l.Error(), "invalid character") {
		t.Fatalf("dead letter %s %q: kind %q, error %q; want garbage-1 as sent, kind decode, the decoder's error",
			l.ID, l.Body, l.ErrorKind(), l.Error())
	}
}
