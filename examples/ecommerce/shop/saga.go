package shop

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/saga"
)

// CheckoutSaga declares the checkout choreography, as the services' handlers
// implement it:
//
//   - place (order service, from POST /orders) emits order.placed; it is
//     undone by cancelling the order (order.cancelled) when the charge is
//     declined (payment.failed) or refunded (payment.refunded);
//   - charge (payment) turns order.placed into payment.captured or
//     payment.failed; it is undone by a refund (payment.refunded) when the
//     stock cannot be reserved (inventory.failed);
//   - reserve (inventory) turns payment.captured into inventory.reserved or
//     inventory.failed; it is the pivot: nothing after it fails, and a
//     failed reservation returns its partial holds in its own transaction;
//   - confirm (order) turns inventory.reserved into order.confirmed;
//   - notify listens to both endings and emits notification.sent, which
//     the order service records (the customer was told).
//
// A checkout must end within CheckoutDeadline of order.placed: the saga
// tracker (Start runs it with all the services) emits saga.timed_out for
// one that does not, and the payment service undoes the charge on it
// (refunds a capture, or abandons the charge and emits payment.failed),
// after which the order is cancelled as on any refund or decline.
//
// The saga completes with order.confirmed and is compensated with
// order.cancelled. Start checks it against the routers when it runs every
// service; the JSON form is ../checkout.saga.json (written by the tests
// with -rewrite). Do not modify it.
var CheckoutSaga = saga.Saga{
	Name:     "checkout",
	Start:    OrderPlaced{}.EventName(),
	Deadline: CheckoutDeadline,
	Steps: []saga.Step{{
		Name:    "place",
		Service: OrderSvc,
		Success: OrderPlaced{}.EventName(),
		Compensation: &saga.Compensation{
			On:   []string{PaymentFailed{}.EventName(), PaymentRefunded{}.EventName()},
			Done: OrderCancelled{}.EventName(),
		},
	}, {
		Name:    "charge",
		Service: PaymentSvc,
		Trigger: OrderPlaced{}.EventName(),
		Success: PaymentCaptured{}.EventName(),
		Failure: PaymentFailed{}.EventName(),
		Compensation: &saga.Compensation{
			On:   []string{InventoryFailed{}.EventName(), saga.Timeout{}.EventName()},
			Done: PaymentRefunded{}.EventName(),
		},
	}, {
		Name:           "reserve",
		Service:        InventorySvc,
		Trigger:        PaymentCaptured{}.EventName(),
		Success:        InventoryReserved{}.EventName(),
		Failure:        InventoryFailed{}.EventName(),
		NoCompensation: "pivot: once the stock is reserved nothing later fails, and a failed reservation releases its partial holds in its own transaction",
	}, {
		Name:           "confirm",
		Service:        OrderSvc,
		Trigger:        InventoryReserved{}.EventName(),
		Success:        OrderConfirmed{}.EventName(),
		NoCompensation: "last step",
	}},
	Listeners: []saga.Listener{{
		Name:    "notify",
		Service: NotifySvc,
		On:      []string{OrderConfirmed{}.EventName(), OrderCancelled{}.EventName()},
		Emits:   []string{NotificationSent{}.EventName()},
	}, {
		Name:    "record-notified",
		Service: OrderSvc,
		On:      []string{NotificationSent{}.EventName()},
	}},
	Completed:   []string{OrderConfirmed{}.EventName()},
	Compensated: []string{OrderCancelled{}.EventName()},
}

// CheckoutDeadline bounds a checkout from order.placed to its end.
const CheckoutDeadline = 2 * time.Minute

// Registry returns what the routers of this stack consume, for
// saga.Check or for a registry file (saga.WriteRegistry). Safe for
// concurrent use.
func (s *Stack) Registry() (saga.Registry, error) {
	reg, err := saga.RegistryOf(s.routers...)
	if err != nil {
		return reg, err
	}
	// With a queue prefix the routers run as "<prefix><service>"; the
	// declaration names the services.
	for i := range reg.Services {
		reg.Services[i].Service = strings.TrimPrefix(reg.Services[i].Service, s.queuePrefix)
	}
	return reg, nil
}

// WriteRegistryFile writes Registry to path as JSON (saga.ReadRegistryFiles
// reads it back): a process that runs some of the services exports what
// its handlers consume, so that `troupe saga check` can check the
// declaration against every process's file.
func (s *Stack) WriteRegistryFile(path string) error {
	reg, err := s.Registry()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(reg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("shop: registry file: %w", err)
	}
	return nil
}

// Routers returns the routers of this stack's services, e.g. for
// saga.WriteRegistry. Safe for concurrent use; the slice is a copy.
func (s *Stack) Routers() []*handlers.Router { return slices.Clone(s.routers) }

// checkSaga checks CheckoutSaga against the routers, when this process
// runs every service of it; a process running some of them cannot see the
// others' handlers (check with their registry files instead).
func (s *Stack) checkSaga(services []string) error {
	if !runsAll(services) {
		return nil
	}
	reg, err := s.Registry()
	if err != nil {
		return err
	}
	if err := saga.Check(&CheckoutSaga, reg); err != nil {
		return fmt.Errorf("checkout saga: %w", err)
	}
	return nil
}
