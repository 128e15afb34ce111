// Package shop is the e-commerce checkout choreography: four services —
// order, payment, inventory, notify — that know nothing of each other and
// meet only through events on the bus.
//
//	POST /orders ─▶ order.placed ─▶ payment ─▶ payment.captured ─▶ inventory ─▶ inventory.reserved ─▶ order ─▶ order.confirmed ─▶ notify
//	                                  │                                 │
//	                                  └▶ payment.failed ─▶ order ─▶ order.cancelled ─▶ notify
//	                                                                    └▶ inventory.failed ─▶ payment (refund) ─▶ payment.refunded ─▶ order ─▶ order.cancelled
//
// Each service has its own database (a SQLite file by default) and handles
// every event in a transaction with its inbox claim and its outbox rows, so
// its effects happen once however often a message is delivered.
package shop

// Item is a line of an order.
type Item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Price    int    `json:"price"` // cents
}

// OrderPlaced starts the checkout.
type OrderPlaced struct {
	OrderID       string `json:"order_id"`
	Customer      string `json:"customer"`
	Items         []Item `json:"items"`
	Amount        int    `json:"amount"`
	PaymentMethod string `json:"payment_method"`
}

// PaymentCaptured: the customer was charged.
type PaymentCaptured struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
	Items   []Item `json:"items"`
}

// PaymentFailed: the charge was declined.
type PaymentFailed struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// PaymentRefunded compensates a capture when the order cannot be filled.
type PaymentRefunded struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
	Reason  string `json:"reason"`
}

// InventoryReserved: every item is set aside for the order.
type InventoryReserved struct {
	OrderID string `json:"order_id"`
}

// InventoryFailed: an item is out of stock.
type InventoryFailed struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// OrderConfirmed ends a successful checkout.
type OrderConfirmed struct {
	OrderID string `json:"order_id"`
}

// OrderCancelled ends a failed checkout.
type OrderCancelled struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// NotificationSent: the customer was told.
type NotificationSent struct {
	OrderID string `json:"order_id"`
	Kind    string `json:"kind"`
}

// Event names: the routing keys.
func (OrderPlaced) EventName() string       { return "order.placed" }
func (PaymentCaptured) EventName() string   { return "payment.captured" }
func (PaymentFailed) EventName() string     { return "payment.failed" }
func (PaymentRefunded) EventName() string   { return "payment.refunded" }
func (InventoryReserved) EventName() string { return "inventory.reserved" }
func (InventoryFailed) EventName() string   { return "inventory.failed" }
func (OrderConfirmed) EventName() string    { return "order.confirmed" }
func (OrderCancelled) EventName() string    { return "order.cancelled" }
func (NotificationSent) EventName() string  { return "notification.sent" }
