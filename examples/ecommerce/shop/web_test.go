package shop_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/saga"
)

// TestLivePageServes checks the page's routes without a browser: the
// page names the Jaeger UI, the stream sends the orders as their sagas
// move, the detail has the history, the graph highlights the step, and
// Close ends an open stream.
func TestLivePageServes(t *testing.T) {
	s, api := startStack(t, shop.PaymentConfig{DeclinedMethod: "card-declined"})
	page, err := s.LivePage(shop.PageConfig{JaegerURL: "http://jaeger.test:16686/", Interval: 20 * time.Millisecond})
	if err != nil || page == nil {
		t.Fatalf("LivePage: %v, %v", page, err)
	}
	srv := httptest.NewServer(page)
	t.Cleanup(func() {
		page.Close()
		srv.Close()
	})

	for _, tt := range []struct {
		path, want string
		code       int
	}{
		{"/", `data-jaeger="http://jaeger.test:16686"`, http.StatusOK},
		{"/ui/", `<script src="/ui/static/app.js">`, http.StatusOK},
		{"/ui/static/app.js", `new EventSource("/ui/stream")`, http.StatusOK},
		{"/ui/static/style.css", `.saga-graph`, http.StatusOK},
		{"/ui/orders/nope", `no order nope`, http.StatusNotFound},
		{"/ui/orders/nope/graph.svg", `no order nope`, http.StatusNotFound},
		{"/elsewhere", ``, http.StatusNotFound},
	} {
		code, body := get(t, srv.URL+tt.path)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: %d %.200q; want %d with %q", tt.path, code, body, tt.code, tt.want)
		}
	}

	// The stream, opened before the order, sends it when its saga ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/ui/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream Content-Type %q", ct)
	}
	code, body := post(t, api, shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), "")
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %v", code, body)
	}
	id := body["id"].(string)
	events := readEvents(ctx, resp.Body)
	for rows := range events {
		if len(rows) == 1 && rows[0].ID == id && rows[0].State == saga.Compensated {
			if rows[0].Customer != "bob" || rows[0].Amount != 100 || rows[0].Step != "place" {
				t.Errorf("row %+v", rows[0])
			}
			break
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the stream never sent the compensated order")
	}

	var d shop.PageDetail
	code, raw := get(t, srv.URL+"/ui/orders/"+id)
	if err := json.Unmarshal([]byte(raw), &d); err != nil || code != http.StatusOK {
		t.Fatalf("detail: %d %v %s", code, err, raw)
	}
	if d.Order.ID != id || d.Saga.State != saga.Compensated || len(d.Saga.History) < 3 || d.Saga.History[0].Event != "order.placed" {
		t.Errorf("detail %+v", d)
	}
	// Without a tracer provider there is no trace; with one (another test of
	// the binary may have installed it globally) the link is the order's trace.
	if d.TraceID != "" || d.TraceURL != "" {
		if len(d.TraceID) != 32 || d.TraceURL != "http://jaeger.test:16686/trace/"+d.TraceID {
			t.Errorf("trace %q, link %q: want both empty or the link to the trace", d.TraceID, d.TraceURL)
		}
	}
	code, svg := get(t, srv.URL+"/ui/orders/"+id+"/graph.svg")
	if code != http.StatusOK || !strings.Contains(svg, `class="node undo done current" data-node="c0"`) {
		t.Errorf("graph: %d %s", code, svg)
	}

	// Close ends the open stream (as a server shutting down needs).
	page.Close()
	for range events { // drained until the body ends
	}
	if ctx.Err() != nil {
		t.Error("the stream did not end on Close")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// readEvents yields the rows of each "orders" event of a stream until it
// ends or ctx does.
func readEvents(ctx context.Context, body io.Reader) <-chan []shop.PageRow {
	out := make(chan []shop.PageRow)
	go func() {
		defer close(out)
		for ev := range sseEvents(ctx, body) {
			if ev.name != "orders" {
				continue
			}
			var rows []shop.PageRow
			if err := json.Unmarshal([]byte(ev.data), &rows); err != nil {
				rows = []shop.PageRow{{ID: fmt.Sprintf("undecodable: %v", err)}}
			}
			select {
			case out <- rows:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// sseEvent is one server-sent event.
type sseEvent struct{ name, data string }

// sseEvents yields the events of a stream of server-sent events until it
// ends or ctx does.
func sseEvents(ctx context.Context, body io.Reader) <-chan sseEvent {
	out := make(chan sseEvent)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if ev.name == "" {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}
