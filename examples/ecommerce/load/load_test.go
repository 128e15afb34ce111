package load_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/load"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/saga"
)

var seq atomic.Int64

// startShop runs the given services (all when none) on a private bundled
// broker, SQLite files in dir, and serves the order API.
func startShop(t *testing.T, dir string, services ...string) *httptest.Server {
	t.Helper()
	return startShopWrapped(t, dir, nil, services...)
}

// startShopWrapped is startShop with the API's handler wrapped by wrap
// (when not nil).
func startShopWrapped(t *testing.T, dir string, wrap func(http.Handler) http.Handler, services ...string) *httptest.Server {
	t.Helper()
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:   fmt.Sprintf("mem://load-test-%d", seq.Add(1)),
		DataDir:  dir,
		Services: services,
		Payment:  shop.PaymentConfig{DeclinedMethod: "card-declined", TransientFailureRate: 0.05, Seed: 1},
		Stock:    map[string]int{"apple": 1_000_000, "pear": 1_000_000, "plum": 0},
		Retry: &handlers.RetryPolicy{Immediate: 2, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond,
			Multiplier: 2, MaxElapsed: time.Second, Delays: []time.Duration{20 * time.Millisecond}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.HTTPHandler() // the order API, and /sagas with the tracker
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// TestShortRun places 200 orders of the mix and checks every order's end
// against its plan, then the books; once following the stream of
// notices, once long-polling each order.
func TestShortRun(t *testing.T) {
	for _, longPoll := range []bool{false, true} {
		t.Run(fmt.Sprintf("long-poll=%v", longPoll), func(t *testing.T) { testShortRun(t, longPoll) })
	}
}

func testShortRun(t *testing.T, longPoll bool) {
	dir := t.TempDir()
	srv := startShop(t, dir)
	var progress testutil.SyncBuffer
	res, err := load.Run(context.Background(), load.Config{
		URL: srv.URL, Orders: 200, Concurrency: 20, DeclinedShare: 0.1, SoldOutShare: 0.1, Seed: 3,
		Progress: &progress, ProgressInterval: 50 * time.Millisecond, LongPoll: longPoll,
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{false: "stream", true: "long-poll"}[longPoll]; res.Notices != want {
		t.Fatalf("notifications by %q, want %q", res.Notices, want)
	}
	// Plums are out of stock, apples and pears plentiful: the happy
	// orders are confirmed, the declined and sold-out ones cancelled.
	if res.Planned[load.Declined] == 0 || res.Planned[load.SoldOut] == 0 {
		t.Fatalf("the mix has no declined or sold-out orders: %v", res.Planned)
	}
	if res.Confirmed != res.Planned[load.Happy] || res.Cancelled != res.Planned[load.Declined]+res.Planned[load.SoldOut] ||
		res.Stuck != 0 || res.Failed != 0 {
		t.Fatalf("tally %v, planned %v", res, res.Planned)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 || res.Rate() <= 0 {
		t.Fatalf("latencies and rate: %v", res)
	}
	if !strings.Contains(progress.String(), "/200") {
		t.Fatalf("no progress line: %q", progress.String())
	}
	ledgers, err := load.OpenLedgers(context.Background(), load.DataDirURLs(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer ledgers.Close()
	books, err := ledgers.Books(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !books.Balanced() || books.Confirmed != res.Confirmed || books.Cancelled != res.Cancelled || books.Pending != 0 ||
		books.Refunded == 0 {
		t.Fatalf("books %v; tally %v", books, res)
	}
	if len(res.OrderIDs) != 200 || res.LastNotifiedAt.IsZero() {
		t.Fatalf("%d order ids, last notified at %v", len(res.OrderIDs), res.LastNotifiedAt)
	}
	sagas, err := load.AwaitSagas(context.Background(), load.SagaConfig{URL: srv.URL, Timeout: 10 * time.Second}, res)
	if err != nil {
		t.Fatal(err)
	}
	if !sagas.Settled || !sagas.Final() || sagas.Verdict(res) != nil ||
		sagas.States[saga.Completed] != res.Confirmed || sagas.States[saga.Compensated] != res.Cancelled {
		t.Fatalf("sagas %v (%v); tally %v", sagas, sagas.Verdict(res), res)
	}
	// A sanity bound, not a speed check: the lag is the difference of two
	// times of this run (a zero time on either side would be years).
	if sagas.Lag < -time.Minute || sagas.Lag > time.Minute {
		t.Fatalf("tracker lag %v", sagas.Lag)
	}
}

// TestSagasNotSettled: without payment, inventory and notify every saga
// stays running; AwaitSagas gives up after its timeout and the verdict
// says so.
func TestSagasNotSettled(t *testing.T) {
	srv := startShop(t, t.TempDir(), shop.OrderSvc, shop.TrackerSvc)
	res, err := load.Run(context.Background(), load.Config{URL: srv.URL, Orders: 4, Concurrency: 4, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sagas, err := load.AwaitSagas(context.Background(), load.SagaConfig{URL: srv.URL, Timeout: 300 * time.Millisecond, Poll: 20 * time.Millisecond}, res)
	if err != nil {
		t.Fatal(err)
	}
	if sagas.Settled || sagas.Final() || sagas.States[saga.Running] != 4 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("sagas %v after %v, want 4 running, not settled", sagas, time.Since(start))
	}
	if err := sagas.Verdict(res); err == nil || !strings.Contains(err.Error(), "not every saga") {
		t.Fatalf("verdict %v", err)
	}
}

func TestAwaitSagasErrors(t *testing.T) {
	noTracker := startShop(t, t.TempDir(), shop.OrderSvc)
	tests := []struct {
		name string
		url  string
		want string
	}{
		{"not http", "ftp://x", "not http(s)"},
		{"no tracker there", noTracker.URL, "404"},
		{"nobody listens", "http://127.0.0.1:1", "GET /sagas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load.AwaitSagas(context.Background(), load.SagaConfig{URL: tt.url}, load.Result{OrderIDs: []string{"x"}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
		})
	}
}

// TestStuckOrders: without the notify service no order is ever notified;
// each counts as stuck once its timeout passes.
func TestStuckOrders(t *testing.T) {
	srv := startShop(t, t.TempDir(), shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc)
	res, err := load.Run(context.Background(), load.Config{URL: srv.URL, Orders: 5, Concurrency: 5, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stuck != 5 || res.Completed() != 0 {
		t.Fatalf("tally %v, want 5 stuck", res)
	}
}

func TestRate(t *testing.T) {
	srv := startShop(t, t.TempDir())
	res, err := load.Run(context.Background(), load.Config{URL: srv.URL, Orders: 21, Concurrency: 5, Rate: 40})
	if err != nil {
		t.Fatal(err)
	}
	// 21 orders at 40/s: the last one is placed 0.5 s after the first.
	if res.Completed() != 21 || res.Elapsed < 500*time.Millisecond {
		t.Fatalf("tally %v, want 21 orders in more than 0.5 s", res)
	}
}

func TestFailedPlacements(t *testing.T) {
	srv := startShop(t, t.TempDir())
	// A wrong base URL: every POST is answered 404.
	res, err := load.Run(context.Background(), load.Config{URL: srv.URL + "/nowhere", Orders: 3, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 3 || res.FirstErr == nil || !strings.Contains(res.FirstErr.Error(), "404") {
		t.Fatalf("tally %v (%v), want 3 failed with 404", res, res.FirstErr)
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		give load.Config
		want string
	}{
		{"no url", load.Config{Orders: 1}, `load: URL "": want http:// or https://`},
		{"no orders", load.Config{URL: "http://x"}, "load: Orders 0: must be at least 1"},
		{"shares", load.Config{URL: "http://x", Orders: 1, DeclinedShare: 0.7, SoldOutShare: 0.7}, "load: SoldOutShare 0.7: and DeclinedShare 0.7 add up to more than 1"},
		{"negative share", load.Config{URL: "http://x", Orders: 1, DeclinedShare: -0.1}, "load: DeclinedShare -0.1: must be in 0..1"},
		{"negative rate", load.Config{URL: "http://x", Orders: 1, Rate: -1}, "load: Rate -1: must be a number of at least 0"},
		{"rate not a number", load.Config{URL: "http://x", Orders: 1, Rate: math.NaN()}, "load: Rate NaN: must be a number of at least 0"},
		{"negative concurrency", load.Config{URL: "http://x", Orders: 1, Concurrency: -1}, "load: Concurrency -1: must not be negative"},
		{"negative timeout", load.Config{URL: "http://x", Orders: 1, Timeout: -time.Second}, "load: Timeout -1s: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load.Run(context.Background(), tt.give)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
			var fe *load.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *load.FieldError", err)
			}
		})
	}
}

func TestLedgersOfAMissingFolder(t *testing.T) {
	_, err := load.OpenLedgers(context.Background(), load.DataDirURLs(t.TempDir()+"/nothing"))
	if err == nil || !strings.Contains(err.Error(), "order database") {
		t.Fatalf("error %v, want one naming the order database", err)
	}
}

// TestNoticesFallBack: when the stream of notices is missing, or ends
// before the run (the shop's "end" event), the orders still waiting are
// long-polled, and every order still ends as planned.
func TestNoticesFallBack(t *testing.T) {
	tests := []struct {
		name   string
		stream http.HandlerFunc
		want   string
	}{
		{"missing", http.NotFound, "long-poll (no stream: GET /orders/notified: 404 Not Found)"},
		{"overflow", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, ": ping\n\nevent: end\ndata: {\"reason\":\"overflow\"}\n\n")
		}, "stream, then long-poll (the shop ended the stream: overflow)"},
		{"undecodable", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: notified\ndata: {\"order_id\": 7}\n\n")
		}, `stream, then long-poll (notice "{\"order_id\": 7}": undecodable`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startShopWrapped(t, t.TempDir(), func(h http.Handler) http.Handler {
				mux := http.NewServeMux()
				mux.Handle("/", h)
				mux.Handle("GET /orders/notified", tt.stream)
				return mux
			})
			res, err := load.Run(context.Background(), load.Config{URL: srv.URL, Orders: 40, Concurrency: 8, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed() != 40 || res.Stuck != 0 || res.Failed != 0 {
				t.Fatalf("tally %v", res)
			}
			if !strings.HasPrefix(res.Notices, tt.want) {
				t.Fatalf("notifications by %q, want %q...", res.Notices, tt.want)
			}
		})
	}
}
