// Package shoptest has the helpers the e-commerce example's tests share,
// in process and across processes.
package shoptest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// Order is a placement request for items, its amount their total.
func Order(customer, method string, items ...shop.Item) shop.PlaceRequest {
	amount := 0
	for _, it := range items {
		amount += it.Quantity * it.Price
	}
	return shop.PlaceRequest{Customer: customer, Items: items, Amount: amount, PaymentMethod: method}
}

// AwaitEnd polls GET api/orders/{id} until the order leaves PENDING and
// returns it; the test fails when it is still pending after timeout.
func AwaitEnd(t testing.TB, api, id string, timeout time.Duration) shop.Order {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(api + "/orders/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var o shop.Order
		err = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if o.Status != shop.Pending {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s still pending: %+v", id, o)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
