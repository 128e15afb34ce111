package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

func TestDeadLetterEventsInProcess(t *testing.T) {
	f := newFixture(t, "mem://handlers-deadletter")
	sub, err := f.tr.NewSubscriber(bus.SubscriberConfig{Group: "watcher", Exchange: f.exchange()})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	announced, err := sub.Subscribe(ctx, handlers.DeadLetteredEvent)
	must(t, err)
	r := f.router(handlers.WithDeadLetterEvents())
	handlers.MustHandle(r, "refund", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		return handlers.Permanent(errors.New("refund gateway down"))
	}))
	f.run(r)
	dead := f.deadLetters("refund")
	must(t, r.Emitter().Emit(context.Background(), OrderPlaced{OrderID: "9"}, handlers.WithSagaID("saga-9")))
	letter := receive(t, dead)
	m := receive(t, announced)
	var d handlers.DeadLettered
	must(t, json.Unmarshal(m.Payload, &d))
	want := handlers.DeadLettered{Service: f.service, Handler: "refund", Queue: bus.WorkQueue(f.service, "refund"),
		DeadLetterQueue: bus.DeadLetterQueue(bus.WorkQueue(f.service, "refund")), Event: "order.placed",
		MessageID: letter.UUID, Error: "permanent: refund gateway down", ErrorKind: "permanent", Attempts: 1}
	if d != want {
		t.Errorf("announcement = %+v\nwant %+v", d, want)
	}
	if got := m.Metadata.Get(envelope.SagaIDKey); got != "saga-9" {
		t.Errorf("saga id %q, want the dead letter's", got)
	}
	if got := m.Metadata.Get(envelope.CausationIDKey); got != letter.UUID {
		t.Errorf("causation %q, want the dead letter %s", got, letter.UUID)
	}
}
