package outbox_test

import (
	"testing"

	"github.com/troupehq/troupe/outbox/outboxtest"
)

func TestConformanceSQLite(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/troupe.db" })
}
