//go:build integration

package shop

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

// TestOnNotifiedOncePerOrderPostgres: the same on PostgreSQL, which reads
// the statement's RETURNING subquery and its conflict the same way.
func TestOnNotifiedOncePerOrderPostgres(t *testing.T) {
	onNotifiedOncePerOrder(t, map[string]string{OrderSvc: testutil.FreshPostgres(t)})
}
