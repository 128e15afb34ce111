package shop

import (
	"context"
	"fmt"
	"strings"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

// consumer is one handler of a service of the checkout and its event.
type consumer struct{ service, handler, event string }

// checkoutConsumers is what each service of the choreographed checkout
// consumes, as the services' constructors register it
// (TestTopologyIsTheRouters checks that the two agree).
var checkoutConsumers = []consumer{
	{OrderSvc, "on-reserved", InventoryReserved{}.EventName()},
	{OrderSvc, "on-payment-failed", PaymentFailed{}.EventName()},
	{OrderSvc, "on-refunded", PaymentRefunded{}.EventName()},
	{OrderSvc, "on-notified", NotificationSent{}.EventName()},
	{PaymentSvc, "charge", OrderPlaced{}.EventName()},
	{PaymentSvc, "refund", InventoryFailed{}.EventName()},
	{PaymentSvc, "on-timeout", saga.TimedOutEvent},
	{InventorySvc, "reserve", PaymentCaptured{}.EventName()},
	{NotifySvc, "confirmed", OrderConfirmed{}.EventName()},
	{NotifySvc, "cancelled", OrderCancelled{}.EventName()},
}

// Topology is the bus topology of the whole choreographed checkout under
// cfg: every service's work queues and the saga tracker's queue, bound to
// the events they consume. Start declares it when the services run in
// separate processes, so that they can start in any order: RabbitMQ drops
// an event published before a queue is bound for it, and an order placed
// while the payment service has never run would otherwise be lost.
func Topology(cfg Config) bus.Topology {
	retry := handlers.DefaultRetryPolicy()
	if cfg.Retry != nil {
		retry = *cfg.Retry
	}
	t := bus.Topology{Exchange: cfg.Exchange}
	for _, c := range checkoutConsumers {
		t.Queues = append(t.Queues, bus.Queue{Name: bus.WorkQueue(cfg.QueuePrefix+c.service, c.handler),
			Events: []string{c.event}, RetryDelays: retry.Delays})
	}
	t.Queues = append(t.Queues, bus.Queue{
		Name:   bus.WorkQueue(cfg.QueuePrefix+TrackerSvc, CheckoutSaga.Name),
		Events: append(CheckoutSaga.Events(), handlers.DeadLetteredEvent),
	})
	return t
}

// declareTopology declares Topology(cfg) on an AMQP bus. The bundled
// broker (mem://) lives in one process, whose services all start before
// it takes an order; a harness's transports (cfg.Transport) are left alone.
func declareTopology(ctx context.Context, cfg Config) error {
	if cfg.Checkout == CheckoutTwoPC || cfg.Transport != nil || !strings.HasPrefix(cfg.BusURL, "amqp") {
		return nil
	}
	tr, err := transport.Open(cfg.BusURL, transport.WithLogger(cfg.Logger))
	if err != nil {
		return fmt.Errorf("declare the checkout's topology: %w", err)
	}
	defer tr.Close()
	if err := tr.Declare(ctx, Topology(cfg)); err != nil {
		return fmt.Errorf("declare the checkout's topology: %w", err)
	}
	return nil
}
