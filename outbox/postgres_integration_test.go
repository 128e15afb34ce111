//go:build integration

package outbox_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox/outboxtest"
)

func TestConformancePostgres(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) string { return testutil.FreshPostgres(t) })
}
