//go:build integration

package shop_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
)

// TestAnyStartOrderOnRabbitMQ: the order service runs alone and takes an
// order before the payment, inventory and notify services ever ran; the
// order completes once they start. RabbitMQ drops an event no queue is
// bound for: this works because every service declares the whole
// checkout's topology when it starts (shop.Topology).
func TestAnyStartOrderOnRabbitMQ(t *testing.T) {
	ctx := context.Background()
	run := time.Now().UnixNano()
	cfg := shop.Config{
		BusURL:      testutil.AMQPURL(t),
		Exchange:    fmt.Sprintf("shop.topology.%d", run),
		QueuePrefix: fmt.Sprintf("topo%d-", run),
		DataDir:     t.TempDir(),
		Stock:       map[string]int{"apple": 10},
		Retry:       fastRetry(),
	}
	start := func(services ...string) *shop.Stack {
		c := cfg
		c.Services = services
		s, err := shop.Start(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	orders := start(shop.OrderSvc)
	o, _, err := orders.Order.Place(ctx, shop.PlaceRequest{Customer: "ada", PaymentMethod: "card",
		Items: []shop.Item{{SKU: "apple", Quantity: 2, Price: 150}}, Amount: 300}, "")
	if err != nil {
		t.Fatal(err)
	}
	// The order's event left the order service's outbox before anyone
	// consumed it.
	testutil.Eventually(t, 30*time.Second, func() error {
		if n, err := orders.DB(shop.OrderSvc).Pending(ctx); err != nil || n != 0 {
			return fmt.Errorf("%d outbox rows pending (%v)", n, err)
		}
		return nil
	})
	start(shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got, err := orders.Order.WaitNotified(wctx, o.ID)
	if err != nil {
		t.Fatalf("the order placed before the other services started never completed: %v", err)
	}
	if got.Status != shop.Confirmed || got.NotifiedAt == nil {
		t.Fatalf("order %s is %s (%s), want CONFIRMED", o.ID, got.Status, got.Reason)
	}
}
