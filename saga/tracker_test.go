package saga_test

import "testing"

func TestTrackerSQLite(t *testing.T) {
	runTrackerSuite(t, "", func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/tracker.db" })
}
