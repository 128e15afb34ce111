//go:build integration

package shop_test

import (
	"fmt"
	"testing"

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
