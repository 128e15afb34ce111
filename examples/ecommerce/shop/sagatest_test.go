package shop_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/saga/sagatest"
)

// The checkout's tests on the deterministic harness (package
// saga/sagatest): the whole stack on a private bundled broker, SQLite in
// the test's folder, the virtual clock driving the tracker's deadlines and
// the events' production times, and faults injected into deliveries.

// checkout is one stack on one harness.
type checkout struct {
	h *sagatest.Harness
	s *shop.Stack

	mu       sync.Mutex
	outcomes map[string]int // "service event saga outcome" -> deliveries
}

// trackerQueue is the checkout tracker's queue.
var trackerQueue = saga.TrackerService + "." + shop.CheckoutSaga.Name

func startCheckout(t *testing.T, pay shop.PaymentConfig) *checkout {
	t.Helper()
	h := sagatest.New(t)
	c := &checkout{h: h, outcomes: map[string]int{}}
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:    h.BusURL(),
		Transport: h.Transport,
		Clock:     h.Now,
		Tracker:   h.TrackerConfig(),
		DataDir:   h.Dir(),
		Payment:   pay,
		Stock:     map[string]int{"apple": 10, "pear": 1},
		Retry:     sagatest.RetryPolicy(),
		Observe: func(service string, o handlers.Observation) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.outcomes[fmt.Sprint(service, o.Event, o.SagaID, o.Outcome)]++
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	c.s = s
	h.Watch(s.Tracker.Store())
	return c
}

// place places an order and returns its id, which is its saga id.
func (c *checkout) place(t *testing.T, method string, items ...shop.Item) string {
	t.Helper()
	o, _, err := c.s.Order.Place(context.Background(), shoptest.Order("ada", method, items...), "")
	if err != nil {
		t.Fatal(err)
	}
	return o.ID
}

// runs is how many times service's handler of event succeeded for id.
func (c *checkout) runs(service, event, id string) int {
	return c.count(service, event, id, handlers.Handled)
}

// count is how many deliveries of event to service's handler for id
// ended with outcome.
func (c *checkout) count(service, event, id string, outcome handlers.Outcome) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outcomes[fmt.Sprint(service, event, id, outcome)]
}

var outcomeNames = map[handlers.Outcome]string{handlers.Handled: "handled", handlers.Duplicate: "skipped as duplicates"}

// awaitCount waits until count(service, event, id, outcome) reaches want
// (a delivery is observed after its handler's events may have completed
// the saga), then fails if it went past.
func (c *checkout) awaitCount(t *testing.T, service, event, id string, outcome handlers.Outcome, want int) {
	t.Helper()
	deadline := time.Now().Add(c.h.Wait)
	for c.count(service, event, id, outcome) < want && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if got := c.count(service, event, id, outcome); got != want {
		t.Errorf("%s %s of %s: %d deliveries %s, want %d", service, event, id, got, outcomeNames[outcome], want)
	}
}

// query returns one value from a service's database.
func (c *checkout) query(t *testing.T, service, q string, args ...any) string {
	t.Helper()
	db := c.s.DB(service)
	var v sql.NullString
	if err := db.SQL().QueryRow(db.Rebind(q), args...).Scan(&v); err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return v.String
}

func TestHarnessCheckoutOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		giveMethod string
		giveItems  []shop.Item
		wantState  saga.State
		wantEvents []string
		wantCharge string
		wantApples string
	}{
		{"happy", "card", []shop.Item{{SKU: "apple", Quantity: 2, Price: 100}}, saga.Completed,
			[]string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent"}, "captured", "8"},
		{"declined", "card-declined", []shop.Item{{SKU: "apple", Quantity: 1, Price: 100}}, saga.Compensated,
			[]string{"order.placed", "payment.failed", "order.cancelled", "notification.sent"}, "", "10"},
		{"out of stock is refunded", "card", []shop.Item{{SKU: "apple", Quantity: 1, Price: 100}, {SKU: "pear", Quantity: 2, Price: 50}}, saga.Compensated,
			[]string{"order.placed", "payment.captured", "inventory.failed", "payment.refunded", "order.cancelled", "notification.sent"}, "refunded", "10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := startCheckout(t, shop.PaymentConfig{DeclinedMethod: "card-declined"})
			id := c.place(t, tt.giveMethod, tt.giveItems...)
			c.h.AwaitState(t, id, tt.wantState)
			// notification.sent may be recorded just after the ending.
			c.h.AwaitEvents(t, id, tt.wantEvents...)
			if got := c.query(t, shop.PaymentSvc, `SELECT status FROM charges WHERE order_id = ?`, id); got != tt.wantCharge {
				t.Errorf("charge %q, want %q", got, tt.wantCharge)
			}
			if got := c.query(t, shop.InventorySvc, `SELECT available FROM stock WHERE sku = 'apple'`); got != tt.wantApples {
				t.Errorf("apples in stock %s, want %s", got, tt.wantApples)
			}
		})
	}
}

// TestHarnessTraceChain: a confirmed order is one trace, chained parent ->
// child from the order service's outbox through every service.
func TestHarnessTraceChain(t *testing.T) {
	t.Parallel()
	c := startCheckout(t, shop.PaymentConfig{})
	id := c.place(t, "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100})
	c.h.AwaitState(t, id, saga.Completed)
	c.h.AssertTraceChain(t, id,
		"outbox wait order.placed", "publish order.placed", "process order.placed",
		"outbox wait payment.captured", "publish payment.captured", "process payment.captured",
		"outbox wait inventory.reserved", "publish inventory.reserved", "process inventory.reserved",
		"outbox wait order.confirmed", "publish order.confirmed", "process order.confirmed")
}

// TestHarnessDuplicatePaymentCaptured: inventory gets payment.captured
// twice; the inbox runs the reservation once.
func TestHarnessDuplicatePaymentCaptured(t *testing.T) {
	t.Parallel()
	c := startCheckout(t, shop.PaymentConfig{})
	captured := sagatest.Match{Event: "payment.captured", Queue: "inventory.reserve"}
	c.h.Duplicate(captured, 1)
	id := c.place(t, "card", shop.Item{SKU: "apple", Quantity: 3, Price: 100})
	c.h.AwaitState(t, id, saga.Completed)
	c.h.AwaitInjected(t, sagatest.Duplicated, 1)
	c.awaitCount(t, shop.InventorySvc, "payment.captured", id, handlers.Handled, 1)
	c.awaitCount(t, shop.InventorySvc, "payment.captured", id, handlers.Duplicate, 1) // the inbox skipped the second delivery
	if got := c.query(t, shop.InventorySvc, `SELECT COUNT(*) FROM reservations WHERE order_id = ?`, id); got != "1" {
		t.Errorf("%s reservations, want 1", got)
	}
	if got := c.query(t, shop.InventorySvc, `SELECT available FROM stock WHERE sku = 'apple'`); got != "7" {
		t.Errorf("apples in stock %s, want 7", got)
	}
}

// TestHarnessDroppedThenRedelivered: payment.captured is lost on its way to
// inventory; the broker redelivers it and the checkout completes.
func TestHarnessDroppedThenRedelivered(t *testing.T) {
	t.Parallel()
	c := startCheckout(t, shop.PaymentConfig{})
	captured := sagatest.Match{Event: "payment.captured", Queue: "inventory.reserve"}
	c.h.Drop(captured, 1)
	id := c.place(t, "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100})
	c.h.AwaitState(t, id, saga.Completed)
	if got := c.h.AwaitInjected(t, sagatest.Dropped, 1); got[0].Delivery.SagaID != id {
		t.Errorf("dropped %v, want the order's payment.captured", got[0])
	}
	if got := len(c.h.AwaitDeliveries(t, captured, 2)); got != 2 {
		t.Errorf("payment.captured reached inventory %d times, want 2 (dropped, redelivered)", got)
	}
	c.awaitCount(t, shop.InventorySvc, "payment.captured", id, handlers.Handled, 1)
}

// TestHarnessCrashAfterCommit: the payment service charges, commits, and
// crashes before its ack reaches the broker; order.placed is redelivered,
// the inbox finds its claim, and the card is charged once.
func TestHarnessCrashAfterCommit(t *testing.T) {
	t.Parallel()
	c := startCheckout(t, shop.PaymentConfig{})
	placed := sagatest.Match{Event: "order.placed", Queue: "payment.charge"}
	c.h.CrashAfterCommit(placed, 1)
	id := c.place(t, "card", shop.Item{SKU: "apple", Quantity: 1, Price: 250})
	c.h.AwaitState(t, id, saga.Completed)
	c.h.AwaitInjected(t, sagatest.Crashed, 1)
	if got := len(c.h.AwaitDeliveries(t, placed, 2)); got != 2 {
		t.Errorf("order.placed reached payment %d times, want 2 (crashed, redelivered)", got)
	}
	c.awaitCount(t, shop.PaymentSvc, "order.placed", id, handlers.Handled, 1)
	c.awaitCount(t, shop.PaymentSvc, "order.placed", id, handlers.Duplicate, 1) // the inbox skipped the second delivery
	if got := c.query(t, shop.PaymentSvc, `SELECT COUNT(*) FROM charges WHERE order_id = ? AND status = 'captured'`, id); got != "1" {
		t.Errorf("%s charges, want 1", got)
	}
	c.awaitCount(t, shop.InventorySvc, "payment.captured", id, handlers.Handled, 1)
}

// TestHarnessReorderedAtTracker: the tracker gets payment.captured before
// order.placed and still derives a completed checkout.
func TestHarnessReorderedAtTracker(t *testing.T) {
	t.Parallel()
	c := startCheckout(t, shop.PaymentConfig{})
	c.h.Reorder(sagatest.Match{Event: "order.placed", Queue: trackerQueue},
		sagatest.Match{Event: "payment.captured", Queue: trackerQueue})
	id := c.place(t, "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100})
	c.h.AwaitState(t, id, saga.Completed)
	c.h.AwaitInjected(t, sagatest.Reordered, 1)
	c.h.AwaitEvents(t, id, "order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent")
	// The virtual clock stands still, so every entry has the same time
	// and the history lists them in the order of recording.
	events := sagatest.Events(c.h.History(t, id))
	if i, j := slices.Index(events, "payment.captured"), slices.Index(events, "order.placed"); i < 0 || j < 0 || i > j {
		t.Errorf("recorded %q, want payment.captured before order.placed", events)
	}
}

// TestHarnessDeadline: order.placed is held on its way to payment while
// the virtual clock passes the checkout's two minutes: the tracker emits
// saga.timed_out, payment abandons the charge and fails the payment, the
// order is cancelled. The late order.placed then charges nothing.
func TestHarnessDeadline(t *testing.T) {
	t.Parallel()
	c := startCheckout(t, shop.PaymentConfig{})
	placed := sagatest.Match{Event: "order.placed", Queue: "payment.charge"}
	c.h.Delay(placed, 10*time.Minute, 1)
	id := c.place(t, "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100})
	c.h.AwaitInjected(t, sagatest.Delayed, 1)
	c.h.AwaitState(t, id, saga.Running)

	c.h.Clock.Advance(shop.CheckoutSaga.Deadline + time.Second)
	in := c.h.AwaitState(t, id, saga.Compensated)
	var timedOut, timeoutEvent bool
	for _, e := range in.History {
		timedOut = timedOut || e.Kind == saga.TimedOutEntry
		timeoutEvent = timeoutEvent || e.Event == saga.TimedOutEvent
	}
	if !timedOut || !timeoutEvent {
		t.Errorf("history without the timeout (entry %v, event %v):\n%s", timedOut, timeoutEvent, sagatest.FormatHistory(in.History))
	}
	if got := c.query(t, shop.PaymentSvc, `SELECT status FROM charges WHERE order_id = ?`, id); got != "abandoned" {
		t.Errorf("charge %q, want abandoned", got)
	}

	// The held order.placed arrives late: nothing is charged.
	c.h.Clock.Advance(10 * time.Minute)
	deadline := time.Now().Add(c.h.Wait)
	for c.runs(shop.PaymentSvc, "order.placed", id) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the delayed order.placed never reached payment")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := c.query(t, shop.PaymentSvc, `SELECT status || ' ' || amount FROM charges WHERE order_id = ?`, id); got != "abandoned 0" {
		t.Errorf("charge %q after the late order.placed, want abandoned 0", got)
	}
	if o, err := c.s.Order.Get(context.Background(), id); err != nil || o.Status != shop.Cancelled {
		t.Errorf("order %+v (%v), want cancelled", o, err)
	}
}
