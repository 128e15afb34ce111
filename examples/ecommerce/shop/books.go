package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/troupehq/troupe/outbox"
)

// Books are the checks that the stack's ledgers agree: money captured
// minus refunded equals the confirmed orders' amounts, and the stock
// reserved equals the confirmed orders' items.
type Books struct {
	Confirmed, Cancelled, Pending int
	Captured, Refunded, Owed      int // cents
	Reserved, Ordered             int // items
}

// Balanced reports whether the books balance.
func (b Books) Balanced() bool { return b.Captured-b.Refunded == b.Owed && b.Reserved == b.Ordered }

func (b Books) String() string {
	return fmt.Sprintf("%d confirmed, %d cancelled, %d pending; captured %d - refunded %d = %d (confirmed orders: %d); reserved %d items (confirmed orders: %d)",
		b.Confirmed, b.Cancelled, b.Pending, b.Captured, b.Refunded, b.Captured-b.Refunded, b.Owed, b.Reserved, b.Ordered)
}

// Books reads the ledgers of the order, payment and inventory databases
// (all three must run in this stack).
func (s *Stack) Books(ctx context.Context) (Books, error) {
	return ReadBooks(ctx, s.dbs[OrderSvc], s.dbs[PaymentSvc], s.dbs[InventorySvc])
}

// ReadBooks reads the ledgers from the order, payment and inventory
// databases, wherever they are (a process that runs none of the services,
// like the load generator, opens them by URL). Safe for concurrent use.
func ReadBooks(ctx context.Context, order, payment, inventory *outbox.DB) (Books, error) {
	var b Books
	if order == nil || payment == nil || inventory == nil {
		return b, errors.New("shop: books need the order, payment and inventory databases")
	}
	rows, err := order.SQL().QueryContext(ctx, `SELECT status, amount, items FROM orders`)
	if err != nil {
		return b, err
	}
	defer rows.Close()
	for rows.Next() {
		var status, items string
		var amount int
		if err := rows.Scan(&status, &amount, &items); err != nil {
			return b, err
		}
		switch status {
		case Confirmed:
			b.Confirmed++
			b.Owed += amount
			var its []Item
			if err := json.Unmarshal([]byte(items), &its); err != nil {
				return b, err
			}
			for _, it := range its {
				b.Ordered += it.Quantity
			}
		case Cancelled:
			b.Cancelled++
		default:
			b.Pending++
		}
	}
	if err := rows.Err(); err != nil {
		return b, err
	}
	pay := payment.SQL()
	if err := pay.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0) FROM charges`).Scan(&b.Captured); err != nil {
		return b, err
	}
	if err := pay.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0) FROM charges WHERE status = 'refunded'`).Scan(&b.Refunded); err != nil {
		return b, err
	}
	err = inventory.SQL().QueryRowContext(ctx, `SELECT COALESCE(SUM(quantity), 0) FROM reservations`).Scan(&b.Reserved)
	return b, err
}
