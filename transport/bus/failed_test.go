package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// TestFailedCopy: the copy drops the broker's headers, keeps the rest and
// the original untouched, records the failure, and keeps the first
// failure's time of an earlier one.
func TestFailedCopy(t *testing.T) {
	msg := message.NewMessage("m1", []byte("body"))
	msg.Metadata.Set(envelope.EventKey, "order.placed")
	msg.Metadata.Set("x-death", "[...]")
	msg.Metadata.Set(bus.RedeliveredKey, "true")
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.FixedZone("x", 3600))
	out := bus.FailedCopy(context.Background(), msg, "payment.charge", "decode", errors.New("bad json"), now)
	md := out.Metadata
	for k, want := range map[string]string{
		envelope.EventKey: "order.placed", "x-death": "", bus.RedeliveredKey: "",
		envelope.ErrorKey: "bad json", envelope.ErrorKindKey: "decode", envelope.QueueKey: "payment.charge",
		envelope.LastFailureKey: "2026-12-02T03:00:00Z", envelope.FirstFailureKey: "2026-12-02T03:00:00Z",
	} {
		if got := md.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if out.UUID != "m1" || string(out.Payload) != "body" || msg.Metadata.Get("x-death") == "" || msg.Metadata.Get(envelope.ErrorKey) != "" {
		t.Fatalf("copy %s %q, original %v", out.UUID, out.Payload, msg.Metadata)
	}
	again := bus.FailedCopy(context.Background(), out, "payment.charge", "transient", errors.New("down"), now.Add(time.Hour))
	if got := again.Metadata.Get(envelope.FirstFailureKey); got != "2026-12-02T03:00:00Z" {
		t.Fatalf("first failure %q after a second one, want the first's time", got)
	}
}
