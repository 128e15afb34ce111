package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGraphCheckout(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want []string
	}{
		{"mermaid by default", []string{"graph"}, []string{"flowchart LR", `subgraph svc1["payment"]`,
			"s2 -.->|inventory.failed| c1", "c1 ==>|payment.refunded| c0", "s3 -->|order.confirmed| completed"}},
		{"dot", []string{"graph", "-format", "dot"}, []string{`digraph "checkout" {`, `label="inventory";`,
			`"s2" -> "c1" [label="inventory.failed", style=dashed`, `"c1" -> "c0" [label="payment.refunded", style=bold`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(t.Context(), tt.give, &out, &errOut); err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// The docs show what troupe graph prints.
func TestGraphMatchesDocs(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"graph"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "sagas.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```mermaid\n"+out.String()+"```\n") {
		t.Fatalf("docs/sagas.md does not show the output of troupe graph:\n%s", out.String())
	}
}

// The embedded declaration is the example's file (whose own test keeps it
// equal to the Go declaration).
func TestGraphEmbedsTheExampleDeclaration(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "ecommerce", "checkout.saga.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, checkoutJSON) {
		t.Fatal("cmd/troupe/checkout.saga.json differs from examples/ecommerce/checkout.saga.json; run go test ./examples/ecommerce/shop -run DeclarationFiles -rewrite")
	}
}

func TestGraphFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "signup.saga.json")
	bad := filepath.Join(dir, "bad.saga.json")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(good, []byte(`{"name": "signup", "start": "account.opened",
		"steps": [{"name": "open", "service": "accounts", "trigger": "account.opened", "success": "account.ready", "no_compensation": "only step"}],
		"completed": ["account.ready"]}`), 0o644))
	must(os.WriteFile(bad, []byte(`{"name": "signup", "start": "account.opened",
		"steps": [{"name": "open", "service": "accounts", "trigger": "account.opened", "success": "account.ready"}],
		"completed": ["account.ready"]}`), 0o644))
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"graph", "-format", "dot", good}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"s0" -> "completed" [label="account.ready"`) {
		t.Fatalf("output:\n%s", out.String())
	}
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"bad format", []string{"graph", "-format", "svg"}, `-format "svg": want mermaid or dot`},
		{"invalid declaration", []string{"graph", bad}, "saga signup: step open: uncompensated"},
		{"missing file", []string{"graph", filepath.Join(dir, "none.json")}, "no such file"},
		{"two files", []string{"graph", good, good}, "at most one declaration file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tt.give, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Fatalf("printed on error: %q", out.String())
			}
		})
	}
}
