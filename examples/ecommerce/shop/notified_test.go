package shop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

func getOrder(t *testing.T, url string) (int, shop.Order) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o shop.Order
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, o
}

// TestLongPollUntilNotified: one GET with wait=notified answers once the
// customer was told, with the notification in the history.
func TestLongPollUntilNotified(t *testing.T) {
	_, srv := startStack(t, shop.PaymentConfig{DeclinedMethod: "card-declined"})
	tests := []struct {
		name       string
		give       shop.PlaceRequest
		wantStatus string
		wantKind   string
	}{
		{"confirmed", shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), shop.Confirmed, "confirmed"},
		{"declined", shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), shop.Cancelled, "cancelled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv, tt.give, "")
			if code != http.StatusCreated {
				t.Fatalf("POST: %d %v", code, body)
			}
			code, o := getOrder(t, srv.URL+"/orders/"+body["id"].(string)+"?wait=notified&timeout=30s")
			if code != http.StatusOK || o.NotifiedAt == nil || o.Status != tt.wantStatus {
				t.Fatalf("GET: %d, status %s, notified at %v; want %s and a time", code, o.Status, o.NotifiedAt, tt.wantStatus)
			}
			last := o.History[len(o.History)-1]
			if last.Event != "notification.sent" || last.Detail != tt.wantKind {
				t.Fatalf("last history entry %+v, want notification.sent %s", last, tt.wantKind)
			}
		})
	}
}

// TestLongPollTimesOut: without a notify service nobody is told; the poll
// answers at its timeout with the order as it is.
func TestLongPollTimesOut(t *testing.T) {
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:   fmt.Sprintf("mem://shop-test-%d", stackSeq.Add(1)),
		DataDir:  t.TempDir(),
		Services: []string{shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc},
		Stock:    map[string]int{"apple": 10},
		Retry:    fastRetry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Order.HTTPHandler())
	defer func() {
		srv.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	_, body := post(t, srv, shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), "")
	start := time.Now()
	code, o := getOrder(t, srv.URL+"/orders/"+body["id"].(string)+"?wait=notified&timeout=300ms")
	if code != http.StatusOK || o.NotifiedAt != nil || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("GET: %d, notified at %v after %v; want 200, none, after the timeout", code, o.NotifiedAt, time.Since(start))
	}
}

func TestLongPollBadRequests(t *testing.T) {
	_, srv := startStack(t, shop.PaymentConfig{})
	_, body := post(t, srv, shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), "")
	id := body["id"].(string)
	tests := []struct {
		give string
		want int
	}{
		{"?wait=confirmed", http.StatusBadRequest},
		{"?wait=notified&timeout=soon", http.StatusBadRequest},
		{"?wait=notified&timeout=-1s", http.StatusBadRequest},
		{"?wait=notified&timeout=2h", http.StatusBadRequest},
		{"?timeout=1s", http.StatusBadRequest},
	}
	for _, tt := range tests {
		if code, _ := getOrder(t, srv.URL+"/orders/"+id+tt.give); code != tt.want {
			t.Errorf("GET %s: %d, want %d", tt.give, code, tt.want)
		}
	}
	if code, _ := getOrder(t, srv.URL+"/orders/nope?wait=notified&timeout=1s"); code != http.StatusNotFound {
		t.Errorf("unknown order: %d, want 404", code)
	}
}

// notices reads srv's GET /orders/notified, until the stream or the
// test ends.
func notices(t *testing.T, srv *httptest.Server) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/orders/notified", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /orders/notified: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return sseEvents(ctx, resp.Body)
}

// TestNotifiedStream: GET /orders/notified sends a notice per order whose
// customer is told, with the order's final status; CloseStreams ends it
// with an "end" event, reason "closing".
func TestNotifiedStream(t *testing.T) {
	s, srv := startStack(t, shop.PaymentConfig{DeclinedMethod: "card-declined"})
	events := notices(t, srv)
	want := map[string]string{}
	for _, give := range []struct {
		method, status string
	}{{"card", shop.Confirmed}, {"card-declined", shop.Cancelled}} {
		code, body := post(t, srv, shoptest.Order("ada", give.method, shop.Item{SKU: "apple", Quantity: 1, Price: 100}), "")
		if code != http.StatusCreated {
			t.Fatalf("POST: %d %v", code, body)
		}
		want[body["id"].(string)] = give.status
	}
	timeout := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended; still waiting for %v", want)
			}
			var n shop.Notice
			if ev.name != "notified" || json.Unmarshal([]byte(ev.data), &n) != nil || n.NotifiedAt.IsZero() {
				t.Fatalf("event %+v", ev)
			}
			if n.Status != want[n.OrderID] {
				t.Fatalf("notice %+v, want status %q", n, want[n.OrderID])
			}
			delete(want, n.OrderID)
		case <-timeout:
			t.Fatalf("no notice for %v", want)
		}
	}
	s.Order.CloseStreams()
	if ev := <-events; ev.name != "end" || ev.data != `{"reason":"closing"}` {
		t.Fatalf("after CloseStreams: %+v, want the end, closing", ev)
	}
	if ev, ok := <-events; ok {
		t.Fatalf("after the end event: %+v, want the stream's end", ev)
	}
}
