// Package load is the e-commerce example's load generator: it places
// orders through the order API (POST /orders with an Idempotency-Key), a
// mix of happy, declined and sold-out (refunded) checkouts, and follows
// each to the moment its customer is told, with one long-poll
// (GET /orders/{id}?wait=notified) instead of a polling storm. It reports
// progress about once a second and a final tally: confirmed, cancelled,
// stuck, orders/s, and the placement-to-notification latency
// percentiles. The books (money and stock against the confirmed orders)
// are read from the services' databases by URL (OpenLedgers), so the check
// is the same for the all-in-one binary and for separate processes.
//
// See docs/ecommerce-load.md.
package load
