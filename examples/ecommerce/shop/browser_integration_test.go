//go:build integration

package shop_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
)

// chromiumPath is Debian's chromium, which scripts/browser-deps.sh
// installs (`make test` runs it).
const chromiumPath = "/usr/bin/chromium"

// testJaeger is the Jaeger UI the page under test links to.
const testJaeger = "http://jaeger.test:16686"

// TestLivePageInBrowser drives the live page in a headless Chromium: the
// page, opened before any order, lists a happy, a declined and an
// out-of-stock order as their sagas end (completed, compensated) without
// a reload; a click on one shows its timeline, its graph with the current
// step highlighted, and the link to its trace in Jaeger. It saves a
// screenshot (live-page.png) in $TROUPE_ARTIFACTS, else in the test's
// artifact directory (go test -artifacts keeps it).
func TestLivePageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser test needs Debian's chromium at %s (%v): run `bash scripts/browser-deps.sh` (make test does)", chromiumPath, err)
	}
	rec, _ := testutil.RecordSpans(t)

	srv := startPageStack(t)
	ctx := startBrowser(t)
	// run runs steps in the tab, failing t after 30 s.
	run := func(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(actx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// The page first, with a mark that a reload would wipe.
	run(t, "open the page",
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#empty`)),
		chromedp.WaitVisible(chromedp.CSS(`#live:not(.off)`)),
		eval(`window.notReloaded = 42`, new(int)))

	happy := placeOrder(t, srv, shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 2, Price: 150}))
	declined := placeOrder(t, srv, shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 150}))
	noStock := placeOrder(t, srv, shoptest.Order("cy", "card", shop.Item{SKU: "plum", Quantity: 5, Price: 90}))
	run(t, "see the sagas end live",
		chromedp.WaitVisible(row(happy, "completed")),
		chromedp.WaitVisible(row(declined, "compensated")),
		chromedp.WaitVisible(row(noStock, "compensated")))
	var mark int
	run(t, "look for the mark", eval(`window.notReloaded || 0`, &mark))
	if mark != 42 {
		t.Fatalf("the page was reloaded (mark %d)", mark)
	}

	tests := []struct {
		name, id, current string
		events            []string
	}{
		// A declined charge undoes the order: the current step is "undo place".
		{"declined", declined, "c0", []string{"order.placed", "payment.failed", "order.cancelled"}},
		// A completed checkout ends on its last step, confirm.
		{"happy", happy, "s3", []string{"order.placed", "payment.captured", "inventory.reserved", "order.confirmed"}},
		// Out of stock: the charge is refunded, then the order cancelled.
		{"out of stock", noStock, "c0", []string{"order.placed", "payment.captured", "inventory.failed", "payment.refunded", "order.cancelled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The row is found and clicked in one step of the page's own:
			// the live updates may replace a row between a lookup through
			// the DevTools protocol and a click on the node it found
			// ("Could not find node with given id").
			var clicked bool
			run(t, "select "+tt.name,
				eval(`(() => { const r = document.querySelector('#orders tr[data-id="`+tt.id+`"]'); if (r) r.click(); return !!r })()`, &clicked),
				chromedp.WaitVisible(chromedp.CSS(`#orders tr.selected[data-id="`+tt.id+`"]`)),
				chromedp.WaitReady(chromedp.CSS(`#graph g.node.current[data-node="`+tt.current+`"]`)))
			if !clicked {
				t.Fatalf("no row of %s on the page", tt.id)
			}
			var current []string
			run(t, "read the graph", eval(`[...document.querySelectorAll("#graph g.node.current")].map(n => n.dataset.node)`, &current))
			if len(current) != 1 || current[0] != tt.current {
				t.Errorf("highlighted nodes %v, want [%s]", current, tt.current)
			}
			testutil.Eventually(t, 20*time.Second, func() error {
				actx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				timeline, err := chromedp.Run(actx, chromedp.Text(chromedp.CSS(`#timeline`)))
				if err != nil {
					return err
				}
				return inOrder(timeline, tt.events)
			})
			var href string
			run(t, "read the trace link", eval(`document.querySelector("#trace-link:not([hidden])").getAttribute("href")`, &href))
			if want := testJaeger + "/trace/" + traceOf(t, rec, tt.id); href != want {
				t.Errorf("trace link %q, want %q", href, want)
			}
		})
	}

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("TROUPE_ARTIFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "live-page.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the live page: %s", path)
}

// startPageStack runs the four services and the tracker in-process on a
// private bundled broker and serves the API and the live page on a
// loopback server.
func startPageStack(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:  fmt.Sprintf("mem://shop-page-test-%d", stackSeq.Add(1)),
		DataDir: t.TempDir(),
		Payment: shop.PaymentConfig{DeclinedMethod: "card-declined"},
		Stock:   map[string]int{"apple": 10, "plum": 1},
		Retry:   fastRetry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	page, err := s.LivePage(shop.PageConfig{JaegerURL: testJaeger + "/", Interval: 100 * time.Millisecond})
	if err != nil || page == nil {
		t.Fatalf("live page: %v, %v", page, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", s.HTTPHandler())
	mux.Handle("GET /{$}", page)
	mux.Handle("/ui/", page)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.RegisterOnShutdown(page.Close)
	srv.Start()
	t.Cleanup(func() {
		page.Close() // ends the event stream, which the server would wait for
		srv.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// startBrowser starts a headless Chromium with a profile of its own and
// returns the context of its one tab; the browser ends with the test.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 940),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
	})
	// The first call starts the browser, which lives as long as the
	// context of that call: no timeout on it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

func placeOrder(t *testing.T, srv *httptest.Server, req shop.PlaceRequest) string {
	t.Helper()
	code, body := post(t, srv, req, "")
	if code != http.StatusCreated {
		t.Fatalf("POST /orders: %d %v", code, body)
	}
	return body["id"].(string)
}

// row selects the list's row of order id in saga state.
func row(id, state string) chromedp.CSS {
	return chromedp.CSS(`#orders tr[data-id="` + id + `"][data-state="` + state + `"]`)
}

// eval evaluates a JavaScript expression into *into.
func eval[T any](expr string, into *T) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		v, err := chromedp.Evaluate[T](expr)(ctx, t)
		*into = v
		return err
	})
}

// traceOf returns the trace id of order id's POST /orders span.
func traceOf(t *testing.T, rec *tracetest.SpanRecorder, id string) string {
	t.Helper()
	spans := orderSpans(rec.Ended(), id)
	if len(spans) == 0 {
		t.Fatalf("no trace recorded for order %s", id)
	}
	return spans[0].SpanContext().TraceID().String()
}

// inOrder reports whether text has each of words, in that order.
func inOrder(text string, words []string) error {
	rest := text
	for _, w := range words {
		i := strings.Index(rest, w)
		if i < 0 {
			return fmt.Errorf("timeline %q lacks %q (in order %v)", text, w, words)
		}
		rest = rest[i+len(w):]
	}
	return nil
}
