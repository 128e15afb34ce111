package twopc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	got := make(chan twopc.Message, 1)
	tr, b := serveNode(t, url, delivererFunc(func(_ context.Context, m twopc.Message) error { got <- m; return nil }))

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

// TestRejectedMessageDeadLettered: a protocol message its node rejects
// (ErrRejected) is parked in the dead-letter queue of the node's queue
// with the node's reason, as sent; a message the node fails on otherwise
// is not (the protocol sends it again), and the node goes on.
func TestRejectedMessageDeadLettered(t *testing.T) {
	ctx := t.Context()
	const url = "mem://twopc-rejected"
	got := make(chan twopc.Message, 3)
	_, b := serveNode(t, url, delivererFunc(func(_ context.Context, m twopc.Message) error {
		got <- m
		switch m.GID {
		case "forged":
			return fmt.Errorf("%w: commit forged from %q: the branch's coordinator is %q", twopc.ErrRejected, m.From, "c")
		case "busy":
			return errors.New("database is locked")
		}
		return nil
	}))

	for _, m := range []twopc.Message{
		{Kind: twopc.KindDecision, GID: "forged", From: "mallory", To: "p", Outcome: twopc.Commit},
		{Kind: twopc.KindDecision, GID: "busy", From: "c", To: "p", Outcome: twopc.Commit},
		{Kind: twopc.KindPrepare, GID: "g1", From: "c", To: "p"},
	} {
		if err := b.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"forged", "busy", "g1"} {
		select {
		case m := <-got:
			if m.GID != want {
				t.Fatalf("delivered %v, want %s next", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was not delivered", want)
		}
	}

	conn, err := dlq.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var letters []dlq.Letter
	for deadline := time.Now().Add(10 * time.Second); len(letters) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if letters, err = dlq.List(ctx, conn, bus.DeadLetterQueue(twopc.Topic("p"))); err != nil {
			t.Fatal(err)
		}
	}
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want the rejected decision alone: %+v", len(letters), letters)
	}
	l := letters[0]
	var m twopc.Message
	if err := json.Unmarshal(l.Body, &m); err != nil || m.GID != "forged" || m.From != "mallory" {
		t.Fatalf("dead letter %q (%v), want the forged decision as sent", l.Body, err)
	}
	if l.ErrorKind() != "rejected" || !strings.Contains(l.Error(), "the branch's coordinator is") {
		t.Fatalf("dead letter of kind %q, error %q; want kind rejected with the node's reason", l.ErrorKind(), l.Error())
	}
}

// serveNode serves node "p" with d on a bus of the bundled broker at url,
// until the test ends; it returns the transport and the bus.
func serveNode(t *testing.T, url string, d twopc.Deliverer) (transport.Transport, *twopc.Bus) {
	t.Helper()
	tr, err := transport.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	b, err := twopc.NewBus(tr, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Declare(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx, "p", d, 1) }()
	t.Cleanup(func() { cancel(); <-served })
	return tr, b
}
