//go:build integration

package shop_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
)

// TestConcurrentDuplicatePostsPostgres: on PostgreSQL, where the requests'
// transactions run at once, requests with one Idempotency-Key make one
// order too (the key's insert waits for the first and finds it taken).
func TestConcurrentDuplicatePostsPostgres(t *testing.T) {
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:  fmt.Sprintf("mem://shop-idem-pg-%d", stackSeq.Add(1)),
		DataDir: t.TempDir(),
		DBURLs:  map[string]string{shop.OrderSvc: testutil.FreshPostgres(t)},
		Stock:   map[string]int{"apple": 10},
		Retry:   fastRetry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	concurrentDuplicatePosts(t, s)
}
