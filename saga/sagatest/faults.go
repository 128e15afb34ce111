package sagatest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Delivery is one message handed to one consumer of one queue.
type Delivery struct {
	Queue     string // the consumer's queue, e.g. "payment.charge"
	Event     string // troupe-event, e.g. "payment.captured"
	SagaID    string // troupe-saga-id
	MessageID string
	Message   *message.Message // the broker's message; read it, do not settle it
}

// Match selects deliveries; every field set must match, and a zero Match
// matches everything.
type Match struct {
	Event  string
	Queue  string
	SagaID string
	// Where, when set, must also return true.
	Where func(Delivery) bool
}

func (m Match) matches(d Delivery) bool {
	return (m.Event == "" || m.Event == d.Event) && (m.Queue == "" || m.Queue == d.Queue) &&
		(m.SagaID == "" || m.SagaID == d.SagaID) && (m.Where == nil || m.Where(d))
}

func (m Match) String() string {
	var parts []string
	for _, p := range [][2]string{{"event", m.Event}, {"queue", m.Queue}, {"saga", m.SagaID}} {
		if p[1] != "" {
			parts = append(parts, p[0]+"="+p[1])
		}
	}
	if m.Where != nil {
		parts = append(parts, "where=func")
	}
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, " ")
}

// Fault is a kind of injected fault.
type Fault uint8

// Faults the harness injects into deliveries.
const (
	// Duplicated: the consumer got the message twice (the same message
	// id), the second time after it acked the first.
	Duplicated Fault = iota + 1
	// Dropped: the delivery was lost before the consumer saw it; the
	// broker redelivers the message (a nack with requeue).
	Dropped
	// Delayed: the delivery waited until the virtual clock had moved on.
	Delayed
	// Reordered: the delivery waited until another one had been acked.
	Reordered
	// Crashed: the consumer handled the message (a transactional handler
	// committed) and "crashed" before its ack reached the broker, which
	// redelivers it.
	Crashed
)

func (f Fault) String() string {
	switch f {
	case Duplicated:
		return "duplicated"
	case Dropped:
		return "dropped"
	case Delayed:
		return "delayed"
	case Reordered:
		return "reordered"
	case Crashed:
		return "crashed after commit"
	}
	return fmt.Sprintf("Fault(%d)", uint8(f))
}

// Injection records one fault injected into one delivery.
type Injection struct {
	Fault    Fault
	Delivery Delivery
}

func (i Injection) String() string {
	return fmt.Sprintf("%s: %s on %s (saga %s, message %s)", i.Fault, i.Delivery.Event, i.Delivery.Queue, i.Delivery.SagaID, i.Delivery.MessageID)
}

// rule is one injected fault waiting for deliveries to match.
type rule struct {
	fault Fault
	match Match
	left  int           // deliveries still to hit
	delay time.Duration // Delayed
	then  Match         // Reordered: release after a delivery matching then
}

// faults is the shared state of a harness's fault injection. Safe for
// concurrent use.
type faults struct {
	clock *Clock

	mu       sync.Mutex
	arrived  []Delivery // every delivery, before its fault
	rules    []*rule
	injected []Injection
	acked    []Delivery        // every delivery acked, for Reordered
	changed  chan struct{}     // closed and replaced at every ack
	held     map[string]string // message id -> why, while held
}

func newFaults(clock *Clock) *faults {
	return &faults{clock: clock, changed: make(chan struct{}), held: map[string]string{}}
}

func (f *faults) add(r *rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, r)
}

// take returns the first rule matching d that has deliveries left, and
// spends one; nil when none. A Reordered rule whose release already
// happened is spent, and counted as injected, without holding anything:
// the delivery comes after its release as asked.
func (f *faults) take(d Delivery) *rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := d
	a.Message = nil
	f.arrived = append(f.arrived, a)
	for _, r := range f.rules {
		if r.left <= 0 || !r.match.matches(d) {
			continue
		}
		r.left--
		f.injected = append(f.injected, Injection{Fault: r.fault, Delivery: d})
		if r.fault == Reordered && f.ackedLocked(r.then) {
			// Already after its release: reordered without a hold.
			return nil
		}
		return r
	}
	return nil
}

// ackedLocked reports whether a delivery matching m was acked. Lock
// should be held.
func (f *faults) ackedLocked(m Match) bool {
	for _, d := range f.acked {
		if m.matches(d) {
			return true
		}
	}
	return false
}

// ack records that d was acked.
func (f *faults) ack(d Delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.Message = nil
	f.acked = append(f.acked, d)
	close(f.changed)
	f.changed = make(chan struct{})
}

// wait blocks until r may deliver its held message, or stop is closed
// (false).
func (f *faults) wait(r *rule, stop <-chan struct{}) bool {
	if r.fault == Delayed {
		select {
		case <-f.clock.At(f.clock.Now().Add(r.delay)):
			return true
		case <-stop:
			return false
		}
	}
	for {
		f.mu.Lock()
		ok, changed := f.ackedLocked(r.then), f.changed
		f.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			return false
		}
	}
}

func (f *faults) hold(d Delivery, why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[d.MessageID+" "+d.Queue] = fmt.Sprintf("%s on %s held: %s", d.Event, d.Queue, why)
}

func (f *faults) unhold(d Delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, d.MessageID+" "+d.Queue)
}

// heldNow describes the deliveries held at the moment.
func (f *faults) heldNow() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, why := range f.held {
		out = append(out, why)
	}
	return out
}

// deliveries returns the deliveries that arrived matching m.
func (f *faults) deliveries(m Match) []Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Delivery
	for _, d := range f.arrived {
		if m.matches(d) {
			out = append(out, d)
		}
	}
	return out
}

// Injections returns every fault injected so far, in order.
func (f *faults) injections() []Injection {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Injection(nil), f.injected...)
}

// faultTransport wraps a transport so that its subscribers inject the
// harness's faults into their deliveries. Publishers are the transport's.
// Safe for concurrent use.
type faultTransport struct {
	transport.Transport
	f *faults

	mu   sync.Mutex
	subs []*subscriber
}

var _ transport.Transport = (*faultTransport)(nil)

// NewSubscriber wraps the transport's subscriber.
func (t *faultTransport) NewSubscriber(cfg bus.SubscriberConfig) (message.Subscriber, error) {
	inner, err := t.Transport.NewSubscriber(cfg)
	if err != nil {
		return nil, err
	}
	cfg, err = cfg.WithDefaults()
	if err != nil {
		return nil, errors.Join(err, inner.Close())
	}
	sub := &subscriber{inner: inner, cfg: cfg, f: t.f}
	sub.closeCtx, sub.close = context.WithCancel(context.Background())
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs = append(t.subs, sub)
	return sub, nil
}

// Close closes the subscribers made from t (waiting for their
// goroutines), then the wrapped transport.
func (t *faultTransport) Close() error {
	t.mu.Lock()
	subs := t.subs
	t.subs = nil
	t.mu.Unlock()
	var errs []error
	for _, s := range subs {
		errs = append(errs, s.Close())
	}
	return errors.Join(append(errs, t.Transport.Close())...)
}

// subscriber hands each message of the wrapped subscriber on as a copy,
// and settles the original with the broker according to the faults. Safe
// for concurrent use.
type subscriber struct {
	inner message.Subscriber
	cfg   bus.SubscriberConfig
	f     *faults

	// closeCtx ends when Close is called.
	closeCtx context.Context
	close    context.CancelFunc

	mu     sync.Mutex // guards closed and the wg.Go of Subscribe against Close's Wait
	closed bool
	wg     sync.WaitGroup
}

var (
	_ message.Subscriber           = (*subscriber)(nil)
	_ message.SubscribeInitializer = (*subscriber)(nil)
)

// SubscribeInitialize declares the topic's queue through the wrapped
// subscriber, when it can.
func (s *subscriber) SubscribeInitialize(topic string) error {
	si, ok := s.inner.(message.SubscribeInitializer)
	if !ok {
		return fmt.Errorf("sagatest: %T cannot initialize %s", s.inner, topic)
	}
	return si.SubscribeInitialize(topic)
}

// Subscribe subscribes the wrapped subscriber and hands its messages on.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("sagatest: subscriber closed")
	}
	in, err := s.inner.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	queue := s.cfg.Queue(topic)
	out := make(chan *message.Message)
	s.wg.Go(func() {
		defer close(out)
		for msg := range in {
			s.deliver(ctx, queue, msg, out)
		}
	})
	return out, nil
}

// Close stops handing messages on (a message held or in flight is
// requeued) and closes the wrapped subscriber. Idempotent.
func (s *subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.close()
	err := s.inner.Close()
	s.wg.Wait()
	return err
}

// deliver hands msg on to the consumer through out, injecting the first
// fault that matches it, then acks or nacks msg with the broker.
func (s *subscriber) deliver(ctx context.Context, queue string, msg *message.Message, out chan<- *message.Message) {
	md := msg.Metadata
	d := Delivery{Queue: queue, Event: md.Get(envelope.EventKey), SagaID: md.Get(envelope.SagaIDKey), MessageID: msg.UUID, Message: msg}
	stopCtx, cancel := s.stopCtx(ctx, msg.Context())
	defer cancel()
	stop := stopCtx.Done()
	r := s.f.take(d)
	fault := Fault(0)
	if r != nil {
		fault = r.fault
	}
	switch fault {
	case Dropped:
		msg.Nack() // lost on the way: the broker delivers it again
		return
	case Delayed, Reordered:
		why := fmt.Sprintf("delayed %v on the virtual clock", r.delay)
		if fault == Reordered {
			why = "reordered after " + r.then.String()
		}
		s.f.hold(d, why)
		ok := s.f.wait(r, stop)
		s.f.unhold(d)
		if !ok {
			msg.Nack()
			return
		}
	}
	if !s.hand(stop, msg, out) {
		msg.Nack()
		return
	}
	switch fault {
	case Duplicated:
		if !s.hand(stop, msg, out) {
			msg.Nack()
			return
		}
	case Crashed:
		// The consumer acked (a transactional handler acks after its
		// commit); the ack never reaches the broker.
		msg.Nack()
		return
	}
	msg.Ack()
	s.f.ack(d)
}

// hand gives the consumer a copy of msg and reports whether it acked it.
func (s *subscriber) hand(stop <-chan struct{}, msg *message.Message, out chan<- *message.Message) bool {
	c := msg.Copy()
	c.SetContext(msg.Context())
	select {
	case out <- c:
	case <-stop:
		return false
	}
	select {
	case <-c.Acked():
		return true
	case <-c.Nacked():
	case <-stop:
	}
	return false
}

// stopCtx returns a context done when ctx (the subscription's) or msgCtx
// (the message's, which ends with its subscription) is done, or the
// subscriber closes; the caller calls cancel.
func (s *subscriber) stopCtx(ctx, msgCtx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	a := context.AfterFunc(msgCtx, cancel)
	b := context.AfterFunc(s.closeCtx, cancel)
	return ctx, func() { a(); b(); cancel() }
}
