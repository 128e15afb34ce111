package shop_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/saga/twopc"
)

func startTwoPCStack(t *testing.T, pay shop.PaymentConfig) (*shop.Stack, *httptest.Server) {
	t.Helper()
	return startCheckoutStack(t, pay, shop.CheckoutTwoPC)
}

// TestTwoPCCheckout runs the checkout as a two-phase commit that the order
// service coordinates: payment authorises then captures or voids,
// inventory holds then commits or releases. A failed order captures
// nothing and holds nothing.
func TestTwoPCCheckout(t *testing.T) {
	s, srv := startTwoPCStack(t, shop.PaymentConfig{DeclinedMethod: "card-declined"})
	tests := []struct {
		name        string
		give        shop.PlaceRequest
		wantStatus  string
		wantReason  string
		wantCharge  string // "declined": no charge row
		wantApples  int    // stock left after the order
		wantOutcome twopc.Outcome
	}{
		{"happy path", shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 2, Price: 100}), shop.Confirmed, "", "captured", 8, twopc.Commit},
		{"payment declined", shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), shop.Cancelled, "card declined", "declined", 8, twopc.Abort},
		{"out of stock", shoptest.Order("dee", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}, shop.Item{SKU: "pear", Quantity: 2, Price: 50}),
			shop.Cancelled, "out of stock: pear", "voided", 8, twopc.Abort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv, tt.give, "")
			if code != http.StatusCreated {
				t.Fatalf("POST: %d %v", code, body)
			}
			o := awaitEnd(t, srv, body["id"].(string))
			if o.Status != tt.wantStatus || !strings.Contains(o.Reason, tt.wantReason) {
				t.Fatalf("order ended %s %q, want %s %q", o.Status, o.Reason, tt.wantStatus, tt.wantReason)
			}
			if tt.wantCharge == "declined" {
				awaitCount(t, s, shop.PaymentSvc, `SELECT COUNT(*) FROM charges WHERE order_id = ?`, 0, o.ID)
			} else {
				awaitCount(t, s, shop.PaymentSvc, `SELECT COUNT(*) FROM charges WHERE order_id = ? AND status = ?`, 1, o.ID, tt.wantCharge)
			}
			st, err := twopc.Show(context.Background(), s.DB(shop.OrderSvc), o.ID)
			if err != nil || st.Outcome != tt.wantOutcome {
				t.Fatalf("2PC transaction: %+v, %v; want %s", st, err, tt.wantOutcome)
			}
			awaitZero(t, s, shop.InventorySvc, `SELECT COUNT(*) FROM holds`)
			if got := count(t, s, shop.InventorySvc, `SELECT available FROM stock WHERE sku = 'apple'`); got != tt.wantApples {
				t.Fatalf("apples in stock %d, want %d", got, tt.wantApples)
			}
			wantReserved := map[bool]int{true: len(tt.give.Items), false: 0}[tt.wantOutcome == twopc.Commit]
			awaitZero(t, s, shop.InventorySvc, fmt.Sprintf(`SELECT COUNT(*) - %d FROM reservations WHERE order_id = ?`, wantReserved), o.ID)
			kind := map[string]string{shop.Confirmed: "confirmed", shop.Cancelled: "cancelled"}[tt.wantStatus]
			awaitZero(t, s, shop.NotifySvc, `SELECT 1 - COUNT(*) FROM notifications WHERE order_id = ? AND kind = ?`, o.ID, kind)
		})
	}
}

// awaitZero polls a count query until it is zero: the participants apply
// the decision after the order is settled.
func awaitZero(t *testing.T, s *shop.Stack, svc, query string, args ...any) {
	t.Helper()
	for range 3000 {
		if count(t, s, svc, query, args...) == 0 {
			return
		}
		select {
		case <-t.Context().Done():
			return
		case <-timeAfterMs(10):
		}
	}
	t.Fatalf("%s: %s stayed %d", svc, query, count(t, s, svc, query, args...))
}

func timeAfterMs(ms int) <-chan time.Time { return time.After(time.Duration(ms) * time.Millisecond) }
