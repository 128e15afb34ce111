package shop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/saga"
)

// manualClock is the tracker's clock in these tests. Safe for concurrent use.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// startTracked runs the whole stack, tracker included, and serves
// Stack.HTTPHandler (orders and sagas).
func startTracked(t *testing.T, pay shop.PaymentConfig, retry *handlers.RetryPolicy, queuePrefix string) (*shop.Stack, *httptest.Server, *manualClock) {
	t.Helper()
	clock := &manualClock{now: time.Now()}
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:      fmt.Sprintf("mem://shop-tracker-%d", stackSeq.Add(1)),
		DataDir:     t.TempDir(),
		Payment:     pay,
		Stock:       map[string]int{"apple": 10, "pear": 1},
		Retry:       retry,
		QueuePrefix: queuePrefix,
		Tracker:     saga.TrackerConfig{Clock: clock, DeadlineInterval: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Tracker == nil {
		t.Fatal("Start ran every service but no tracker")
	}
	srv := httptest.NewServer(s.HTTPHandler())
	t.Cleanup(func() {
		srv.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, srv, clock
}

// awaitSaga polls GET /sagas/{id} until the instance is in state at step.
func awaitSaga(t *testing.T, srv *httptest.Server, id string, state saga.State, step string) saga.Instance {
	t.Helper()
	var in saga.Instance
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(srv.URL + "/sagas/" + id)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		in = saga.Instance{}
		if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
			return err
		}
		if in.State != state || in.Step != step {
			return fmt.Errorf("saga %s: %s at %q (%s), want %s at %q", id, in.State, in.Step, in.Reason, state, step)
		}
		return nil
	})
	return in
}

func events(in saga.Instance) []string {
	var out []string
	for _, e := range in.History {
		out = append(out, string(e.Kind)+" "+e.Event)
	}
	return out
}

func TestTrackerFollowsCheckouts(t *testing.T) {
	_, srv, _ := startTracked(t, shop.PaymentConfig{DeclinedMethod: "card-declined"}, fastRetry(), "")
	tests := []struct {
		name       string
		give       shop.PlaceRequest
		wantState  saga.State
		wantStep   string
		wantEvents []string
	}{
		{"happy", shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), saga.Completed, "confirm",
			[]string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed", "notification.sent"}},
		{"declined", shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), saga.Compensated, "place",
			[]string{"order.placed", "payment.failed", "order.cancelled", "notification.sent"}},
		{"out of stock", shoptest.Order("cy", "card", shop.Item{SKU: "pear", Quantity: 2, Price: 50}), saga.Compensated, "place",
			[]string{"order.placed", "payment.captured", "inventory.failed", "payment.refunded", "order.cancelled", "notification.sent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv, tt.give, "")
			if code != http.StatusCreated {
				t.Fatalf("POST: %d %v", code, body)
			}
			id := body["id"].(string)
			awaitSaga(t, srv, id, tt.wantState, tt.wantStep)
			var in saga.Instance
			// notification.sent may come after the ending: wait for all.
			testutil.Eventually(t, 10*time.Second, func() error {
				in = awaitSaga(t, srv, id, tt.wantState, tt.wantStep)
				if len(in.History) != len(tt.wantEvents) {
					return fmt.Errorf("history %v", events(in))
				}
				return nil
			})
			got := map[string]bool{}
			for _, e := range in.History {
				got[e.Event] = true
				if e.MessageID == "" || e.Event != "order.placed" && e.CausationID == "" {
					t.Errorf("entry without its ids: %+v", e)
				}
			}
			for _, e := range tt.wantEvents {
				if !got[e] {
					t.Errorf("history %v lacks %s", events(in), e)
				}
			}
		})
	}
	var list []saga.Instance
	resp, err := http.Get(srv.URL + "/sagas?state=compensated")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list) != 2 {
		t.Errorf("GET /sagas?state=compensated: %d instances, %v", len(list), err)
	}
}

// TestFailedRefundIsParkedAndResumed: the refund (a compensation) goes to
// its dead-letter queue; the tracker parks the saga in failed and alerts;
// the operator repairs the gateway and resumes it over HTTP; the
// compensation runs and the saga ends compensated. With a queue prefix
// too: the services' names on the bus are prefixed.
func TestFailedRefundIsParkedAndResumed(t *testing.T) {
	for _, prefix := range []string{"", "blue-"} {
		t.Run("prefix "+prefix, func(t *testing.T) { testFailedRefund(t, prefix) })
	}
}

func testFailedRefund(t *testing.T, prefix string) {
	s, srv, _ := startTracked(t, shop.PaymentConfig{}, fastRetry(), prefix)
	s.Payment.BreakRefunds()
	code, body := post(t, srv, shoptest.Order("dee", "card", shop.Item{SKU: "pear", Quantity: 2, Price: 50}), "")
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %v", code, body)
	}
	id := body["id"].(string)
	in := awaitSaga(t, srv, id, saga.Failed, "charge")
	if !strings.Contains(in.Reason, "refund gateway down") {
		t.Errorf("reason %q", in.Reason)
	}
	if o := awaitPending(t, srv, id); o.Status != shop.Pending {
		t.Fatalf("order %s while its refund is stuck", o.Status)
	}
	s.Payment.RepairRefunds()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/sagas/"+id+"/resume", bytes.NewBufferString(`{"actor": "alice", "note": "gateway repaired"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("resume: %d", resp.StatusCode)
	}
	in = awaitSaga(t, srv, id, saga.Compensated, "place")
	kinds := events(in)
	if !strings.Contains(strings.Join(kinds, ","), "compensation_dead_letter inventory.failed,resume inventory.failed") {
		t.Errorf("history %v", kinds)
	}
	for _, e := range in.History {
		if e.Kind == saga.ResumeEntry && (e.Actor != "alice" || e.Error != "gateway repaired") {
			t.Errorf("resume entry %+v", e)
		}
	}
	if o := awaitEnd(t, srv, id); o.Status != shop.Cancelled {
		t.Errorf("order %s", o.Status)
	}
	if got := chargeStatus(t, s, id); got != "refunded" {
		t.Errorf("charge %q", got)
	}
}

// awaitPending returns the order, which must still be pending.
func awaitPending(t *testing.T, srv *httptest.Server, id string) shop.Order {
	t.Helper()
	resp, err := http.Get(srv.URL + "/orders/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o shop.Order
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestCheckoutTimesOut: the gateway times out on every charge and the
// redelivery waits an hour; the checkout's two minutes pass on the
// tracker's clock; the tracker emits saga.timed_out, the payment service
// abandons the charge (payment.failed) and the order is cancelled.
func TestCheckoutTimesOut(t *testing.T) {
	slow := &handlers.RetryPolicy{Delays: []time.Duration{time.Hour}}
	s, srv, clock := startTracked(t, shop.PaymentConfig{TransientFailureRate: 1}, slow, "")
	code, body := post(t, srv, shoptest.Order("eve", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), "")
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %v", code, body)
	}
	id := body["id"].(string)
	testutil.Eventually(t, 30*time.Second, func() error {
		if s.Payment.Timeouts() == 0 {
			return fmt.Errorf("no charge attempted yet")
		}
		return nil
	})
	in := awaitSaga(t, srv, id, saga.Running, "charge")
	if in.DeadlineAt == nil || in.Deadline != "saga" {
		t.Fatalf("no deadline: %+v", in)
	}
	clock.Advance(shop.CheckoutDeadline + time.Second)
	in = awaitSaga(t, srv, id, saga.Compensated, "place")
	if !strings.Contains(strings.Join(events(in), ","), "timed_out saga.timed_out") {
		t.Errorf("history %v", events(in))
	}
	o := awaitEnd(t, srv, id)
	if o.Status != shop.Cancelled || o.Reason != "checkout timed out" {
		t.Errorf("order %s %q", o.Status, o.Reason)
	}
	if got := chargeStatus(t, s, id); got != "abandoned" {
		t.Errorf("charge %q, want abandoned", got)
	}
}

// TestTrackerInItsOwnStack runs the services in two stacks and the tracker
// in a third, as separate processes would, on one bus.
func TestTrackerInItsOwnStack(t *testing.T) {
	busURL := fmt.Sprintf("mem://shop-tracker-alone-%d", stackSeq.Add(1))
	var stacks []*shop.Stack
	for _, services := range [][]string{{shop.OrderSvc, shop.PaymentSvc}, {shop.InventorySvc, shop.NotifySvc}, {shop.TrackerSvc}} {
		s, err := shop.Start(context.Background(), shop.Config{BusURL: busURL, DataDir: t.TempDir(), Services: services,
			Stock: map[string]int{"apple": 5}, Retry: fastRetry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stacks = append(stacks, s)
	}
	if stacks[0].Tracker != nil || stacks[1].Tracker != nil || stacks[2].Tracker == nil || stacks[2].Order != nil {
		t.Fatal("the tracker must run in the third stack only")
	}
	o, _, err := stacks[0].Order.Place(context.Background(), shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 10}), "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stacks[2].HTTPHandler())
	defer srv.Close()
	awaitSaga(t, srv, o.ID, saga.Completed, "confirm")
	resp, err := http.Get(srv.URL + "/orders/" + o.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the tracker's stack serves /orders: %d", resp.StatusCode)
	}
}
