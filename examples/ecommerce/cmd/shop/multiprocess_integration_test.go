//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
)

// proc is one service running as its own process.
type proc struct {
	name     string
	cmd      *exec.Cmd
	out, err testutil.SyncBuffer
	exited   chan struct{} // closed when Wait returned, with waitErr
	waitErr  error
	url      string // its HTTP address
}

// transientRate is the payment gateway's share of timed-out tries.
const transientRate = 0.3

// TestMultiProcessCheckout runs the four services as four processes of the
// shop binary on RabbitMQ, each with its own PostgreSQL database, and
// drives the checkout through the order API; then it stops them and checks
// that one order's spans, exported by all four processes, form one trace.
func TestMultiProcessCheckout(t *testing.T) {
	amqpURL := testutil.AMQPURL(t)
	dbs := map[string]string{}
	for _, svc := range []string{shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc} {
		dbs[svc] = testutil.FreshPostgres(t)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "shop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := fmt.Sprintf("mp%d", time.Now().UnixNano()) // this run's exchange and queues
	env := append(cleanEnv(),
		"TROUPE_BUS_URL="+amqpURL, "TROUPE_EXCHANGE=shop-"+run, "TROUPE_QUEUE_PREFIX="+run+"-",
		"OTEL_TRACES_EXPORTER=console", "OTEL_BSP_SCHEDULE_DELAY=100")
	start := func(svc string, args ...string) *proc {
		p := &proc{name: svc, exited: make(chan struct{})}
		args = append(args, "-registry", filepath.Join(dir, svc+".registry.json"))
		p.cmd = exec.Command(bin, append([]string{svc}, args...)...)
		p.cmd.Env = append(env, "TROUPE_DB_URL="+dbs[svc], "TROUPE_TRACES_FILE="+filepath.Join(dir, svc+".spans.json"))
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			p.waitErr = p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(func() {
			select {
			case <-p.exited:
			default: // still running: the test failed
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
			if t.Failed() {
				t.Logf("--- %s stdout:\n%s\n--- %s stderr:\n%s", svc, tail(p.out.String()), svc, tail(p.err.String()))
			}
		})
		p.awaitHealthy(t)
		return p
	}
	// The order service starts last: the others' queues must be bound
	// before an order.placed is published, or the exchange drops it.
	procs := []*proc{
		start(shop.PaymentSvc, "-http", "127.0.0.1:0", "-transient-failures", fmt.Sprint(transientRate),
			"-seed", fmt.Sprint(seedThatTimesOutFirst(transientRate))),
		start(shop.InventorySvc, "-http", "127.0.0.1:0", "-stock", "apple=100,pear=1"),
		start(shop.NotifySvc, "-http", "127.0.0.1:0", "-log-level", "info"),
	}
	order := start(shop.OrderSvc, "-addr", "127.0.0.1:0")
	procs = append(procs, order)
	api := order.url

	// Each process exported what its handlers consume: together they
	// must agree with the declared checkout (troupe saga check).
	var registries []string
	for _, svc := range []string{shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc} {
		registries = append(registries, filepath.Join(dir, svc+".registry.json"))
	}
	reg, err := saga.ReadRegistryFiles(registries...)
	if err != nil {
		t.Fatal(err)
	}
	if err := saga.Check(&shop.CheckoutSaga, reg); err != nil {
		t.Fatalf("the processes' registry files against the checkout: %v", err)
	}

	paymentDB, orderDB, inventoryDB := openDB(t, dbs[shop.PaymentSvc]), openDB(t, dbs[shop.OrderSvc]), openDB(t, dbs[shop.InventorySvc])
	notifyDB := openDB(t, dbs[shop.NotifySvc])

	var happyID string
	t.Run("outcomes", func(t *testing.T) {
		tests := []struct {
			name       string
			give       shop.PlaceRequest
			wantStatus string
			wantReason string
			wantCharge string // the charge row's status; "" for none
		}{
			{"happy path", shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 2, Price: 150}), shop.Confirmed, "", "captured"},
			{"payment declined", shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), shop.Cancelled, "card declined", ""},
			{"out of stock is refunded", shoptest.Order("dee", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}, shop.Item{SKU: "pear", Quantity: 2, Price: 50}),
				shop.Cancelled, "out of stock: pear", "refunded"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, o := postOrder(t, api, tt.give, "")
				if code != http.StatusCreated {
					t.Fatalf("POST: %d %+v", code, o)
				}
				if tt.name == "happy path" {
					happyID = o.ID
				}
				o = shoptest.AwaitEnd(t, api, o.ID, 90*time.Second)
				if o.Status != tt.wantStatus || !strings.Contains(o.Reason, tt.wantReason) {
					t.Fatalf("order ended %s %q, want %s %q", o.Status, o.Reason, tt.wantStatus, tt.wantReason)
				}
				if got := chargeStatus(t, paymentDB, o.ID); got != tt.wantCharge {
					t.Fatalf("charge %q, want %q", got, tt.wantCharge)
				}
				kind := map[string]string{shop.Confirmed: "confirmed", shop.Cancelled: "cancelled"}[o.Status]
				awaitCount(t, notifyDB, 1, `SELECT COUNT(*) FROM notifications WHERE order_id = ? AND kind = ?`, o.ID, kind)
			})
		}
	})

	t.Run("transient payment failures", func(t *testing.T) {
		var ids []string
		for i := range 8 {
			code, o := postOrder(t, api, shoptest.Order(fmt.Sprint("c", i), "card", shop.Item{SKU: "apple", Quantity: 1, Price: 10}), "")
			if code != http.StatusCreated {
				t.Fatalf("POST: %d %+v", code, o)
			}
			ids = append(ids, o.ID)
		}
		for _, id := range ids {
			if o := shoptest.AwaitEnd(t, api, id, 90*time.Second); o.Status != shop.Confirmed {
				t.Fatalf("order %s ended %s %q", id, o.Status, o.Reason)
			}
			if n := count(t, paymentDB, `SELECT COUNT(*) FROM charges WHERE order_id = ?`, id); n != 1 {
				t.Fatalf("order %s charged %d times", id, n)
			}
		}
	})

	t.Run("duplicate POST with one Idempotency-Key", func(t *testing.T) {
		req := shoptest.Order("eve", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100})
		code1, first := postOrder(t, api, req, "checkout-"+run)
		code2, second := postOrder(t, api, req, "checkout-"+run)
		if code1 != http.StatusCreated || code2 != http.StatusOK || first.ID != second.ID {
			t.Fatalf("first %d %s, second %d %s", code1, first.ID, code2, second.ID)
		}
		if o := shoptest.AwaitEnd(t, api, first.ID, 90*time.Second); o.Status != shop.Confirmed {
			t.Fatalf("order ended %s %q", o.Status, o.Reason)
		}
		if n := count(t, orderDB, `SELECT COUNT(*) FROM orders WHERE customer = ?`, "eve"); n != 1 {
			t.Fatalf("%d orders for one key", n)
		}
		if n := count(t, paymentDB, `SELECT COUNT(*) FROM charges WHERE order_id = ?`, first.ID); n != 1 {
			t.Fatalf("%d charges for one key", n)
		}
	})

	t.Run("books balance", func(t *testing.T) {
		books, err := shop.ReadBooks(context.Background(), orderDB, paymentDB, inventoryDB)
		// 1 happy + 8 transient + 1 idempotent confirmed; declined and
		// out of stock cancelled.
		if err != nil || !books.Balanced() || books.Confirmed != 10 || books.Cancelled != 2 || books.Pending != 0 {
			t.Fatalf("books: %v %v", books, err)
		}
		// 100 apples - 2 - 8 - 1; the out-of-stock order's apple came back.
		if n := count(t, inventoryDB, `SELECT available FROM stock WHERE sku = ?`, "apple"); n != 89 {
			t.Fatalf("apples left %d, want 89", n)
		}
	})

	// Stop every process as compose would (SIGTERM); each flushes its
	// spans and exits 0.
	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		select {
		case <-p.exited:
			if p.waitErr != nil {
				t.Fatalf("%s exited: %v", p.name, p.waitErr)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not stop within 60 s of SIGTERM", p.name)
		}
		if !strings.Contains(p.out.String(), "shop "+p.name+": stopped") {
			t.Fatalf("%s did not say it stopped:\n%s", p.name, tail(p.out.String()))
		}
	}
	if t.Failed() || happyID == "" {
		return
	}

	t.Run("one order is one trace across the processes", func(t *testing.T) {
		spans := map[string][]jsonSpan{}
		for _, svc := range []string{shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc} {
			spans[svc] = readSpans(t, filepath.Join(dir, svc+".spans.json"))
		}
		traceID := checkTrace(t, spans, happyID)
		// The notify process's log line names the trace and the saga.
		notify := procs[2]
		want := regexp.MustCompile(`msg="notification sent".*order_id=` + happyID + `.*trace_id=` + traceID + ` span_id=[0-9a-f]{16} saga_id=` + happyID)
		if !want.MatchString(notify.err.String()) {
			t.Fatalf("no notification log line with trace_id %s and saga_id %s:\n%s", traceID, happyID, tail(notify.err.String()))
		}
		timeouts := 0
		for _, s := range spans[shop.PaymentSvc] {
			for _, e := range s.Events {
				if e.Name == shop.TimeoutEvent {
					timeouts++
				}
			}
		}
		if timeouts == 0 {
			t.Fatal("no gateway timeout recorded in the payment spans: the retries were not exercised")
		}
		t.Logf("%d simulated gateway timeouts retried", timeouts)
	})
}

// cleanEnv is this process's environment without the variables the shop
// reads, so that the test's settings are the only ones.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "ADDR" || strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(k, "TROUPE_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

var listening = regexp.MustCompile(`on http://(\S+);`)

// awaitHealthy waits for the process to print its address and answer
// 200 on /healthz.
func (p *proc) awaitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v\n%s", p.name, p.waitErr, tail(p.err.String()))
		default:
		}
		if m := listening.FindStringSubmatch(p.out.String()); m != nil {
			p.url = "http://" + m[1]
			resp, err := http.Get(p.url + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within 60 s", p.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 8000 {
		return "..." + s[len(s)-8000:]
	}
	return s
}

func openDB(t *testing.T, url string) *outbox.DB {
	t.Helper()
	db, err := outbox.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func postOrder(t *testing.T, api string, body shop.PlaceRequest, key string) (int, shop.Order) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, api+"/orders", bytes.NewReader(b))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o shop.Order
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, o
}

func count(t *testing.T, db *outbox.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRow(db.Rebind(query), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func awaitCount(t *testing.T, db *outbox.DB, want int, query string, args ...any) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := count(t, db, query, args...); n != want {
			return fmt.Errorf("%s: %d, want %d", query, n, want)
		}
		return nil
	})
}

func chargeStatus(t *testing.T, db *outbox.DB, orderID string) string {
	t.Helper()
	var status string
	err := db.SQL().QueryRow(db.Rebind(`SELECT status FROM charges WHERE order_id = ?`), orderID).Scan(&status)
	if err != nil {
		return ""
	}
	return status
}

// jsonSpan is the part of a span the console exporter writes that the
// test reads.
type jsonSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Attributes  []jsonAttr
	Resource    []jsonAttr
	Events      []struct{ Name string }
}

type jsonAttr struct {
	Key   string
	Value struct{ Value any }
}

func (s jsonSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

func (s jsonSpan) service() string {
	for _, a := range s.Resource {
		if a.Key == "service.name" {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

func readSpans(t *testing.T, path string) []jsonSpan {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []jsonSpan
	dec := json.NewDecoder(f)
	for {
		var s jsonSpan
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, s)
	}
}

// link is one step of an order's trace: a span name and the process that
// must have exported it.
type link struct{ name, service string }

// checkTrace checks that the order's trace, rooted at its POST /orders,
// chains parent -> child through the spans of all four processes, and
// returns its id.
func checkTrace(t *testing.T, spans map[string][]jsonSpan, orderID string) string {
	t.Helper()
	chain := []link{
		{"POST /orders", shop.OrderSvc},
		{"outbox wait order.placed", shop.OrderSvc}, {"publish order.placed", shop.OrderSvc},
		{"process order.placed", shop.PaymentSvc},
		{"outbox wait payment.captured", shop.PaymentSvc}, {"publish payment.captured", shop.PaymentSvc},
		{"process payment.captured", shop.InventorySvc},
		{"outbox wait inventory.reserved", shop.InventorySvc}, {"publish inventory.reserved", shop.InventorySvc},
		{"process inventory.reserved", shop.OrderSvc},
		{"outbox wait order.confirmed", shop.OrderSvc}, {"publish order.confirmed", shop.OrderSvc},
		{"process order.confirmed", shop.NotifySvc},
	}
	var traceID string
	for _, s := range spans[shop.OrderSvc] {
		if s.Name == "POST /orders" && s.attr("troupe.saga_id") == orderID {
			traceID = s.SpanContext.TraceID
		}
	}
	if traceID == "" {
		t.Fatalf("no POST /orders span for order %s in the order process's spans", orderID)
	}
	// The trace's spans, with the file (process) each came from.
	type found struct {
		jsonSpan
		file string
	}
	var trace []found
	services := map[string]bool{}
	for file, ss := range spans {
		for _, s := range ss {
			if s.SpanContext.TraceID == traceID {
				trace = append(trace, found{s, file})
				services[file] = true
			}
		}
	}
	if len(services) != 4 {
		t.Fatalf("the trace has spans of %d processes (%v), want 4", len(services), services)
	}
	noParent := strings.Repeat("0", 16)
	var walk func(parent string, i int) int
	walk = func(parent string, i int) int {
		if i == len(chain) {
			return i
		}
		best := i
		for _, s := range trace {
			if s.Name == chain[i].name && s.file == chain[i].service && s.service() == chain[i].service &&
				(s.Parent.SpanID == parent || (parent == "" && s.Parent.SpanID == noParent)) {
				best = max(best, walk(s.SpanContext.SpanID, i+1))
			}
		}
		return best
	}
	if got := walk("", 0); got < len(chain) {
		var names []string
		for _, s := range trace {
			names = append(names, fmt.Sprintf("%s[%s](%s<-%s)", s.Name, s.file, s.SpanContext.SpanID, s.Parent.SpanID))
		}
		t.Fatalf("the chain stops before %v; the trace's spans: %s", chain[got], strings.Join(names, ", "))
	}
	return traceID
}
