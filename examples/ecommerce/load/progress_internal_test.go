package load

import (
	"strings"
	"testing"
	"time"
)

// TestProgressLine: the rate since the previous line is the orders
// completed since then over the time since then, beside the whole run's.
func TestProgressLine(t *testing.T) {
	res := Result{Confirmed: 2700, Cancelled: 300, Stuck: 1, Elapsed: 3 * time.Second,
		P50: 20 * time.Millisecond, P99: 90 * time.Millisecond}
	tests := []struct {
		name string
		last progressMark
		want string
	}{
		{"first line", progressMark{}, "3001/10000  1000 orders/s (now 1000)"},
		{"after a slow start", progressMark{completed: 1200, elapsed: 2 * time.Second}, "3001/10000  1000 orders/s (now 1800)"},
		{"no time since", progressMark{completed: 3000, elapsed: 3 * time.Second}, "(now 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := progressLine(res, 10000, tt.last)
			if !strings.Contains(line, tt.want) || !strings.Contains(line, "p50 20ms  p99 90ms  stuck 1 failed 0") {
				t.Fatalf("line %q, want it to contain %q and the latencies", line, tt.want)
			}
			if !strings.HasPrefix(line, "[#########                     ]") {
				t.Fatalf("line %q: bar not 30%% full", line)
			}
		})
	}
	// More ended than planned (never expected) keeps the bar whole.
	if line := progressLine(Result{Confirmed: 12, Elapsed: time.Second}, 10, progressMark{}); !strings.HasPrefix(line, "["+strings.Repeat("#", 30)+"]") {
		t.Fatalf("line %q", line)
	}
}
