package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
)

func TestShopServesAndPrintsTheSaga(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.SyncBuffer
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
	// The live page, with the default Jaeger UI; an open event stream
	// does not hold up the shutdown.
	resp, err = http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `data-jaeger="http://localhost:16686"`) {
		t.Errorf("GET /: %s", page)
	}
	stream, err := http.Get("http://" + addr + "/ui/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if _, err := stream.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
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
	tests := []struct {
		name    string
		give    []string
		env     map[string]string
		wantErr string
	}{
		{"bad stock", []string{"-stock", "apple"}, nil, `"apple" is not sku=quantity`},
		{"negative stock", []string{"-stock", "apple=3,pear=-5"}, nil, `the quantity of pear, "-5", is not a whole number of at least 0`},
		{"stock without a sku", []string{"-stock", "=5"}, nil, `"=5" is not sku=quantity`},
		{"stock given twice", []string{"-stock", "apple=3, apple=4"}, nil, "apple is given twice"},
		{"transient share", []string{"-transient-failures", "2"}, nil, "must be in 0..1"},
		{"transient share not a number", []string{"-transient-failures", "NaN"}, nil, "-transient-failures NaN: must be in 0..1"},
		{"unknown checkout", []string{"-checkout", "xa"}, nil, `-checkout "xa": want saga or 2pc`},
		{"unknown command", []string{"extra"}, nil, `unknown command "extra"`},
		{"argument after flags", []string{"all", "-quiet", "extra"}, nil, "unexpected arguments"},
		{"log level", []string{"-log-level", "loud"}, nil, `-log-level "loud"`},
		{"service without bus", []string{"payment"}, nil, "-bus is required"},
		{"service on the bundled broker", []string{"order", "-bus", "mem://x"}, nil, "a service alone needs a broker shared"},
		{"service on an unknown scheme", []string{"notify", "-bus", "nats://h"}, nil, `unsupported scheme "nats"`},
		{"service without a host", []string{"notify", "-bus", "amqp:///"}, nil, "no host"},
		{"service on an unknown database", []string{"inventory", "-bus", "amqp://h/", "-db", "mysql://u:secret@h/db"}, nil, `-db "mysql://u:xxxxx@h/db"`},
		{"flag of another service", []string{"notify", "-stock", "a=1"}, nil, "not defined: -stock"},
		{"bad environment", []string{"payment"}, map[string]string{"TROUPE_PAYMENT_LIMIT": "lots"}, `TROUPE_PAYMENT_LIMIT="lots": not a value for -limit (a whole number)`},
		{"bad environment switch", []string{"all"}, map[string]string{"TROUPE_QUIET": "sometimes"}, `TROUPE_QUIET="sometimes": not a value for -quiet (true or false)`},
		{"bad environment share", []string{"all"}, map[string]string{"TROUPE_TRANSIENT_FAILURES": "a tenth"}, `not a value for -transient-failures (a number)`},
		{"negative limit from the environment", []string{"payment", "-bus", "amqp://h/"}, map[string]string{"TROUPE_PAYMENT_LIMIT": "-1"}, "-limit -1"},
		{"jaeger UI without scheme", []string{"-jaeger-ui", "localhost:16686"}, nil, `jaeger UI URL "localhost:16686"`},
		{"jaeger UI from the environment", []string{"all"}, map[string]string{"JAEGER_UI_URL": "ftp://j"}, `jaeger UI URL "ftp://j"`},
		{"healthcheck without URL", []string{"healthcheck"}, nil, "usage: shop healthcheck"},
		{"healthcheck of nothing", []string{"healthcheck", "http://127.0.0.1:1/healthz"}, nil, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := run(context.Background(), tt.give, &bytes.Buffer{}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run %v: error %v, want it to contain %q", tt.give, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error shows a password: %v", err)
			}
		})
	}
}

// TestHealthAndEnvironment: flags come from the environment, /healthz
// answers, and `shop healthcheck` agrees.
func TestHealthAndEnvironment(t *testing.T) {
	t.Setenv("ADDR", "127.0.0.1:0")
	t.Setenv("TROUPE_DATA_DIR", t.TempDir())
	t.Setenv("TROUPE_QUIET", "true")
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.SyncBuffer
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"all", "-bus", "mem://shop-health-test"}, &out, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("/healthz: %d %v", resp.StatusCode, body)
	}
	var hc bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "http://" + addr + "/healthz"}, &hc, nil); err != nil || !strings.Contains(hc.String(), `"ok"`) {
		t.Fatalf("healthcheck: %v %s", err, hc.String())
	}
	if err := run(context.Background(), []string{"healthcheck", "http://" + addr + "/nothing"}, &hc, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("healthcheck of a 404: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "handled") {
		t.Fatalf("TROUPE_QUIET was not read:\n%s", out.String())
	}
}

func TestHealthOfAStoppedStackIs503(t *testing.T) {
	s, err := shop.Start(context.Background(), shop.Config{BusURL: "mem://shop-health-503", DataDir: t.TempDir(), Services: []string{shop.NotifySvc}})
	if err != nil {
		t.Fatal(err)
	}
	h := healthHandler(s, shop.NotifySvc)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("running: %d %s", rec.Code, rec.Body)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "unhealthy") {
		t.Fatalf("stopped: %d %s", rec.Code, rec.Body)
	}
}
