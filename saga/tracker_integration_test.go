//go:build integration

package saga_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestTrackerPostgres(t *testing.T) {
	runTrackerSuite(t, func(t *testing.T) string { return testutil.FreshPostgres(t) })
}
