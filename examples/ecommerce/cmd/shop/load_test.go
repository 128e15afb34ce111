package main

import (
	"context"
	"github.com/troupehq/troupe/internal/testutil"
	"strings"
	"testing"
)

// TestLoadInProcess runs "shop load -inprocess" end to end: tally, saga
// tracker, books, exit status. (The progress line comes once a second: a
// run may end sooner; load's own tests check it.)
func TestLoadInProcess(t *testing.T) {
	var out testutil.SyncBuffer
	err := runLoad(context.Background(), []string{"-inprocess", "-data", t.TempDir(), "-n", "200", "-c", "20"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"200 orders, 20 in flight", "tally: ", " 0 stuck, 0 failed", "books: balanced: ", "sagas: ", " completed", "; final ", "tracker lag "} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
	}
}

func TestLoadFailures(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"nobody listens", []string{"-url", "http://127.0.0.1:1", "-no-books", "-n", "2", "-timeout", "1s"}, "2 orders could not be placed"},
		{"no databases for the books", []string{"-data", "/nonexistent/data", "-n", "1"}, "books: the order database"},
		{"bad share", []string{"-no-books", "-declined", "2"}, "-declined 2: must be in 0..1"},
		{"shares over one", []string{"-no-books", "-declined", "0.6", "-sold-out", "0.5"}, "-sold-out 0.5: and DeclinedShare 0.6 add up to more than 1"},
		{"share not a number", []string{"-no-books", "-sold-out", "NaN"}, "-sold-out NaN: must be in 0..1"},
		{"bad transient share", []string{"-inprocess", "-transient-failures", "-1"}, "-transient-failures -1: must be in 0..1"},
		{"transient share not a number", []string{"-inprocess", "-transient-failures", "NaN"}, "-transient-failures NaN: must be in 0..1"},
		{"no orders", []string{"-inprocess", "-n", "0"}, "-n 0: must be at least 1"},
		{"no concurrency", []string{"-no-books", "-c", "0"}, "-c 0: must be at least 1"},
		{"negative concurrency", []string{"-inprocess", "-c", "-3"}, "-c -3: must not be negative"},
		{"negative rate in process", []string{"-inprocess", "-rate", "-1"}, "-rate -1: must be a number of at least 0"},
		{"rate not a number", []string{"-no-books", "-rate", "NaN"}, "-rate NaN: must be a number of at least 0"},
		{"infinite rate", []string{"-no-books", "-rate", "+Inf"}, "-rate +Inf: must be a number of at least 0"},
		{"negative timeout", []string{"-no-books", "-timeout", "-1s"}, "-timeout -1s: must not be negative"},
		{"bad URL", []string{"-no-books", "-url", "ftp://x"}, `-url "ftp://x": want http:// or https://`},
		{"bad sagas URL", []string{"-url", "http://127.0.0.1:1", "-no-books", "-n", "1", "-timeout", "1s", "-sagas-url", "ftp://x"}, "not http(s)"},
		{"extra argument", []string{"-no-books", "now"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out testutil.SyncBuffer
			err := runLoad(context.Background(), tt.give, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q\n%s", err, tt.want, out.String())
			}
		})
	}
}
