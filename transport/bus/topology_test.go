package bus_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/transport/bus"
)

func TestNames(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{bus.WorkQueue("payment", "charge"), "payment.charge"},
		{bus.RetryQueue("payment.charge", 10*time.Second), "payment.charge.retry.10s"},
		{bus.RetryQueue("payment.charge", 1500*time.Millisecond), "payment.charge.retry.1500ms"},
		{bus.DeadLetterQueue("payment.charge"), "payment.charge.dlq"},
	}
	for _, tt := range tests {
		if tt.give != tt.want {
			t.Errorf("got %q, want %q", tt.give, tt.want)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	top := bus.Topology{Queues: []bus.Queue{
		{Name: "", Events: []string{"a"}},
		{Name: "amq.x", Events: []string{"a"}},
		{Name: "q", Events: nil},
		{Name: "q", Events: []string{"a"}, RetryDelays: []time.Duration{time.Microsecond}},
	}}
	err := top.Validate()
	for _, want := range []string{"no name", "amq. prefix", "bound to no event", "declared twice", "retry delay 1µs"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// recorder is a Declarer that records declarations.
type recorder struct {
	calls []string
	fail  string
}

func (r *recorder) DeclareExchange(x bus.ExchangeDecl) error {
	return r.add("x " + x.Name + " " + x.Kind)
}
func (r *recorder) DeclareQueue(q bus.QueueDecl) error {
	return r.add("q " + q.Name)
}
func (r *recorder) Bind(b bus.BindingDecl) error {
	return r.add("b " + b.Queue + " " + b.Exchange + " " + b.Key)
}
func (r *recorder) add(s string) error {
	r.calls = append(r.calls, s)
	if s == r.fail {
		return errors.New("injected")
	}
	return nil
}

func TestDeclare(t *testing.T) {
	r := &recorder{}
	top := bus.Topology{Queues: []bus.Queue{{
		Name: "payment.charge", Events: []string{"order.placed"},
		RetryDelays: []time.Duration{10 * time.Second, time.Second, time.Second},
	}}}
	if err := top.Declare(r); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"x troupe.events topic",
		"q payment.charge", "q payment.charge.dlq", "q payment.charge.retry.1s", "q payment.charge.retry.10s",
		"b payment.charge troupe.events order.placed",
	}
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("declared\n%s\nwant\n%s", strings.Join(r.calls, "\n"), strings.Join(want, "\n"))
	}
	retry := bus.QueueDecls(top.Queues[0])[2]
	if retry.Args["x-message-ttl"] != int64(1000) || retry.Args["x-dead-letter-routing-key"] != "payment.charge" {
		t.Fatalf("retry queue args %v", retry.Args)
	}
	r = &recorder{fail: "q payment.charge.dlq"}
	if err := top.Declare(r); err == nil || !strings.Contains(err.Error(), "declare queue payment.charge.dlq") {
		t.Fatalf("failing declarer: %v", err)
	}
}
