package shop

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
)

// Checkout selects how the checkout commits its effects.
type Checkout uint8

// Checkout modes; the zero value is the saga.
const (
	// CheckoutChoreography is the saga: payment captures, inventory
	// reserves, a failure compensates (refund).
	CheckoutChoreography Checkout = iota + 1
	// CheckoutTwoPC is a two-phase commit that the order service
	// coordinates: payment authorises and inventory holds stock (PREPARE),
	// then both capture and commit, or void and release.
	CheckoutTwoPC
)

// ParseCheckout reads "saga" or "2pc".
func ParseCheckout(s string) (Checkout, error) {
	switch s {
	case "saga", "":
		return CheckoutChoreography, nil
	case "2pc":
		return CheckoutTwoPC, nil
	}
	return 0, fmt.Errorf("shop: unknown checkout %q: want saga or 2pc", s)
}

// The 2PC branches: what each participant prepares.
type paymentBranch struct {
	OrderID       string `json:"order_id"`
	Amount        int    `json:"amount"`
	PaymentMethod string `json:"payment_method"`
}

type inventoryBranch struct {
	OrderID string `json:"order_id"`
	Items   []Item `json:"items"`
}

var twoPCSchema = map[string][]string{
	PaymentSvc: paymentSchema,
	InventorySvc: append(inventorySchema[:len(inventorySchema):len(inventorySchema)],
		`CREATE TABLE IF NOT EXISTS holds (order_id TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL, PRIMARY KEY (order_id, sku))`),
}

// startTwoPC starts service name in 2PC mode: the order service as the
// coordinator, payment and inventory as participants, each on its own
// queue ("twopc.<prefix><service>") and with its own database.
func (s *Stack) startTwoPC(ctx, runCtx context.Context, cfg Config, name string, db *outbox.DB, tr transport.Transport, r *handlers.Router) error {
	b, err := twopc.NewBus(tr, cfg.Exchange, cfg.Logger)
	if err != nil {
		return err
	}
	node := cfg.QueuePrefix + name
	if err := b.Declare(ctx, node); err != nil {
		return err
	}
	opts := []twopc.Option{twopc.WithLogger(cfg.Logger), twopc.WithVoteTimeout(10 * time.Second),
		twopc.WithResendInterval(2 * time.Second), twopc.WithTickInterval(200 * time.Millisecond)}
	var d twopc.Deliverer
	var run func(context.Context) error
	switch name {
	case OrderSvc:
		c, err := s.startCoordinator(ctx, cfg, node, db, b, r, opts)
		if err != nil {
			return err
		}
		d, run = c, c.Run
	case PaymentSvc:
		if err := createSchema(ctx, db, twoPCSchema[name]); err != nil {
			return err
		}
		pay := &PaymentService{db: db, cfg: cfg.Payment}
		s.Payment = pay
		p, err := twopc.NewParticipant(ctx, node, db, twopc.Resource[paymentBranch](paymentResource{pay}), b, opts...)
		if err != nil {
			return err
		}
		d, run = p, p.Run
	case InventorySvc:
		inv, err := NewInventoryStock(ctx, db, cfg.Stock, twoPCSchema[name])
		if err != nil {
			return err
		}
		s.Inventory = inv
		p, err := twopc.NewParticipant(ctx, node, db, twopc.Resource[inventoryBranch](inventoryResource{}), b, opts...)
		if err != nil {
			return err
		}
		d, run = p, p.Run
	default:
		return fmt.Errorf("unknown 2PC service %q", name)
	}
	s.wg.Go(func() {
		if err := run(runCtx); runCtx.Err() == nil {
			s.fail(fmt.Errorf("%s 2PC node stopped: %w", name, err))
		}
	})
	s.wg.Go(func() {
		if err := b.Serve(runCtx, node, d, 4); runCtx.Err() == nil {
			s.fail(fmt.Errorf("%s 2PC queue stopped: %w", name, err))
		}
	})
	return nil
}

// startCoordinator makes the order service the coordinator: order.placed
// begins a transaction whose global id is the order id, and the decision
// settles the order (and emits order.confirmed or order.cancelled) in the
// transaction that logs it.
func (s *Stack) startCoordinator(ctx context.Context, cfg Config, node string, db *outbox.DB, b *twopc.Bus, r *handlers.Router, opts []twopc.Option) (*twopc.Coordinator, error) {
	if err := createSchema(ctx, db, orderSchema); err != nil {
		return nil, err
	}
	o := &OrderService{db: db, em: r.Emitter()}
	s.Order = o
	if err := o.registerNotified(ctx, r); err != nil {
		return nil, err
	}
	settle := func(ctx context.Context, tx *outbox.Tx, gid string, out twopc.Outcome, reason string) error {
		status, event, orderReason := Confirmed, "twopc.commit", ""
		if out == twopc.Abort {
			status, event, orderReason = Cancelled, "twopc.abort", reason
		}
		res, err := tx.Exec(ctx, `UPDATE orders SET status = ?, reason = ? WHERE id = ? AND status = ?`, status, orderReason, gid, Pending)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if _, err := history(ctx, tx, gid, status, event, reason); err != nil {
			return err
		}
		if status == Confirmed {
			return o.em.EmitTx(ctx, tx, OrderConfirmed{OrderID: gid})
		}
		return o.em.EmitTx(ctx, tx, OrderCancelled{OrderID: gid, Reason: reason})
	}
	c, err := twopc.NewCoordinator(ctx, node, db, b, append(opts, twopc.WithDecisionTx(settle))...)
	if err != nil {
		return nil, err
	}
	payment, inventory := cfg.QueuePrefix+PaymentSvc, cfg.QueuePrefix+InventorySvc
	err = handlers.Handle(r, "checkout-2pc", handlers.HandlerFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		pb, err := twopc.NewBranch(payment, paymentBranch{OrderID: e.OrderID, Amount: e.Amount, PaymentMethod: e.PaymentMethod})
		if err != nil {
			return handlers.Permanent(err)
		}
		ib, err := twopc.NewBranch(inventory, inventoryBranch{OrderID: e.OrderID, Items: e.Items})
		if err != nil {
			return handlers.Permanent(err)
		}
		err = c.Begin(ctx, e.OrderID, []twopc.Branch{pb, ib})
		if errors.Is(err, twopc.ErrExists) {
			return nil // a redelivery: the transaction runs already
		}
		return err
	}))
	return c, err
}

// paymentResource authorises on PREPARE, captures on COMMIT and voids on
// ABORT, in the charges table.
type paymentResource struct{ s *PaymentService }

func (p paymentResource) Prepare(ctx context.Context, tx *outbox.Tx, _ string, b paymentBranch) (twopc.Vote, error) {
	switch cfg := p.s.cfg; {
	case cfg.DeclinedMethod != "" && b.PaymentMethod == cfg.DeclinedMethod:
		return twopc.No, errors.New("card declined")
	case cfg.Limit > 0 && b.Amount > cfg.Limit:
		return twopc.No, fmt.Errorf("amount %d over the limit %d", b.Amount, cfg.Limit)
	}
	_, err := tx.Exec(ctx, `INSERT INTO charges (order_id, amount, status) VALUES (?, ?, 'authorised')`, b.OrderID, b.Amount)
	return twopc.Yes, err
}

func (p paymentResource) Commit(ctx context.Context, tx *outbox.Tx, _ string, b paymentBranch) error {
	_, err := tx.Exec(ctx, `UPDATE charges SET status = 'captured' WHERE order_id = ? AND status = 'authorised'`, b.OrderID)
	return err
}

func (p paymentResource) Abort(ctx context.Context, tx *outbox.Tx, _ string, b paymentBranch) error {
	_, err := tx.Exec(ctx, `UPDATE charges SET status = 'voided' WHERE order_id = ? AND status = 'authorised'`, b.OrderID)
	return err
}

// NewInventoryStock creates the inventory's tables (schema) and stocks the
// skus given, once, without registering the saga handler.
func NewInventoryStock(ctx context.Context, db *outbox.DB, stock map[string]int, schema []string) (*InventoryService, error) {
	if err := createSchema(ctx, db, schema); err != nil {
		return nil, err
	}
	for sku, n := range stock {
		if _, err := db.SQL().ExecContext(ctx, db.Rebind(`INSERT INTO stock (sku, available) VALUES (?, ?) ON CONFLICT (sku) DO NOTHING`), sku, n); err != nil {
			return nil, err
		}
	}
	return &InventoryService{db: db}, nil
}

// inventoryResource moves stock into holds on PREPARE, holds into
// reservations on COMMIT, and holds back to stock on ABORT.
type inventoryResource struct{}

func (inventoryResource) Prepare(ctx context.Context, tx *outbox.Tx, _ string, b inventoryBranch) (twopc.Vote, error) {
	for _, it := range b.Items {
		res, err := tx.Exec(ctx, `UPDATE stock SET available = available - ? WHERE sku = ? AND available >= ?`, it.Quantity, it.SKU, it.Quantity)
		if err != nil {
			return twopc.No, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// A NO rolls back the holds taken so far with the transaction.
			return twopc.No, errors.New("out of stock: " + it.SKU)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO holds (order_id, sku, quantity) VALUES (?, ?, ?)`, b.OrderID, it.SKU, it.Quantity); err != nil {
			return twopc.No, err
		}
	}
	return twopc.Yes, nil
}

func (inventoryResource) Commit(ctx context.Context, tx *outbox.Tx, _ string, b inventoryBranch) error {
	if _, err := tx.Exec(ctx, `INSERT INTO reservations (order_id, sku, quantity) SELECT order_id, sku, quantity FROM holds WHERE order_id = ?`, b.OrderID); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM holds WHERE order_id = ?`, b.OrderID)
	return err
}

func (inventoryResource) Abort(ctx context.Context, tx *outbox.Tx, _ string, b inventoryBranch) error {
	if _, err := tx.Exec(ctx, `UPDATE stock SET available = available + (SELECT quantity FROM holds h WHERE h.order_id = ? AND h.sku = stock.sku)
		WHERE sku IN (SELECT sku FROM holds WHERE order_id = ?)`, b.OrderID, b.OrderID); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM holds WHERE order_id = ?`, b.OrderID)
	return err
}
