package shop

import (
	"bytes"
	"strings"
	"testing"

	"github.com/troupehq/troupe/saga"
)

// instanceAfter is the instance of CheckoutSaga whose history is events,
// in order, with its state derived as the tracker does.
func instanceAfter(events ...string) saga.Instance {
	var h []saga.Entry
	for i, ev := range events {
		e := saga.Entry{Seq: int64(i + 1), Kind: saga.EventEntry, Event: ev, MessageID: ev}
		if ev == "dead:charge" { // order.placed, dead-lettered at the charge
			e = saga.Entry{Seq: int64(i + 1), Kind: saga.StepDeadLetter, Event: "order.placed", Step: "charge", MessageID: ev}
		}
		h = append(h, e)
	}
	st := saga.Derive(&CheckoutSaga, h)
	return saga.Instance{Saga: CheckoutSaga.Name, ID: "o1", State: st.State, Step: st.Step, History: h}
}

func TestGraphHighlightsTheCurrentStep(t *testing.T) {
	tests := []struct {
		name    string
		give    saga.Instance
		want    string            // the current node
		classes map[string]string // node -> a class it must have
	}{
		{"placed", instanceAfter("order.placed"), "s1",
			map[string]string{"s0": "done", "s1": "started", "s2": "pending", "completed": "pending"}},
		{"reserving", instanceAfter("order.placed", "payment.captured"), "s2",
			map[string]string{"s1": "done", "s2": "started"}},
		{"completed", instanceAfter("order.placed", "payment.captured", "inventory.reserved", "order.confirmed"), "s3",
			map[string]string{"s3": "done", "completed": "reached", "compensated": "pending", "c0": "pending"}},
		{"declined", instanceAfter("order.placed", "payment.failed"), "c0",
			map[string]string{"s1": "failed", "c0": "started", "compensated": "pending"}},
		{"declined and cancelled", instanceAfter("order.placed", "payment.failed", "order.cancelled"), "c0",
			map[string]string{"s1": "failed", "c0": "done", "compensated": "reached"}},
		{"refunding", instanceAfter("order.placed", "payment.captured", "inventory.failed"), "c1",
			map[string]string{"s2": "failed", "c1": "started", "c0": "pending"}},
		{"charge dead-lettered", instanceAfter("order.placed", "dead:charge"), "s1",
			map[string]string{"s1": "started"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes, _ := graphOf(&CheckoutSaga, tt.give)
			var current []string
			for _, n := range nodes {
				if strings.Contains(" "+strings.Join(n.classes, " ")+" ", " current ") {
					current = append(current, n.id)
				}
				if c, ok := tt.classes[n.id]; ok && !strings.Contains(" "+strings.Join(n.classes, " ")+" ", " "+c+" ") {
					t.Errorf("node %s has classes %v, want %s", n.id, n.classes, c)
				}
			}
			if len(current) != 1 || current[0] != tt.want {
				t.Errorf("current nodes %v (state %s, step %s), want [%s]", current, tt.give.State, tt.give.Step, tt.want)
			}
		})
	}
}

func TestGraphSVGEscapesAndDrawsEveryEdge(t *testing.T) {
	var b bytes.Buffer
	in := instanceAfter("order.placed")
	in.ID = `<script>"x"</script>`
	if err := writeGraphSVG(&b, &CheckoutSaga, in); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	if strings.Contains(svg, "<script>") {
		t.Errorf("the id is not escaped: %s", svg)
	}
	// Every event that moves the checkout labels an arrow.
	for _, ev := range []string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed",
		"payment.failed", "inventory.failed", "payment.refunded", "order.cancelled"} {
		if !strings.Contains(svg, ">"+ev+"</text>") {
			t.Errorf("no arrow labelled %s", ev)
		}
	}
}

func TestTraceIDOf(t *testing.T) {
	placed := saga.Entry{Kind: saga.EventEntry, Event: "order.placed", TraceID: "aaaa"}
	other := saga.Entry{Kind: saga.EventEntry, Event: "payment.captured", TraceID: "bbbb"}
	bare := saga.Entry{Kind: saga.EventEntry, Event: "payment.failed"}
	tests := []struct {
		name string
		give []saga.Entry
		want string
	}{
		{"start event's", []saga.Entry{other, placed}, "aaaa"},
		{"first one without the start's", []saga.Entry{bare, other}, "bbbb"},
		{"none", []saga.Entry{bare}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TraceIDOf(&CheckoutSaga, saga.Instance{History: tt.give}); got != tt.want {
				t.Errorf("TraceIDOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseJaegerURL(t *testing.T) {
	tests := []struct {
		give, want string
		wantErr    bool
	}{
		{give: "http://localhost:16686", want: "http://localhost:16686"},
		{give: "https://example.org/jaeger/", want: "https://example.org/jaeger"},
		{give: "localhost:16686", wantErr: true},
		{give: "ftp://x", wantErr: true},
		{give: "http://", wantErr: true},
		{give: "http://x/?q=1", wantErr: true},
		{give: "http://x/%zz", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseJaegerURL(tt.give)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseJaegerURL(%q) = %q, %v; want %q, error %v", tt.give, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
