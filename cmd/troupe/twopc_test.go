package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
)

type discard struct{}

func (discard) Send(context.Context, twopc.Message) error { return nil }

// coordinatorDB logs three transactions: committed, aborted (a NO vote)
// and one still preparing.
func coordinatorDB(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	url := "sqlite:" + filepath.Join(t.TempDir(), "order.db")
	db, err := outbox.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := twopc.NewCoordinator(ctx, "order", db, discard{})
	if err != nil {
		t.Fatal(err)
	}
	votes := map[string][2]twopc.Vote{"o-1": {twopc.Yes, twopc.Yes}, "o-2": {twopc.Yes, twopc.No}, "o-3": {twopc.Yes, 0}}
	for _, gid := range []string{"o-1", "o-2", "o-3"} {
		a, _ := twopc.NewBranch("payment", map[string]int{"amount": 100})
		b, _ := twopc.NewBranch("inventory", map[string]int{"apple": 1})
		if err := c.Begin(ctx, gid, []twopc.Branch{a, b}); err != nil {
			t.Fatal(err)
		}
		for i, p := range []string{"payment", "inventory"} {
			if v := votes[gid][i]; v != 0 {
				if err := c.Deliver(ctx, twopc.Message{Kind: twopc.KindVote, GID: gid, From: p, To: "order", Vote: v, Reason: "out of stock"}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return url
}

func TestTwoPCCommand(t *testing.T) {
	db := coordinatorDB(t)
	missing := filepath.Join(t.TempDir(), "typo.db")
	defer func() {
		if _, err := os.Stat(missing); err == nil {
			t.Errorf("a command on a missing database created %s", missing)
		}
	}()
	tests := []struct {
		name    string
		give    []string
		want    []string // substrings of stdout
		wantErr string
	}{
		{"list", []string{"list", "-db", db}, []string{"o-1  committed", "o-2  aborted", "o-3  preparing", "3 transaction(s)"}, ""},
		{"list by state", []string{"list", "-db", db, "-state", "aborted"}, []string{"o-2", "inventory voted no: out of stock", "1 transaction(s)"}, ""},
		{"show", []string{"show", "-db", db, "o-1"}, []string{"state:       committed", "every participant voted yes", "payment      yes", `{"apple":1}`}, ""},
		{"show json", []string{"show", "-db", db, "-json", "o-3"}, []string{`"State": "preparing"`}, ""},
		{"unknown gid", []string{"show", "-db", db, "o-9"}, nil, "unknown transaction"},
		{"bad state", []string{"list", "-db", db, "-state", "done"}, nil, `unknown state "done"`},
		{"no database", []string{"list"}, nil, "-db"},
		{"not a coordinator", []string{"list", "-db", plainDB(t)}, nil, "coordinator's database"},
		{"missing database", []string{"list", "-db", "sqlite:" + missing}, nil, "no such file"},
		{"missing database by path", []string{"show", "-db", missing, "o-1"}, nil, "no such file"},
		{"unknown subcommand", []string{"drop", "-db", db}, nil, "unknown subcommand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TROUPE_DB_URL", "")
			var out, errOut bytes.Buffer
			err := run(t.Context(), append([]string{"2pc"}, tt.give...), &out, &errOut)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// plainDB is a service's database with no coordinator's tables.
func plainDB(t *testing.T) string {
	t.Helper()
	url := "sqlite:" + filepath.Join(t.TempDir(), "plain.db")
	db, err := outbox.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return url
}
