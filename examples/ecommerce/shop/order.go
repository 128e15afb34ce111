package shop

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
)

// Order statuses.
const (
	Pending   = "PENDING"
	Confirmed = "CONFIRMED"
	Cancelled = "CANCELLED"
)

// Order is an order as the order service keeps it. NotifiedAt is when the
// customer was told how it ended (the service consumes notification.sent).
type Order struct {
	ID            string         `json:"id"`
	Customer      string         `json:"customer"`
	Items         []Item         `json:"items"`
	Amount        int            `json:"amount"`
	PaymentMethod string         `json:"payment_method"`
	Status        string         `json:"status"`
	Reason        string         `json:"reason,omitempty"`
	NotifiedAt    *time.Time     `json:"notified_at,omitempty"`
	History       []HistoryEntry `json:"history"`
}

// HistoryEntry is one step of an order's life.
type HistoryEntry struct {
	At     time.Time `json:"at"`
	Status string    `json:"status"`
	Event  string    `json:"event"`
	Detail string    `json:"detail,omitempty"`
}

// PlaceRequest is the body of POST /orders.
type PlaceRequest struct {
	Customer      string `json:"customer"`
	Items         []Item `json:"items"`
	Amount        int    `json:"amount"`
	PaymentMethod string `json:"payment_method"`
}

// FieldError names the request field that is wrong.
type FieldError struct {
	Field, Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Validate checks a request field by field.
func (r PlaceRequest) Validate() error {
	switch {
	case strings.TrimSpace(r.Customer) == "":
		return &FieldError{"customer", "required"}
	case len(r.Items) == 0:
		return &FieldError{"items", "at least one item is required"}
	case r.PaymentMethod == "":
		return &FieldError{"payment_method", "required"}
	}
	if err := checkText("customer", r.Customer, MaxText); err != nil {
		return err
	}
	if err := checkText("payment_method", r.PaymentMethod, MaxText); err != nil {
		return err
	}
	total := 0
	for i, it := range r.Items {
		if err := checkText(fmt.Sprintf("items[%d].sku", i), it.SKU, MaxText); err != nil {
			return err
		}
		switch {
		case it.SKU == "":
			return &FieldError{fmt.Sprintf("items[%d].sku", i), "required"}
		case it.Quantity <= 0:
			return &FieldError{fmt.Sprintf("items[%d].quantity", i), "must be positive"}
		case it.Price < 0:
			return &FieldError{fmt.Sprintf("items[%d].price", i), "must not be negative"}
		case it.Price != 0 && it.Quantity > math.MaxInt/it.Price:
			return &FieldError{fmt.Sprintf("items[%d]", i), "quantity × price is too large"}
		}
		line := it.Quantity * it.Price
		if total > math.MaxInt-line {
			return &FieldError{"items", "add up to more than the largest amount"}
		}
		total += line
	}
	if r.Amount != total {
		return &FieldError{"amount", fmt.Sprintf("is %d but the items add up to %d", r.Amount, total)}
	}
	return nil
}

// MaxText is the longest customer, payment method or sku, in bytes.
const MaxText = 200

// checkText refuses text over most bytes, not UTF-8, or with a control
// character (a NUL among them): PostgreSQL would refuse to store the last
// two, and the same request must fare alike on every database. (A JSON
// field is always UTF-8 once decoded; a header need not be.)
func checkText(field, s string, most int) error {
	switch {
	case len(s) > most:
		return &FieldError{field, fmt.Sprintf("%d bytes, longer than %d", len(s), most)}
	case !utf8.ValidString(s):
		return &FieldError{field, "not valid UTF-8"}
	case strings.ContainsFunc(s, unicode.IsControl):
		return &FieldError{field, "has a control character"}
	}
	return nil
}

// OrderService places orders and follows them to their end.
type OrderService struct {
	db      *outbox.DB
	em      *handlers.Emitter
	waiting waiters
	notices notices
}

var orderSchema = []string{
	`CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, items TEXT NOT NULL,
		amount INTEGER NOT NULL, payment_method TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '')`,
	`CREATE TABLE IF NOT EXISTS order_history (order_id TEXT NOT NULL, at TIMESTAMP NOT NULL, status TEXT NOT NULL,
		event TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')`,
	`CREATE INDEX IF NOT EXISTS order_history_order ON order_history (order_id, at)`,
	`CREATE TABLE IF NOT EXISTS order_idempotency (key TEXT PRIMARY KEY, order_id TEXT NOT NULL)`,
}

// NewOrderService creates the service's tables and registers its handlers.
func NewOrderService(ctx context.Context, db *outbox.DB, r *handlers.Router) (*OrderService, error) {
	if err := createSchema(ctx, db, orderSchema); err != nil {
		return nil, err
	}
	s := &OrderService{db: db, em: r.Emitter()}
	return s, errors.Join(
		handlers.HandleTx(r, "on-reserved", handlers.TxHandlerFunc[InventoryReserved](func(ctx context.Context, tx *outbox.Tx, e InventoryReserved) error {
			return s.settle(ctx, tx, e.OrderID, Confirmed, e.EventName(), "")
		})),
		handlers.HandleTx(r, "on-payment-failed", handlers.TxHandlerFunc[PaymentFailed](func(ctx context.Context, tx *outbox.Tx, e PaymentFailed) error {
			return s.settle(ctx, tx, e.OrderID, Cancelled, e.EventName(), e.Reason)
		})),
		handlers.HandleTx(r, "on-refunded", handlers.TxHandlerFunc[PaymentRefunded](func(ctx context.Context, tx *outbox.Tx, e PaymentRefunded) error {
			return s.settle(ctx, tx, e.OrderID, Cancelled, e.EventName(), e.Reason)
		})),
		s.registerNotified(ctx, r),
	)
}

// Place stores a new order and emits order.placed in one transaction. With
// an idempotency key, a retried request returns the order the first one
// created (created is false) instead of a second order.
func (s *OrderService) Place(ctx context.Context, req PlaceRequest, idempotencyKey string) (o Order, created bool, err error) {
	if err := req.Validate(); err != nil {
		return Order{}, false, err
	}
	if err := checkText("Idempotency-Key", idempotencyKey, MaxIdempotencyKey); err != nil {
		return Order{}, false, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	err = s.db.InTx(ctx, func(tx *outbox.Tx) error {
		if idempotencyKey != "" {
			// The key first: a retry finds it taken, and reads the order
			// the first request created.
			res, err := tx.Exec(ctx, `INSERT INTO order_idempotency (key, order_id) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, idempotencyKey, id)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				if err == nil {
					err = tx.QueryRow(ctx, `SELECT order_id FROM order_idempotency WHERE key = ?`, idempotencyKey).Scan(&id)
				}
				return err
			}
		}
		items, _ := json.Marshal(req.Items)
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, customer, items, amount, payment_method, status) VALUES (?, ?, ?, ?, ?, ?)`,
			id, req.Customer, string(items), req.Amount, req.PaymentMethod, Pending); err != nil {
			return err
		}
		at, err := history(ctx, tx, id, Pending, "order.placed", "")
		if err != nil {
			return err
		}
		created = true
		o = Order{ID: id, Customer: req.Customer, Items: req.Items, Amount: req.Amount, PaymentMethod: req.PaymentMethod,
			Status: Pending, History: []HistoryEntry{{At: at, Status: Pending, Event: "order.placed"}}}
		return s.em.EmitTx(ctx, tx, OrderPlaced{OrderID: id, Customer: req.Customer, Items: req.Items,
			Amount: req.Amount, PaymentMethod: req.PaymentMethod}, handlers.WithSagaID(id))
	})
	if err != nil {
		return Order{}, false, fmt.Errorf("place order: %w", err)
	}
	if created {
		// As written: the order may have moved on since, and a GET shows
		// that; reading it back would cost more than the insert.
		return o, true, nil
	}
	if o, err = s.Get(ctx, id); err != nil {
		return Order{}, false, err
	}
	if o.Customer != req.Customer || !slices.Equal(o.Items, req.Items) || o.Amount != req.Amount || o.PaymentMethod != req.PaymentMethod {
		return Order{}, false, &KeyReusedError{Key: idempotencyKey, OrderID: o.ID}
	}
	return o, false, nil
}

// MaxIdempotencyKey is the longest Idempotency-Key taken, in bytes.
const MaxIdempotencyKey = 255

// KeyReusedError is a request whose Idempotency-Key placed another order
// already (different customer, items, amount or payment method): a retry
// must repeat its request, and a new order needs a new key. Placing it
// would drop the new order; returning the old one would answer a question
// the client did not ask.
type KeyReusedError struct {
	Key, OrderID string
}

func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("Idempotency-Key %q was used for order %s, with another request", e.Key, e.OrderID)
}

// ErrNoOrder is returned by Get for an unknown id.
var ErrNoOrder = errors.New("shop: no such order")

// Get returns an order with its history.
func (s *OrderService) Get(ctx context.Context, id string) (Order, error) {
	o := Order{ID: id}
	var items string
	var notified sql.NullTime
	// One statement, so that the status and the notification agree.
	err := s.db.QueryRow(ctx, `SELECT o.customer, o.items, o.amount, o.payment_method, o.status, o.reason, n.at
		FROM orders o LEFT JOIN order_notified n ON n.order_id = o.id WHERE o.id = ?`, id).
		Scan(&o.Customer, &items, &o.Amount, &o.PaymentMethod, &o.Status, &o.Reason, &notified)
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, ErrNoOrder
	}
	if err != nil {
		return Order{}, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return Order{}, err
	}
	if notified.Valid {
		o.NotifiedAt = &notified.Time
	}
	rows, err := s.db.Query(ctx, `SELECT at, status, event, detail FROM order_history WHERE order_id = ? ORDER BY at`, id)
	if err != nil {
		return Order{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var h HistoryEntry
		if err := rows.Scan(&h.At, &h.Status, &h.Event, &h.Detail); err != nil {
			return Order{}, err
		}
		o.History = append(o.History, h)
	}
	return o, rows.Err()
}

// settle moves a pending order to its end state and emits it.
func (s *OrderService) settle(ctx context.Context, tx *outbox.Tx, id, status, event, reason string) error {
	res, err := tx.Exec(ctx, `UPDATE orders SET status = ?, reason = ? WHERE id = ? AND status = ?`, status, reason, id, Pending)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // already settled (or unknown): nothing to do
	}
	if _, err := history(ctx, tx, id, status, event, reason); err != nil {
		return err
	}
	if status == Confirmed {
		return handlers.Emit(ctx, OrderConfirmed{OrderID: id})
	}
	return handlers.Emit(ctx, OrderCancelled{OrderID: id, Reason: reason})
}

// history adds an entry to an order's history and returns its time.
func history(ctx context.Context, tx *outbox.Tx, id, status, event, detail string) (time.Time, error) {
	at := time.Now().UTC()
	_, err := tx.Exec(ctx, `INSERT INTO order_history (order_id, at, status, event, detail) VALUES (?, ?, ?, ?, ?)`,
		id, at, status, event, detail)
	return at, err
}

func createSchema(ctx context.Context, db *outbox.DB, stmts []string) error {
	for _, s := range stmts {
		if _, err := db.SQL().ExecContext(ctx, s); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	}
	return nil
}
