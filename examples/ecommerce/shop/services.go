package shop

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
)

// PaymentConfig is the simulated gateway's behaviour.
type PaymentConfig struct {
	// DeclinedMethod is a payment method the gateway always declines
	// (a test card).
	DeclinedMethod string
	// Limit declines amounts above it; 0: no limit.
	Limit int
	// TransientFailureRate is the share of charges that fail with a
	// timeout first (retried by the framework), 0..1.
	TransientFailureRate float64
	// Seed makes the transient failures reproducible.
	Seed uint64
}

// PaymentService charges orders and refunds them.
type PaymentService struct {
	db  *outbox.DB
	cfg PaymentConfig

	mu          sync.Mutex
	rng         *rand.Rand
	timeouts    atomic.Int64
	refundsDown atomic.Bool
}

// BreakRefunds makes the gateway refuse refunds with a permanent error
// (ErrRefundsDown), so that a refund goes to its dead-letter queue: a
// compensation that fails. RepairRefunds undoes it. Safe for concurrent
// use.
func (s *PaymentService) BreakRefunds() { s.refundsDown.Store(true) }

// RepairRefunds lets refunds through again.
func (s *PaymentService) RepairRefunds() { s.refundsDown.Store(false) }

// ErrRefundsDown is the refund failure of a broken gateway (BreakRefunds).
var ErrRefundsDown = errors.New("refund gateway down")

// Timeouts counts the simulated gateway's transient failures.
func (s *PaymentService) Timeouts() int64 { return s.timeouts.Load() }

var paymentSchema = []string{
	`CREATE TABLE IF NOT EXISTS charges (order_id TEXT PRIMARY KEY, amount INTEGER NOT NULL, status TEXT NOT NULL)`,
}

// ErrGatewayTimeout is the simulated gateway's transient failure.
var ErrGatewayTimeout = errors.New("payment gateway timeout")

// TimeoutEvent names the span event recorded for each simulated timeout.
const TimeoutEvent = "payment gateway timeout"

// NewPaymentService creates the tables and registers the handlers.
func NewPaymentService(ctx context.Context, db *outbox.DB, r *handlers.Router, cfg PaymentConfig) (*PaymentService, error) {
	if err := createSchema(ctx, db, paymentSchema); err != nil {
		return nil, err
	}
	s := &PaymentService{db: db, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	return s, errors.Join(
		handlers.HandleTx(r, "charge", handlers.TxHandlerFunc[OrderPlaced](s.charge)),
		handlers.HandleTx(r, "refund", handlers.TxHandlerFunc[InventoryFailed](s.refund)),
		handlers.HandleTx(r, "on-timeout", handlers.TxHandlerFunc[saga.Timeout](s.timedOut)),
	)
}

func (s *PaymentService) transientFailure() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < s.cfg.TransientFailureRate
}

// charge captures an order's amount, at most once per order: the inbox
// skips redelivered duplicates, and the charges table's key refuses a
// second capture whatever happens.
func (s *PaymentService) charge(ctx context.Context, tx *outbox.Tx, e OrderPlaced) error {
	switch {
	case s.cfg.DeclinedMethod != "" && e.PaymentMethod == s.cfg.DeclinedMethod:
		return handlers.Emit(ctx, PaymentFailed{OrderID: e.OrderID, Reason: "card declined"})
	case s.cfg.Limit > 0 && e.Amount > s.cfg.Limit:
		return handlers.Emit(ctx, PaymentFailed{OrderID: e.OrderID, Reason: fmt.Sprintf("amount %d over the limit %d", e.Amount, s.cfg.Limit)})
	case s.transientFailure():
		s.timeouts.Add(1)
		// An event on the process span: in a trace, each timed-out try
		// shows on the delivery it delayed.
		trace.SpanFromContext(ctx).AddEvent(TimeoutEvent, trace.WithAttributes(attribute.String("order_id", e.OrderID)))
		return ErrGatewayTimeout
	}
	res, err := tx.Exec(ctx, `INSERT INTO charges (order_id, amount, status) VALUES (?, ?, 'captured') ON CONFLICT (order_id) DO NOTHING`,
		e.OrderID, e.Amount)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // n == 0: abandoned at a timeout (payment.failed was emitted then), or charged already
	}
	return handlers.Emit(ctx, PaymentCaptured{OrderID: e.OrderID, Amount: e.Amount, Items: e.Items})
}

// refund compensates a capture when the order could not be filled.
func (s *PaymentService) refund(ctx context.Context, tx *outbox.Tx, e InventoryFailed) error {
	if s.refundsDown.Load() {
		return handlers.Permanent(fmt.Errorf("refund %s: %w", e.OrderID, ErrRefundsDown))
	}
	return s.refundCharge(ctx, tx, e.OrderID, e.Reason)
}

// refundCharge refunds an order's capture; a capture refunded already
// (at a timeout) is left as it is.
func (s *PaymentService) refundCharge(ctx context.Context, tx *outbox.Tx, orderID, reason string) error {
	var amount int
	var status string
	if err := tx.QueryRow(ctx, `SELECT amount, status FROM charges WHERE order_id = ?`, orderID).Scan(&amount, &status); err != nil {
		return handlers.Permanent(fmt.Errorf("refund %s: no captured charge: %w", orderID, err))
	}
	if status == "refunded" {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE charges SET status = 'refunded' WHERE order_id = ?`, orderID); err != nil {
		return err
	}
	return handlers.Emit(ctx, PaymentRefunded{OrderID: orderID, Amount: amount, Reason: reason})
}

// timedOut undoes the charge of a checkout that missed its deadline
// (saga.timed_out from the saga tracker; the checkout's saga id is the
// order id): a captured charge is refunded; a charge not made yet is
// abandoned, so that a late order.placed charges nothing, and
// payment.failed cancels the order. Either way the order service cancels
// the order, as on any refund or failed payment.
func (s *PaymentService) timedOut(ctx context.Context, tx *outbox.Tx, e saga.Timeout) error {
	const reason = "checkout timed out"
	var status string
	err := tx.QueryRow(ctx, `SELECT status FROM charges WHERE order_id = ?`, e.ID).Scan(&status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO charges (order_id, amount, status) VALUES (?, 0, 'abandoned')`, e.ID); err != nil {
			return err
		}
		return handlers.Emit(ctx, PaymentFailed{OrderID: e.ID, Reason: reason})
	case err != nil:
		return err
	case status == "captured":
		return s.refundCharge(ctx, tx, e.ID, reason)
	}
	return nil // refunded or abandoned already
}

// InventoryService reserves stock.
type InventoryService struct{ db *outbox.DB }

var inventorySchema = []string{
	`CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0))`,
	`CREATE TABLE IF NOT EXISTS reservations (order_id TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
		PRIMARY KEY (order_id, sku))`,
}

// NewInventoryService creates the tables, stocks the skus given (once:
// existing stock is kept) and registers the handler.
func NewInventoryService(ctx context.Context, db *outbox.DB, r *handlers.Router, stock map[string]int) (*InventoryService, error) {
	s, err := NewInventoryStock(ctx, db, stock, inventorySchema)
	if err != nil {
		return nil, err
	}
	return s, handlers.HandleTx(r, "reserve", handlers.TxHandlerFunc[PaymentCaptured](s.reserve))
}

// reserve sets every item aside or none: stock never goes negative (the
// update is conditional, and the table checks it) and an order is never
// reserved twice (the reservations key, and the inbox).
func (s *InventoryService) reserve(ctx context.Context, tx *outbox.Tx, e PaymentCaptured) error {
	for _, it := range e.Items {
		res, err := tx.Exec(ctx, `UPDATE stock SET available = available - ? WHERE sku = ? AND available >= ?`, it.Quantity, it.SKU, it.Quantity)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Out of stock is a business failure: the transaction commits
			// the failure event, so the items taken so far go back first.
			if err := s.release(ctx, tx, e.OrderID); err != nil {
				return err
			}
			return handlers.Emit(ctx, InventoryFailed{OrderID: e.OrderID, Reason: "out of stock: " + it.SKU})
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reservations (order_id, sku, quantity) VALUES (?, ?, ?)`, e.OrderID, it.SKU, it.Quantity); err != nil {
			return err
		}
	}
	return handlers.Emit(ctx, InventoryReserved{OrderID: e.OrderID})
}

// release returns an order's reservations made so far to stock.
func (s *InventoryService) release(ctx context.Context, tx *outbox.Tx, orderID string) error {
	if _, err := tx.Exec(ctx, `UPDATE stock SET available = available + (SELECT quantity FROM reservations r WHERE r.order_id = ? AND r.sku = stock.sku)
		WHERE sku IN (SELECT sku FROM reservations WHERE order_id = ?)`, orderID, orderID); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM reservations WHERE order_id = ?`, orderID)
	return err
}

// NotifyService tells customers how their order ended.
type NotifyService struct {
	db  *outbox.DB
	out func(ctx context.Context, orderID, kind string)
}

var notifySchema = []string{
	`CREATE TABLE IF NOT EXISTS notifications (order_id TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (order_id, kind))`,
}

// NewNotifyService creates the table and registers the handlers; out is
// the log sink (ctx is the handler's: its trace and saga), called in the
// notification's transaction (a run that then
// fails and is retried logs again: the log is at-least-once, the
// notifications table exactly-once).
func NewNotifyService(ctx context.Context, db *outbox.DB, r *handlers.Router, out func(ctx context.Context, orderID, kind string)) (*NotifyService, error) {
	if err := createSchema(ctx, db, notifySchema); err != nil {
		return nil, err
	}
	s := &NotifyService{db: db, out: out}
	return s, errors.Join(
		handlers.HandleTx(r, "confirmed", handlers.TxHandlerFunc[OrderConfirmed](func(ctx context.Context, tx *outbox.Tx, e OrderConfirmed) error {
			return s.send(ctx, tx, e.OrderID, "confirmed")
		})),
		handlers.HandleTx(r, "cancelled", handlers.TxHandlerFunc[OrderCancelled](func(ctx context.Context, tx *outbox.Tx, e OrderCancelled) error {
			return s.send(ctx, tx, e.OrderID, "cancelled")
		})),
	)
}

func (s *NotifyService) send(ctx context.Context, tx *outbox.Tx, orderID, kind string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO notifications (order_id, kind) VALUES (?, ?)`, orderID, kind); err != nil {
		return err
	}
	if s.out != nil {
		s.out(ctx, orderID, kind)
	}
	return handlers.Emit(ctx, NotificationSent{OrderID: orderID, Kind: kind})
}
