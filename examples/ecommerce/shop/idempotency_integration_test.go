//go:build integration

package shop_test

import (
	"fmt"
	"testing"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
)

// TestConcurrentDuplicatePostsPostgres: on PostgreSQL, where the requests'
// transactions run at once, requests with one Idempotency-Key make one
// order too (the key's insert waits for the first and finds it taken).
func TestConcurrentDuplicatePostsPostgres(t *testing.T) {
	s := startConfig(t, shop.Config{
		BusURL:  fmt.Sprintf("mem://shop-idem-pg-%d", stackSeq.Add(1)),
		DataDir: t.TempDir(),
		DBURLs:  map[string]string{shop.OrderSvc: testutil.FreshPostgres(t)},
		Stock:   map[string]int{"apple": 10},
		Retry:   fastRetry(),
	})
	concurrentDuplicatePosts(t, s)
}

// TestIdempotencyKeyNotUTF8Postgres: PostgreSQL cannot store a key that is
// not UTF-8, so the check before the insert is what keeps such a request
// a 400 rather than a failed transaction (a 500); and the database,
// asked directly, does refuse it.
func TestIdempotencyKeyNotUTF8Postgres(t *testing.T) {
	s := startConfig(t, shop.Config{
		BusURL:  fmt.Sprintf("mem://shop-idem-utf8-pg-%d", stackSeq.Add(1)),
		DataDir: t.TempDir(),
		DBURLs:  map[string]string{shop.OrderSvc: testutil.FreshPostgres(t)},
		Stock:   map[string]int{"apple": 10},
		Retry:   fastRetry(),
	})
	code, body := placeDirect(t, s, shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 1}), "k\xff")
	if code != 400 || body.Field != "Idempotency-Key" {
		t.Fatalf("a key that is not UTF-8: %d %+v, want a 400 naming the key", code, body)
	}
	db := s.DB(shop.OrderSvc)
	if _, err := db.SQL().Exec(db.Rebind(`INSERT INTO order_idempotency (key, order_id) VALUES (?, ?)`), "k\xff", "o"); err == nil {
		t.Fatal("PostgreSQL stored a key that is not UTF-8; the check is no longer needed for it")
	}
}
