// Package bus is Troupe's bus model, shared by the transports so that a
// service moves from the bundled broker to RabbitMQ by URL alone: the broker
// topology (one durable topic exchange per bus, one durable work queue per
// (service, handler) bound to the event names it takes, per-delay retry
// queues whose TTL dead-letters messages back to the work queue, a
// dead-letter queue per work queue), declared through a [Declarer] and
// idempotent; and the configuration and errors of publishers and
// subscribers.
package bus

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultExchange is the bus exchange when none is configured.
const DefaultExchange = "troupe.events"

// Suffixes of a work queue's satellites.
const (
	retrySuffix      = ".retry."
	deadLetterSuffix = ".dlq"
)

// Queue is a work queue and the events it is bound to.
type Queue struct {
	// Name is "<service>.<handler>" by convention ([WorkQueue]).
	Name string
	// Events are the routing keys (event names) bound to the queue. Topic
	// patterns ("order.*") are allowed.
	Events []string
	// RetryDelays each get a retry queue that holds a message for the delay
	// and then dead-letters it back to this queue.
	RetryDelays []time.Duration
}

// WorkQueue names the queue of a service's handler.
func WorkQueue(service, handler string) string { return service + "." + handler }

// RetryQueue names the retry queue of a work queue for a delay, e.g.
// "payment.charge.retry.10s".
func RetryQueue(queue string, delay time.Duration) string {
	return queue + retrySuffix + delayName(delay)
}

func delayName(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// DeadLetterQueue names the dead-letter queue of a work queue.
func DeadLetterQueue(queue string) string { return queue + deadLetterSuffix }

// Topology is a bus exchange and its queues.
type Topology struct {
	// Exchange is the bus; DefaultExchange when empty.
	Exchange string
	Queues   []Queue
}

func (t Topology) exchange() string {
	if t.Exchange == "" {
		return DefaultExchange
	}
	return t.Exchange
}

// Validate reports every problem of the topology at once.
func (t Topology) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, q := range t.Queues {
		switch {
		case q.Name == "":
			errs = append(errs, errors.New("topology: queue with no name"))
		case strings.HasPrefix(q.Name, "amq."):
			errs = append(errs, fmt.Errorf("topology: queue %q: the amq. prefix is reserved", q.Name))
		case seen[q.Name]:
			errs = append(errs, fmt.Errorf("topology: queue %q declared twice", q.Name))
		}
		seen[q.Name] = true
		if len(q.Events) == 0 {
			errs = append(errs, fmt.Errorf("topology: queue %q is bound to no event", q.Name))
		}
		for _, d := range q.RetryDelays {
			if d < time.Millisecond || d%time.Millisecond != 0 {
				errs = append(errs, fmt.Errorf("topology: queue %q: retry delay %v is not a whole number of milliseconds >= 1ms", q.Name, d))
			}
		}
	}
	return errors.Join(errs...)
}

// ExchangeDecl declares an exchange.
type ExchangeDecl struct {
	Name    string
	Kind    string // "topic", "direct", "fanout", "headers"
	Durable bool
}

// QueueDecl declares a queue.
type QueueDecl struct {
	Name    string
	Durable bool
	Args    map[string]any
}

// BindingDecl binds a queue to an exchange.
type BindingDecl struct {
	Queue, Exchange, Key string
}

// Declarer is what a transport offers to declare a topology. Each method is
// idempotent on both brokers.
type Declarer interface {
	DeclareExchange(ExchangeDecl) error
	DeclareQueue(QueueDecl) error
	Bind(BindingDecl) error
}

// Declare declares the whole topology with d, after validating it. A
// topology with no queue declares nothing, not even its exchange.
func (t Topology) Declare(d Declarer) error {
	if len(t.Queues) == 0 {
		return nil
	}
	if err := t.Validate(); err != nil {
		return err
	}
	if err := d.DeclareExchange(t.ExchangeDecl()); err != nil {
		return fmt.Errorf("declare exchange %s: %w", t.exchange(), err)
	}
	for _, q := range t.Queues {
		if err := t.declareQueue(d, q); err != nil {
			return err
		}
	}
	return nil
}

// ExchangeDecl is the bus exchange's declaration.
func (t Topology) ExchangeDecl() ExchangeDecl {
	return ExchangeDecl{Name: t.exchange(), Kind: "topic", Durable: true}
}

// QueueDecls are the declarations of a work queue and its satellites, the
// work queue first.
func QueueDecls(q Queue) []QueueDecl {
	decls := []QueueDecl{
		{Name: q.Name, Durable: true, Args: map[string]any{
			// A message the broker dead-letters (a reject) is kept, not lost.
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": DeadLetterQueue(q.Name),
		}},
		{Name: DeadLetterQueue(q.Name), Durable: true},
	}
	delays := slices.Clone(q.RetryDelays)
	slices.Sort(delays)
	for _, d := range slices.Compact(delays) {
		decls = append(decls, QueueDecl{Name: RetryQueue(q.Name, d), Durable: true, Args: map[string]any{
			"x-message-ttl":             d.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": q.Name,
		}})
	}
	return decls
}

func (t Topology) declareQueue(d Declarer, q Queue) error {
	for _, decl := range QueueDecls(q) {
		if err := d.DeclareQueue(decl); err != nil {
			return fmt.Errorf("declare queue %s: %w", decl.Name, err)
		}
	}
	for _, ev := range q.Events {
		if err := d.Bind(BindingDecl{Queue: q.Name, Exchange: t.exchange(), Key: ev}); err != nil {
			return fmt.Errorf("bind queue %s to %s: %w", q.Name, ev, err)
		}
	}
	return nil
}
