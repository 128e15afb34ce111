package envelope_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport/envelope"
)

func TestRoundTrip(t *testing.T) {
	msg := message.NewMessage("id-1", []byte("body"))
	msg.Metadata.Set("saga_id", "s-1")
	got := envelope.Message(envelope.Headers(msg), "", msg.Payload)
	if got.UUID != "id-1" || got.Metadata.Get("saga_id") != "s-1" || len(got.Metadata) != 1 || string(got.Payload) != "body" {
		t.Fatalf("got %s %v %q", got.UUID, got.Metadata, got.Payload)
	}
	if got := envelope.Message(map[string]any{}, "from-property", nil); got.UUID != "from-property" {
		t.Fatalf("UUID from message-id: %q", got.UUID)
	}
}

type table map[string]any // like broker.Table and amqp091.Table

func TestNonStringHeadersBecomeText(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	headers := map[string]any{
		"n":   int64(3),
		"ok":  true,
		"f":   1.5,
		"raw": []byte("bytes"),
		"x-death": []any{table{
			"count": int64(2), "reason": "expired", "queue": "q.retry.1s", "time": at,
			"exchange": "", "routing-keys": []any{"q.retry.1s"},
		}},
	}
	msg := envelope.Message(headers, "m", nil)
	for k, want := range map[string]string{"n": "3", "ok": "true", "f": "1.5", "raw": "bytes"} {
		if got := msg.Metadata.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	ds, err := envelope.Deaths(msg)
	if err != nil || len(ds) != 1 {
		t.Fatalf("deaths %v %v (%s)", ds, err, msg.Metadata.Get("x-death"))
	}
	want := envelope.Death{Queue: "q.retry.1s", Reason: "expired", Count: 2, RoutingKeys: []string{"q.retry.1s"}, Time: at}
	if d := ds[0]; d.Queue != want.Queue || d.Reason != want.Reason || d.Count != want.Count || !d.Time.Equal(at) || d.RoutingKeys[0] != "q.retry.1s" {
		t.Fatalf("death %+v, want %+v", d, want)
	}
}

// FuzzDeaths feeds arbitrary x-death text: a bad one is an error, never a
// panic.
func FuzzDeaths(f *testing.F) {
	f.Add(`[{"queue":"q","reason":"expired","count":1,"time":"2026-11-24T10:00:00Z"}]`)
	f.Add(`[]`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, raw string) {
		msg := message.NewMessage("m", nil)
		msg.Metadata.Set("x-death", raw)
		_, _ = envelope.Deaths(msg)
	})
}

// FuzzMessage feeds arbitrary header values through the decoder.
func FuzzMessage(f *testing.F) {
	f.Add("k", "v", int64(1), []byte("b"))
	f.Fuzz(func(t *testing.T, k, v string, n int64, b []byte) {
		h := map[string]any{k: v, k + "n": n, k + "b": b, k + "t": table{"x": []any{n, v, b}}}
		msg := envelope.Message(h, v, b)
		if k != envelope.UUIDHeader && msg.Metadata.Get(k) != v {
			t.Fatalf("string header %q lost: %q", k, msg.Metadata.Get(k))
		}
	})
}
