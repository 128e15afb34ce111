package shop

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
)

// The order service consumes notification.sent, so that an order knows
// when its customer was told: the end of the checkout as the customer sees
// it. GET /orders/{id}?wait=notified long-polls for that moment.

var notifiedSchema = []string{
	`CREATE TABLE IF NOT EXISTS order_notified (order_id TEXT PRIMARY KEY, kind TEXT NOT NULL, at TIMESTAMP NOT NULL)`,
}

// MaxWait bounds the timeout of a long-poll.
const MaxWait = time.Minute

// waiters wakes the long-polls of an order when its notification is
// recorded. Safe for concurrent use.
type waiters struct {
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

// add registers a waiter for id; the returned func unregisters it.
func (w *waiters) add(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]map[chan struct{}]struct{}{}
	}
	if w.m[id] == nil {
		w.m[id] = map[chan struct{}]struct{}{}
	}
	w.m[id][ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.m[id], ch)
		if len(w.m[id]) == 0 {
			delete(w.m, id)
		}
	}
}

func (w *waiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.m[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *OrderService) registerNotified(ctx context.Context, r *handlers.Router) error {
	if err := createSchema(ctx, s.db, notifiedSchema); err != nil {
		return err
	}
	return handlers.HandleTx(r, "on-notified", handlers.TxHandlerFunc[NotificationSent](s.onNotified))
}

// onNotified records when the customer was told, once per order.
func (s *OrderService) onNotified(ctx context.Context, tx *outbox.Tx, e NotificationSent) error {
	// One statement records the notice and reads the order's status: no
	// row when the order was told already, a NULL status when there is no
	// such order (its error rolls the notice back).
	at := time.Now().UTC()
	var st sql.NullString
	err := tx.QueryRow(ctx, `INSERT INTO order_notified (order_id, kind, at) VALUES (?, ?, ?)
		ON CONFLICT (order_id) DO NOTHING RETURNING (SELECT status FROM orders WHERE id = order_notified.order_id)`,
		e.OrderID, e.Kind, at).Scan(&st)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	case !st.Valid:
		return handlers.Permanent(fmt.Errorf("notification for unknown order %s", e.OrderID))
	}
	status := st.String
	if _, err := history(ctx, tx, e.OrderID, status, e.EventName(), e.Kind); err != nil {
		return err
	}
	tx.AfterCommit(func() {
		s.waiting.wake(e.OrderID)
		s.notices.publish(Notice{OrderID: e.OrderID, Status: status, NotifiedAt: at})
	})
	return nil
}

// notified reports whether the order's customer was told; ErrNoOrder
// for an unknown order.
func (s *OrderService) notified(ctx context.Context, id string) (bool, error) {
	var at sql.NullTime
	err := s.db.QueryRow(ctx, `SELECT n.at FROM orders o LEFT JOIN order_notified n ON n.order_id = o.id WHERE o.id = ?`, id).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return false, ErrNoOrder
	}
	return at.Valid, err
}

// WaitNotified returns the order once its customer was told (NotifiedAt
// set), or as it is when ctx ends first (NotifiedAt nil, no error). It
// blocks without polling the database: the notification's commit wakes it.
// Safe for concurrent use.
func (s *OrderService) WaitNotified(ctx context.Context, id string) (Order, error) {
	wake, done := s.waiting.add(id) // before reading, so no wake-up is missed
	defer done()
	for {
		notified, err := s.notified(ctx, id)
		if err != nil && ctx.Err() == nil {
			return Order{}, err
		}
		if notified {
			return s.Get(ctx, id)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			// The long-poll's time is up: the order as it is.
			return s.Get(context.WithoutCancel(ctx), id)
		}
	}
}
