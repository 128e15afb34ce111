//go:build integration

package twopc_test

import (
	"context"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/saga/twopc"
)

// TestCrashPointsPostgres runs every crash case with the logs in
// PostgreSQL.
func TestCrashPointsPostgres(t *testing.T) {
	runCrashPoints(t, testutil.FreshPostgres)
}

// TestListPostgres reads the coordinator's log on PostgreSQL with each
// filter.
func TestListPostgres(t *testing.T) {
	w := newWorld(t, testutil.FreshPostgres(t))
	w.begin("tx-ok", ok...)
	w.begin("tx-no", decline...)
	w.settle()
	w.checkSettled()
	w.clock.Advance(time.Second) // newest first
	w.begin("tx-open", ok...)
	ctx := context.Background()
	tests := []struct {
		name string
		give twopc.ListFilter
		want []string
	}{
		{"all", twopc.ListFilter{}, []string{"tx-open", "tx-no", "tx-ok"}},
		{"aborted", twopc.ListFilter{State: "aborted"}, []string{"tx-no"}},
		{"unfinished", twopc.ListFilter{Unfinished: true}, []string{"tx-open"}},
		{"limit", twopc.ListFilter{Limit: 1}, []string{"tx-open"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			all, err := twopc.List(ctx, w.db, tt.give)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range all {
				got = append(got, s.GID)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}
