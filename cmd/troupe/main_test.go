package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"no command", nil, "no command"},
		{"unknown command", []string{"fly"}, `unknown command "fly"`},
		{"bad flag", []string{"demo", "-orders", "x"}, "invalid value"},
		{"zero orders", []string{"demo", "-orders", "0"}, "-orders must be >= 1"},
		{"stray argument", []string{"demo", "extra"}, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.give, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestRunDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"demo", "-orders", "6", "-retry-delay", "10ms"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "done: 3 confirmed, 2 cancelled, 1 dead-lettered") {
		t.Fatalf("output:\n%s", out.String())
	}
}
