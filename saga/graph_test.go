package saga_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupehq/troupe/saga"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata")

// signup has an initiating step (no trigger) with a compensation.
func signup() *saga.Saga {
	return &saga.Saga{
		Name:  "signup",
		Start: "account.opened",
		Steps: []saga.Step{
			{Name: "open", Service: "accounts", Success: "account.opened",
				Compensation: &saga.Compensation{On: []string{"mailbox.failed"}, Done: "account.closed"}},
			{Name: "mailbox", Service: "mail", Trigger: "account.opened", Success: "mailbox.created", Failure: "mailbox.failed",
				NoCompensation: "last step"},
		},
		Completed:   []string{"mailbox.created"},
		Compensated: []string{"account.closed"},
	}
}

func TestGraphGolden(t *testing.T) {
	tests := []struct {
		name   string
		give   *saga.Saga
		format string
		write  func(*bytes.Buffer, *saga.Saga) error
	}{
		{"trip", trip(), "mmd", func(b *bytes.Buffer, s *saga.Saga) error { return saga.WriteMermaid(b, s) }},
		{"trip", trip(), "dot", func(b *bytes.Buffer, s *saga.Saga) error { return saga.WriteDOT(b, s) }},
		{"signup", signup(), "mmd", func(b *bytes.Buffer, s *saga.Saga) error { return saga.WriteMermaid(b, s) }},
		{"signup", signup(), "dot", func(b *bytes.Buffer, s *saga.Saga) error { return saga.WriteDOT(b, s) }},
	}
	for _, tt := range tests {
		t.Run(tt.name+"."+tt.format, func(t *testing.T) {
			var got, again bytes.Buffer
			if err := tt.write(&got, tt.give); err != nil {
				t.Fatal(err)
			}
			if err := tt.write(&again, tt.give); err != nil {
				t.Fatal(err)
			}
			if got.String() != again.String() {
				t.Fatal("two drawings of one saga differ")
			}
			path := filepath.Join("testdata", tt.name+"."+tt.format)
			if *rewrite {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./saga -run TestGraphGolden -rewrite to create it)", err)
			}
			if got.String() != string(want) {
				t.Fatalf("%s differs from the drawing (rerun with -rewrite if the change is meant):\n%s", path, got.String())
			}
		})
	}
}

func TestGraphRefusesInvalid(t *testing.T) {
	s := trip()
	s.Steps[1].Compensation = nil
	for name, write := range map[string]func(*bytes.Buffer, *saga.Saga) error{
		"mermaid": func(b *bytes.Buffer, s *saga.Saga) error { return saga.WriteMermaid(b, s) },
		"dot":     func(b *bytes.Buffer, s *saga.Saga) error { return saga.WriteDOT(b, s) },
	} {
		var b bytes.Buffer
		err := write(&b, s)
		if err == nil || !strings.Contains(err.Error(), "step hotel") || b.Len() != 0 {
			t.Errorf("%s: error %v, output %q", name, err, b.String())
		}
	}
}

// The edges of the trip carry the styles of their paths.
func TestGraphPathStyles(t *testing.T) {
	var b bytes.Buffer
	if err := saga.WriteMermaid(&b, trip()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"s0 -->|flight.booked| s1",   // success
		"s1 -.->|hotel.failed| c0",   // failure
		"c1 ==>|hotel.cancelled| c0", // compensation
		"c0 ==>|flight.cancelled| compensated",
		"l0 -.->|mail.sent| o",         // a listener's event
		"start -->|trip.requested| s0", // the start, emitted outside the saga
	} {
		if !strings.Contains(out, want) {
			t.Errorf("mermaid lacks %q:\n%s", want, out)
		}
	}
}
