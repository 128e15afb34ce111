package shop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/internal/shoptest"
	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/handlers"
)

var stackSeq atomic.Int64

func fastRetry() *handlers.RetryPolicy {
	return &handlers.RetryPolicy{Immediate: 2, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond,
		Multiplier: 2, MaxElapsed: time.Second, Delays: []time.Duration{20 * time.Millisecond, 50 * time.Millisecond}}
}

// startStack runs the four services on a private bundled broker and
// serves the order API.
func startStack(t *testing.T, pay shop.PaymentConfig) (*shop.Stack, *httptest.Server) {
	t.Helper()
	return startCheckoutStack(t, pay, shop.CheckoutChoreography)
}

// startCheckoutStack starts every service in process, the checkout run as
// mode, and serves the order API.
func startCheckoutStack(t *testing.T, pay shop.PaymentConfig, mode shop.Checkout) (*shop.Stack, *httptest.Server) {
	t.Helper()
	s, err := shop.Start(context.Background(), shop.Config{
		BusURL:   fmt.Sprintf("mem://shop-test-%d", stackSeq.Add(1)),
		DataDir:  t.TempDir(),
		Payment:  pay,
		Stock:    map[string]int{"apple": 10, "pear": 1},
		Retry:    fastRetry(),
		Checkout: mode,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Order.HTTPHandler())
	t.Cleanup(func() {
		srv.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, srv
}

func post(t *testing.T, srv *httptest.Server, body any, key string) (int, map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	if s, ok := body.(string); ok {
		buf.WriteString(s)
	} else if err := json.NewEncoder(&buf).Encode(body); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", &buf)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func count(t *testing.T, s *shop.Stack, svc, query string, args ...any) int {
	t.Helper()
	db := s.DB(svc)
	var n int
	if err := db.SQL().QueryRow(db.Rebind(query), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCheckoutOutcomes(t *testing.T) {
	s, srv := startStack(t, shop.PaymentConfig{DeclinedMethod: "card-declined", Limit: 100_000})
	tests := []struct {
		name       string
		give       shop.PlaceRequest
		wantStatus string
		wantReason string
		wantCharge string // status of the charge row; "" for none
	}{
		{"happy path", shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 2, Price: 100}), shop.Confirmed, "", "captured"},
		{"payment declined", shoptest.Order("bob", "card-declined", shop.Item{SKU: "apple", Quantity: 1, Price: 100}), shop.Cancelled, "card declined", ""},
		{"over the limit", shoptest.Order("cy", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 200_000}), shop.Cancelled, "over the limit", ""},
		{"out of stock is refunded", shoptest.Order("dee", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100}, shop.Item{SKU: "pear", Quantity: 2, Price: 50}),
			shop.Cancelled, "out of stock: pear", "refunded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv, tt.give, "")
			if code != http.StatusCreated {
				t.Fatalf("POST: %d %v", code, body)
			}
			o := awaitEnd(t, srv, body["id"].(string))
			if o.Status != tt.wantStatus || !strings.Contains(o.Reason, tt.wantReason) {
				t.Fatalf("order ended %s %q, want %s %q", o.Status, o.Reason, tt.wantStatus, tt.wantReason)
			}
			if got := chargeStatus(t, s, o.ID); got != tt.wantCharge {
				t.Fatalf("charge %q, want %q", got, tt.wantCharge)
			}
			kind := map[string]string{shop.Confirmed: "confirmed", shop.Cancelled: "cancelled"}[o.Status]
			awaitCount(t, s, shop.NotifySvc, `SELECT COUNT(*) FROM notifications WHERE order_id = ? AND kind = ?`, 1, o.ID, kind)
			if len(o.History) < 2 || o.History[0].Event != "order.placed" {
				t.Fatalf("history %+v", o.History)
			}
		})
	}
	// Stock: 10 apples - 2 (happy) = 8, the out-of-stock order's apple was
	// given back; the pear was never taken.
	if n := count(t, s, shop.InventorySvc, `SELECT available FROM stock WHERE sku = ?`, "apple"); n != 8 {
		t.Fatalf("apples left %d, want 8", n)
	}
	if n := count(t, s, shop.InventorySvc, `SELECT available FROM stock WHERE sku = ?`, "pear"); n != 1 {
		t.Fatalf("pears left %d, want 1", n)
	}
	books, err := s.Books(context.Background())
	if err != nil || !books.Balanced() {
		t.Fatalf("books: %v %v", books, err)
	}
}

func chargeStatus(t *testing.T, s *shop.Stack, orderID string) string {
	t.Helper()
	db := s.DB(shop.PaymentSvc)
	var status string
	err := db.SQL().QueryRow(db.Rebind(`SELECT status FROM charges WHERE order_id = ?`), orderID).Scan(&status)
	if err != nil {
		return ""
	}
	return status
}

func awaitCount(t *testing.T, s *shop.Stack, svc, query string, want int, args ...any) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for count(t, s, svc, query, args...) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: count %d, want %d", query, count(t, s, svc, query, args...), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTransientPaymentFailures: the gateway times out on most first tries;
// retries get every order through with exactly one charge each.
func TestTransientPaymentFailures(t *testing.T) {
	s, srv := startStack(t, shop.PaymentConfig{TransientFailureRate: 0.6, Seed: 7})
	var ids []string
	for i := range 8 {
		code, body := post(t, srv, shoptest.Order(fmt.Sprint("c", i), "card", shop.Item{SKU: "apple", Quantity: 1, Price: 10}), "")
		if code != http.StatusCreated {
			t.Fatalf("POST: %d %v", code, body)
		}
		ids = append(ids, body["id"].(string))
	}
	for _, id := range ids {
		if o := awaitEnd(t, srv, id); o.Status != shop.Confirmed {
			t.Fatalf("order %s ended %s %q", id, o.Status, o.Reason)
		}
		if n := count(t, s, shop.PaymentSvc, `SELECT COUNT(*) FROM charges WHERE order_id = ?`, id); n != 1 {
			t.Fatalf("order %s charged %d times", id, n)
		}
	}
	if s.Payment.Timeouts() == 0 {
		t.Fatal("the gateway never failed: the test proves nothing")
	}
	books, err := s.Books(context.Background())
	if err != nil || !books.Balanced() || books.Confirmed != 8 {
		t.Fatalf("books: %v %v", books, err)
	}
}

func TestDuplicatePostWithIdempotencyKey(t *testing.T) {
	s, srv := startStack(t, shop.PaymentConfig{})
	req := shoptest.Order("eve", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 100})
	code1, first := post(t, srv, req, "checkout-42")
	code2, second := post(t, srv, req, "checkout-42")
	if code1 != http.StatusCreated || code2 != http.StatusOK || first["id"] != second["id"] {
		t.Fatalf("first %d %v, second %d %v", code1, first["id"], code2, second["id"])
	}
	awaitEnd(t, srv, first["id"].(string))
	if n := count(t, s, shop.OrderSvc, `SELECT COUNT(*) FROM orders`); n != 1 {
		t.Fatalf("%d orders", n)
	}
	if n := count(t, s, shop.PaymentSvc, `SELECT COUNT(*) FROM charges`); n != 1 {
		t.Fatalf("%d charges", n)
	}
}

// TestConcurrentDuplicatePosts: requests with one Idempotency-Key at the
// same time make one order, and each gets it.
func TestConcurrentDuplicatePosts(t *testing.T) {
	s, _ := startStack(t, shop.PaymentConfig{})
	concurrentDuplicatePosts(t, s)
}

// concurrentDuplicatePosts places one order 16 times at once with one
// idempotency key: one call creates it, every call answers with it, and
// the order service holds one order.
func concurrentDuplicatePosts(t *testing.T, s *shop.Stack) {
	t.Helper()
	const n = 16
	req := shoptest.Order("kim", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 10})
	ids := make([]string, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var o shop.Order
			o, created[i], errs[i] = s.Order.Place(context.Background(), req, "same-key")
			ids[i] = o.ID
		})
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Place %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] || ids[i] == "" {
			t.Fatalf("Place answered orders %v, want one", ids)
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Fatalf("%d calls created the order, want 1", creators)
	}
	if got := count(t, s, shop.OrderSvc, `SELECT COUNT(*) FROM orders`); got != 1 {
		t.Fatalf("%d orders stored, want 1", got)
	}
}

// TestPlaceAnswersAsStored: POST /orders answers with the order as it was
// written, not read back: what GET shows of it then (whatever the saga did
// meanwhile) starts with the same fields and first history entry.
func TestPlaceAnswersAsStored(t *testing.T) {
	s, _ := startStack(t, shop.PaymentConfig{})
	ctx := context.Background()
	placed, created, err := s.Order.Place(ctx, shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 2, Price: 30}), "")
	if err != nil || !created {
		t.Fatalf("Place: %v, created %v", err, created)
	}
	got, err := s.Order.Get(ctx, placed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if placed.Status != shop.Pending || len(placed.History) != 1 || placed.NotifiedAt != nil || placed.Reason != "" {
		t.Fatalf("placed order %+v, want pending with one history entry", placed)
	}
	if !reflect.DeepEqual(placed.Items, got.Items) || placed.Customer != got.Customer || placed.Amount != got.Amount ||
		placed.PaymentMethod != got.PaymentMethod || !placed.History[0].At.Equal(got.History[0].At) ||
		placed.History[0].Status != got.History[0].Status || placed.History[0].Event != got.History[0].Event {
		t.Fatalf("placed %+v, stored %+v", placed, got)
	}
}

func TestBadRequestsNameTheField(t *testing.T) {
	_, srv := startStack(t, shop.PaymentConfig{})
	tests := []struct {
		name      string
		give      any
		wantField string
		wantError string
	}{
		{"no customer", shoptest.Order("", "card", shop.Item{SKU: "a", Quantity: 1, Price: 1}), "customer", "required"},
		{"no items", shop.PlaceRequest{Customer: "x", PaymentMethod: "card"}, "items", "at least one"},
		{"zero quantity", shoptest.Order("x", "card", shop.Item{SKU: "a", Quantity: 0, Price: 1}), "items[0].quantity", "positive"},
		{"wrong amount", shop.PlaceRequest{Customer: "x", PaymentMethod: "card", Amount: 5, Items: []shop.Item{{SKU: "a", Quantity: 1, Price: 1}}}, "amount", "add up to 1"},
		{"no payment method", shoptest.Order("x", "", shop.Item{SKU: "a", Quantity: 1, Price: 1}), "payment_method", "required"},
		{"unknown field", `{"customer":"x","colour":"red"}`, "", "unknown field"},
		{"not JSON", `{"customer":`, "", "body"},
		{"data after the object", `{"customer":"x"} {}`, "", "data after the JSON object"},
		{"a stray bracket after the object", `{"customer":"x"}]`, "", "data after the JSON object"},
		{"customer with a NUL", shoptest.Order("a\x00b", "card", shop.Item{SKU: "a", Quantity: 1, Price: 1}), "customer", "control character"},
		{"sku with a newline", shoptest.Order("x", "card", shop.Item{SKU: "a\nb", Quantity: 1, Price: 1}), "items[0].sku", "control character"},
		{"long payment method", shoptest.Order("x", strings.Repeat("m", 201), shop.Item{SKU: "a", Quantity: 1, Price: 1}), "payment_method", "201 bytes, longer than 200"},
		{"amount overflows", shop.PlaceRequest{Customer: "x", PaymentMethod: "card", Amount: 0, Items: []shop.Item{{SKU: "a", Quantity: 1 << 62, Price: 4}}}, "items[0]", "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv, tt.give, "")
			if code != http.StatusBadRequest || body["field"] != nilIfEmpty(tt.wantField) || !strings.Contains(fmt.Sprint(body["error"]), tt.wantError) {
				t.Fatalf("%d %v", code, body)
			}
		})
	}
	resp, err := http.Get(srv.URL + "/orders/nope")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET unknown order: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	// An unknown id of 10,000 bytes: the error quotes 100 of them.
	resp, err = http.Get(srv.URL + "/orders/" + strings.Repeat("x", 10_000))
	if err != nil {
		t.Fatal(err)
	}
	var notFound shop.APIError
	_ = json.NewDecoder(resp.Body).Decode(&notFound)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || len(notFound.Error) > 200 || !strings.Contains(notFound.Error, "(10000 bytes)") {
		t.Fatalf("GET of a long unknown id: %d %q", resp.StatusCode, notFound.Error)
	}
}

// TestIdempotencyKeyRules: a key is at most 255 bytes of printable UTF-8,
// and a key that placed an order cannot place another: the same key with
// another request is a 422 that names the first order, which is left as it
// was, and no second order is made.
func TestIdempotencyKeyRules(t *testing.T) {
	s, srv := startStack(t, shop.PaymentConfig{})
	order := shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 1, Price: 150})
	for _, tt := range []struct {
		name, key, want string
	}{
		{"too long", strings.Repeat("k", 256), "256 bytes, longer than 255"},
		{"not UTF-8", "k\xff", "not valid UTF-8"},
		{"control character", "k\x01", "control character"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := validKeyOnTheWire(tt.key); err != nil { // net/http refuses to send some bytes
				code, body := placeDirect(t, s, order, tt.key)
				if code != http.StatusBadRequest || body.Field != "Idempotency-Key" || !strings.Contains(body.Error, tt.want) {
					t.Fatalf("%d %+v", code, body)
				}
				return
			}
			code, body := post(t, srv, order, tt.key)
			if code != http.StatusBadRequest || body["field"] != "Idempotency-Key" || !strings.Contains(fmt.Sprint(body["error"]), tt.want) {
				t.Fatalf("%d %v", code, body)
			}
		})
	}
	if code, _ := post(t, srv, order, strings.Repeat("k", 255)); code != http.StatusCreated {
		t.Fatalf("a key of 255 bytes: %d, want 201", code)
	}

	code, first := post(t, srv, order, "k-reused")
	if code != http.StatusCreated {
		t.Fatalf("first POST: %d %v", code, first)
	}
	other := shoptest.Order("ada", "card", shop.Item{SKU: "apple", Quantity: 2, Price: 150})
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(other)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", &buf)
	req.Header.Set("Idempotency-Key", "k-reused")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body shop.APIError
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || body.Field != "Idempotency-Key" ||
		!strings.Contains(body.Error, fmt.Sprint(first["id"])) || resp.Header.Get("Location") != "/orders/"+fmt.Sprint(first["id"]) {
		t.Fatalf("the key with another request: %d %+v, Location %q; want 422 naming %v", resp.StatusCode, body, resp.Header.Get("Location"), first["id"])
	}
	if code, again := post(t, srv, order, "k-reused"); code != http.StatusOK || again["id"] != first["id"] {
		t.Fatalf("the key with its own request again: %d %v, want 200 and order %v", code, again, first["id"])
	}
	if n := count(t, s, shop.OrderSvc, `SELECT COUNT(*) FROM orders WHERE customer = 'ada'`); n != 2 {
		t.Fatalf("%d orders of ada, want 2 (the 255-byte key's and k-reused's)", n)
	}
}

// validKeyOnTheWire reports why net/http would refuse to send key as a
// header value, if it would.
func validKeyOnTheWire(key string) error {
	for _, r := range []byte(key) {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fmt.Errorf("byte %#x", r)
		}
	}
	return nil
}

// placeDirect places an order through OrderService.Place, as the API
// would with key, and turns the error into the API's answer.
func placeDirect(t *testing.T, s *shop.Stack, req shop.PlaceRequest, key string) (int, shop.APIError) {
	t.Helper()
	_, _, err := s.Order.Place(t.Context(), req, key)
	var fe *shop.FieldError
	if errors.As(err, &fe) {
		return http.StatusBadRequest, shop.APIError{Error: fe.Error(), Field: fe.Field}
	}
	if err != nil {
		return http.StatusInternalServerError, shop.APIError{Error: err.Error()}
	}
	return http.StatusCreated, shop.APIError{}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// awaitEnd waits for the order to leave PENDING (shoptest.AwaitEnd).
func awaitEnd(t *testing.T, srv *httptest.Server, id string) shop.Order {
	t.Helper()
	return shoptest.AwaitEnd(t, srv.URL, id, 30*time.Second)
}
