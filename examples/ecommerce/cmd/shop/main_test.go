package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestShopServesAndPrintsTheSaga(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-data", t.TempDir(), "-bus", "mem://shop-main-test", "-transient-failures", "0"}, &out, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+addr+"/orders", "application/json",
		strings.NewReader(`{"customer":"ada","items":[{"sku":"apple","quantity":2,"price":150}],"amount":300,"payment_method":"card"}`))
	if err != nil {
		t.Fatal(err)
	}
	var o struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&o)
	resp.Body.Close()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "notify    handled order.confirmed      order "+o.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("no notification line:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "shop: stopped; 1 confirmed, 0 cancelled, 0 pending") {
		t.Fatalf("final books:\n%s", out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-stock", "apple"}, {"-transient-failures", "2"}, {"extra"}} {
		if err := run(context.Background(), args, &bytes.Buffer{}, nil); err == nil {
			t.Errorf("run %v: no error", args)
		}
	}
}
