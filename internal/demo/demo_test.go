package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestRunEndsEveryOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	got, err := Run(ctx, &out, Options{Orders: 6, RetryDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// Orders 1, 2 (after one retry) and 6 confirm; 3 (declined) and 5
	// (out of stock, refunded) cancel; 4 is dead-lettered.
	want := Tally{Confirmed: 3, Cancelled: 2, DeadLettered: 1}
	if got != want {
		t.Fatalf("tally %+v, want %+v\n%s", got, want, out.String())
	}
	for _, line := range []string{
		"payment   fails   order.placed         order-2 (attempt 1: gateway timeout) -> payment.charge.retry",
		"payment   emits   payment.refunded     order-5",
		"payment   fails   order.placed         order-4 (attempt 3: gateway timeout) -> payment.charge.dlq",
		"notify    handles order.confirmed      order-2",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q\n%s", line, out.String())
		}
	}
}
