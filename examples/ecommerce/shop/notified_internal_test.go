package shop

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
)

var notifiedSeq atomic.Int64

// TestOnNotifiedOncePerOrder: the first notice of an order records it in
// the history with the order's status, a repeated one (another message)
// changes nothing, and one for an unknown order is a permanent error that
// leaves no notice behind.
func TestOnNotifiedOncePerOrder(t *testing.T) {
	onNotifiedOncePerOrder(t, nil)
}

// onNotifiedOncePerOrder runs the test with the order service's database
// at dbURLs (nil: SQLite).
func onNotifiedOncePerOrder(t *testing.T, dbURLs map[string]string) {
	s, err := Start(context.Background(), Config{
		BusURL:   fmt.Sprintf("mem://shop-notified-test-%d", notifiedSeq.Add(1)),
		DataDir:  t.TempDir(),
		DBURLs:   dbURLs,
		Services: []string{OrderSvc},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	o, _, err := s.Order.Place(ctx, PlaceRequest{Customer: "ada", PaymentMethod: "card", Amount: 100,
		Items: []Item{{SKU: "apple", Quantity: 1, Price: 100}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	notice := func(id, kind string) error {
		return s.Order.db.InTx(ctx, func(tx *outbox.Tx) error {
			return s.Order.onNotified(ctx, tx, NotificationSent{OrderID: id, Kind: kind})
		})
	}
	if err := notice(o.ID, "confirmed"); err != nil {
		t.Fatalf("first notice: %v", err)
	}
	if err := notice(o.ID, "cancelled"); err != nil {
		t.Fatalf("repeated notice: %v", err)
	}
	got, err := s.Order.Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	for _, h := range got.History {
		if h.Event == (NotificationSent{}).EventName() {
			told = append(told, h.Status+" "+h.Detail)
		}
	}
	if strings.Join(told, ",") != Pending+" confirmed" || got.NotifiedAt == nil {
		t.Errorf("notices in the history %q, notified at %v; want one, %q, and a time", told, got.NotifiedAt, Pending+" confirmed")
	}

	err = notice("no-such-order", "confirmed")
	if err == nil || !handlers.IsPermanent(err) {
		t.Fatalf("notice for an unknown order: %v, want a permanent error", err)
	}
	var n int
	if err := s.Order.db.QueryRow(ctx, `SELECT COUNT(*) FROM order_notified WHERE order_id = ?`, "no-such-order").Scan(&n); err != nil || n != 0 {
		t.Errorf("notices kept for the unknown order: %d (%v), want 0", n, err)
	}
}
