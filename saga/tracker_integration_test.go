//go:build integration

package saga_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestTrackerPostgres(t *testing.T) {
	runTrackerSuite(t, "", func(t *testing.T) string { return testutil.FreshPostgres(t) })
}

// TestTrackerRabbitMQ runs the suite with the tracker consuming from
// RabbitMQ (one queue bound to every event of the saga) on SQLite.
func TestTrackerRabbitMQ(t *testing.T) {
	runTrackerSuite(t, testutil.AMQPURL(t), func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/tracker.db" })
}
