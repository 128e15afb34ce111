package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/internal/storetext"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// TrackerService is the service name of trackers: a tracker of saga
// "checkout" consumes the queue "saga-tracker.checkout" and produces its
// events (saga.timed_out, saga.failed) as this service.
const TrackerService = "saga-tracker"

// Clock tells the time; the tracker reads deadlines from it, so that tests
// move time by hand.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// TrackerConfig configures a Tracker.
type TrackerConfig struct {
	// Exchange is the bus; bus.DefaultExchange when empty.
	Exchange string
	// Prefetch bounds the deliveries in flight per consumer; 64 when 0.
	Prefetch int
	// Consumers is how many consumers the tracker runs on its queue, at
	// least one per event it follows; 128 when 0. The messages they hold
	// at one moment are recorded in one transaction (see Run), so more
	// consumers make larger, cheaper batches under load. Unused on a
	// transport whose subscriber hands out batches (bus.BatchSubscriber:
	// the bundled broker in process), which needs one.
	Consumers int
	// QueuePrefix, for stacks that share a broker, is put before the
	// tracker's queue ("<prefix>saga-tracker.<saga>") and expected before
	// the services' names in dead-letter announcements (the services run
	// as "<prefix><service>").
	QueuePrefix string
	// DeadlineInterval is how often deadlines are checked; 1 s when 0.
	DeadlineInterval time.Duration
	// Relay configures the relay of the tracker's outbox (saga.timed_out,
	// saga.failed).
	Relay outbox.RelayConfig
	// Clock is the time of deadlines; the system clock when nil.
	Clock Clock
	// Logger logs; nothing when nil.
	Logger *slog.Logger
}

// Tracker follows every instance of one saga on the bus: it consumes each
// event of the saga (and handlers.DeadLettered announcements) from a
// queue of its own, "saga-tracker.<saga>", and records it in the history
// of the instance named by the message's saga id, in its database, then
// derives the instance's state again (Derive). Each message is recorded
// once: a message whose id is in the instance's history (read in the
// recording transaction) is skipped, and the history's unique key (saga,
// id, message id) refuses a copy that slipped past. It records messages in batches, each in
// one transaction. It checks deadlines, emitting TimedOutEvent through its
// outbox, and emits FailedEvent when an instance is parked in state
// failed. Replicas may run against one database and one queue. Safe for
// concurrent use.
type Tracker struct {
	s      *Saga
	store  *Store
	tr     transport.Transport
	cfg    TrackerConfig
	queue  string
	logger *slog.Logger

	mu      sync.Mutex
	running bool
	ready   chan struct{}
}

// NewTracker makes a tracker of s that keeps its instances in db (its
// tables migrated by OpenStore) and consumes from tr.
func NewTracker(ctx context.Context, s *Saga, db *outbox.DB, tr transport.Transport, cfg TrackerConfig) (*Tracker, error) {
	store, err := OpenStore(ctx, db, s)
	if err != nil {
		return nil, err
	}
	if cfg.DeadlineInterval <= 0 {
		cfg.DeadlineInterval = time.Second
	}
	if cfg.Consumers <= 0 {
		cfg.Consumers = 128
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Tracker{s: s, store: store, tr: tr, cfg: cfg, logger: logger,
		queue: bus.WorkQueue(cfg.QueuePrefix+TrackerService, s.Name), ready: make(chan struct{})}, nil
}

// Store returns the tracker's store, for queries and operator actions.
func (t *Tracker) Store() *Store { return t.store }

// Queue returns the tracker's queue, "saga-tracker.<saga>".
func (t *Tracker) Queue() string { return t.queue }

// Running is closed once the tracker consumes every event it follows.
func (t *Tracker) Running() <-chan struct{} { return t.ready }

// Topology returns the tracker's queue bound to every event it records —
// what Run declares — for a process that publishes before the tracker
// runs to declare ahead (see handlers.Router.Topology). Safe for
// concurrent use.
func (t *Tracker) Topology() bus.Topology {
	return bus.Topology{Exchange: t.cfg.Exchange, Queues: []bus.Queue{{Name: t.queue, Events: t.events()}}}
}

// events are the routing keys the tracker's queue is bound to.
func (t *Tracker) events() []string {
	return append(t.s.Events(), handlers.DeadLetteredEvent)
}

// Run consumes, checks deadlines and relays the tracker's outbox until
// ctx ends; messages in flight then are requeued by the broker. It blocks;
// it may be called once.
func (t *Tracker) Run(ctx context.Context) error {
	t.mu.Lock()
	if t.running {
		t.mu.Unlock()
		return errors.New("saga: tracker Run called twice")
	}
	t.running = true
	t.mu.Unlock()
	sub, err := t.tr.NewSubscriber(bus.SubscriberConfig{
		QueueName: func(string) string { return t.queue },
		Exchange:  t.cfg.Exchange, Prefetch: t.cfg.Prefetch,
	})
	if err != nil {
		return fmt.Errorf("saga: tracker subscriber: %w", err)
	}
	pub, err := t.tr.NewPublisher(bus.PublisherConfig{Exchange: t.cfg.Exchange})
	if err != nil {
		return errors.Join(fmt.Errorf("saga: tracker publisher: %w", err), sub.Close())
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	if err := t.subscribe(runCtx, sub, &wg); err != nil {
		stop()
		wg.Wait()
		return errors.Join(err, sub.Close(), pub.Close())
	}
	relay := outbox.NewRelay(t.store.db, pub, t.cfg.Relay, t.logger)
	wg.Go(func() { _ = relay.Run(runCtx) })
	wg.Go(func() { t.deadlines(runCtx) })
	close(t.ready)
	<-runCtx.Done()
	wg.Wait()
	return errors.Join(sub.Close(), pub.Close())
}

// subscribe starts the goroutines, counted in wg, that record the
// messages of the tracker's queue until ctx ends.
//
// A subscriber that hands out batches (bus.BatchSubscriber: the bundled
// broker in-process) gets one subscription to the queue, bound first to
// every event the tracker follows; each batch is recorded in one
// transaction. Any other gets consumers on the queue, at least one per
// event: each subscription declares the queue and binds its event's
// routing key, and any consumer receives any event of the queue. Each
// hands its messages to one batcher (consume); a consumer's next message
// comes once the batcher has settled the last one.
func (t *Tracker) subscribe(ctx context.Context, sub message.Subscriber, wg *sync.WaitGroup) error {
	events := t.events()
	if bs, ok := sub.(bus.BatchSubscriber); ok {
		if err := t.tr.Declare(ctx, t.Topology()); err != nil {
			return fmt.Errorf("saga: tracker queue: %w", err)
		}
		batches, err := bs.SubscribeBatches(ctx, events[0], bus.BatchConfig{Max: maxTrackerBatch, Linger: trackerLinger})
		if err != nil {
			return fmt.Errorf("saga: tracker subscribe: %w", err)
		}
		wg.Go(func() {
			for batch := range batches {
				t.record(ctx, batch)
			}
		})
		return nil
	}
	in := make(chan *message.Message)
	consumers := max(t.cfg.Consumers, len(events))
	for i := range consumers {
		ev := events[i%len(events)]
		msgs, err := sub.Subscribe(ctx, ev)
		if err != nil {
			return fmt.Errorf("saga: tracker subscribe %s: %w", ev, err)
		}
		wg.Go(func() {
			for msg := range msgs {
				select {
				case in <- msg:
				case <-ctx.Done():
					msg.Nack()
				}
			}
		})
	}
	wg.Go(func() { t.consume(ctx, in, consumers) })
	return nil
}

// consume records the messages of in until ctx ends, in batches: the
// messages that come within trackerLinger of the first (at most one per
// consumer, as each waits for its message's ack before taking the next)
// are recorded in one transaction and then acked. The tracker is off the
// saga's path (no service waits for it), so a few milliseconds more
// before a record cost nothing but a little lag, and save a commit per
// message at moderate rates and most of the statements under load (the
// example shop's tracker took 5% less CPU per order with 5 ms than with 1). When a batch's transaction fails, each message of it
// is recorded alone, so that one message that cannot be recorded does not
// hold back the others; it is requeued after a pause (the database may be
// down), so that a lasting failure does not spin.
func (t *Tracker) consume(ctx context.Context, in <-chan *message.Message, consumers int) {
	limit := min(consumers, maxTrackerBatch)
	var batch []*message.Message
	linger := time.NewTimer(trackerLinger)
	linger.Stop()
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case msg := <-in:
			batch = append(batch, msg)
		}
		linger.Reset(trackerLinger)
	more:
		for len(batch) < limit {
			select {
			case msg := <-in:
				batch = append(batch, msg)
			case <-linger.C:
				break more
			case <-ctx.Done():
				break more
			}
		}
		linger.Stop()
		t.record(ctx, batch)
	}
}

// record records batch and settles its messages: in one transaction,
// then acked; when that transaction fails, each message alone
// (consumeOne), so that one message that cannot be recorded does not hold
// back the others.
func (t *Tracker) record(ctx context.Context, batch []*message.Message) {
	if len(batch) > 1 {
		if err := t.HandleBatch(ctx, batch); err == nil {
			for _, msg := range batch {
				msg.Ack()
			}
			return
		}
	}
	for _, msg := range batch {
		t.consumeOne(ctx, msg)
	}
}

// trackerLinger is how long a batch waits for more messages after its
// first.
const trackerLinger = 5 * time.Millisecond

// maxTrackerBatch bounds the messages recorded in one transaction.
const maxTrackerBatch = 128

// consumeOne records msg alone and settles it.
func (t *Tracker) consumeOne(ctx context.Context, msg *message.Message) {
	if err := t.Handle(ctx, msg); err != nil {
		if ctx.Err() == nil {
			t.logger.LogAttrs(ctx, slog.LevelWarn, "saga tracker: message requeued",
				slog.String("message_id", msg.UUID), slog.Any("error", err))
			select {
			case <-ctx.Done():
			case <-time.After(requeuePause):
			}
		}
		msg.Nack()
		return
	}
	msg.Ack()
}

// requeuePause is how long the tracker waits before requeuing a message
// it could not record.
const requeuePause = 100 * time.Millisecond

// deadlines checks deadlines every DeadlineInterval until ctx ends.
func (t *Tracker) deadlines(ctx context.Context) {
	tick := time.NewTicker(t.cfg.DeadlineInterval)
	defer tick.Stop()
	for {
		if _, err := t.CheckDeadlines(ctx); err != nil && ctx.Err() == nil {
			t.logger.LogAttrs(ctx, slog.LevelWarn, "saga tracker: deadline check", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Handle records one message of the bus (what Run does with each): an
// event of the saga, or a handlers.DeadLettered announcement of one of
// its messages. A message without a saga id (or with one that is not
// UTF-8), or that is not the saga's, is skipped. A message recorded
// before (a redelivery) changes nothing. An error means nothing was
// recorded: requeue the message. Safe for concurrent use.
func (t *Tracker) Handle(ctx context.Context, msg *message.Message) error {
	// No inbox row: the message id in the instance's history is the
	// idempotency key, and a redelivery is not added again.
	return t.HandleBatch(ctx, []*message.Message{msg})
}

// HandleBatch records msgs as Handle does each, all in one transaction:
// all are recorded, or none is (then the error is the first one met).
// Events of one instance are recorded in the order of msgs. Safe for
// concurrent use.
func (t *Tracker) HandleBatch(ctx context.Context, msgs []*message.Message) error {
	var items []pending
	var causes []*message.Message
	for _, msg := range msgs {
		id := msg.Metadata.Get(envelope.SagaIDKey)
		// A saga id that is not UTF-8, holds a NUL or is longer than
		// MaxInstanceID names no instance: the store would not read its
		// history back (SQLite gets the ids as JSON), and PostgreSQL
		// refuses it (every redelivery of the batch would fail again).
		if id == "" {
			continue
		}
		if len(id) > MaxInstanceID || !storetext.Keepable(id) {
			t.logger.Warn("saga tracker: a saga id no store keeps; the message is not recorded",
				slog.String("message_id", storetext.Storable(msg.UUID)), slog.Int("saga_id_bytes", len(id)))
			continue
		}
		if e, ok := t.entry(msg); ok {
			items = append(items, pending{id, e})
			causes = append(causes, msg)
		}
	}
	if len(items) == 0 {
		return nil
	}
	return t.store.db.InTx(ctx, func(tx *outbox.Tx) error {
		rs, err := t.store.recordAll(ctx, tx, t.s, items)
		if err != nil {
			return err
		}
		for i, r := range rs {
			if r.added {
				if err := t.alert(ctx, tx, items[i].id, r.before, r.after, causes[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// entry is what a message means for the saga.
func (t *Tracker) entry(msg *message.Message) (Entry, bool) {
	md := msg.Metadata
	at, err := time.Parse(time.RFC3339Nano, md.Get(envelope.ProducedAtKey))
	if err != nil || at.Before(minNanos) || at.After(maxNanos) {
		// Unreadable, or beyond the times the store keeps (Unix
		// nanoseconds in an int64, years 1677 to 2262).
		at = t.cfg.Clock.Now()
	}
	// Ids from the bus may be any bytes; PostgreSQL refuses text that is
	// not UTF-8 or holds a NUL (every redelivery would fail again), so such
	// an id is kept storable, on either database.
	e := Entry{At: at.UTC(), RecordedAt: t.cfg.Clock.Now().UTC(), Kind: EventEntry,
		Event: md.Get(envelope.EventKey), MessageID: storetext.Storable(msg.UUID),
		CausationID: storetext.Storable(md.Get(envelope.CausationIDKey)), TraceID: traceID(md)}
	if e.Event == handlers.DeadLetteredEvent {
		return t.deadLetter(msg, e)
	}
	trs := t.s.Transitions(e.Event)
	if len(trs) == 0 || e.Event == TimedOutEvent && !t.ownTimeout(msg.Payload) {
		return Entry{}, false
	}
	e.Meaning = meaning(trs)
	e.Error = storetext.Storable(reasonOf(msg.Payload))
	return e, true
}

// traceID is the trace id of md's W3C traceparent, or "" without a valid
// one. It reads the header itself, whatever propagator the process set.
func traceID(md message.Metadata) string {
	ctx := propagation.TraceContext{}.Extract(context.Background(),
		propagation.MapCarrier{envelope.TraceParentKey: md.Get(envelope.TraceParentKey)})
	if sc := trace.SpanContextFromContext(ctx); sc.TraceID().IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// deadLetter is the entry of a handlers.DeadLettered announcement: which
// step or compensation of the saga is stuck. A dead letter of a
// listener, or of another saga's event, is not the saga's.
func (t *Tracker) deadLetter(msg *message.Message, e Entry) (Entry, bool) {
	var dl handlers.DeadLettered
	if err := json.Unmarshal(msg.Payload, &dl); err != nil {
		t.logger.Warn("saga tracker: undecodable dead-letter announcement", slog.String("message_id", msg.UUID), slog.Any("error", err))
		return Entry{}, false
	}
	e.Event, e.CausationID, e.Error, e.Queue = dl.Event, storetext.Storable(dl.MessageID), storetext.Storable(dl.Error), storetext.Storable(dl.DeadLetterQueue)
	for _, st := range t.s.Steps {
		if t.cfg.QueuePrefix+st.Service != dl.Service {
			continue
		}
		if st.Compensation != nil && slices.Contains(st.Compensation.On, dl.Event) {
			e.Kind, e.Step = CompensationDeadLetter, st.Name
			e.Meaning = fmt.Sprintf("compensation of step %s dead-lettered in %s after %d runs", st.Name, dl.DeadLetterQueue, dl.Attempts)
			return e, true
		}
		if st.Trigger == dl.Event {
			e.Kind, e.Step = StepDeadLetter, st.Name
			e.Meaning = fmt.Sprintf("step %s dead-lettered in %s after %d runs", st.Name, dl.DeadLetterQueue, dl.Attempts)
			return e, true
		}
	}
	return Entry{}, false
}

// ownTimeout reports whether a TimedOutEvent is this saga's (another
// saga's tracker may time out an instance of the same id).
func (t *Tracker) ownTimeout(payload []byte) bool {
	var to Timeout
	return json.Unmarshal(payload, &to) == nil && to.Saga == t.s.Name
}

// MaxInstanceID is the longest saga id the tracker records, in bytes.
const MaxInstanceID = 1024

// reasonOf reads the conventional "reason" field of a JSON payload (a
// failure event's), if it has one.
func reasonOf(payload []byte) string {
	var p struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return ""
	}
	return p.Reason
}

// Failure is the payload of FailedEvent: an instance parked in state
// failed.
type Failure struct {
	Saga   string `json:"saga"`
	ID     string `json:"id"`
	Step   string `json:"step"`
	Reason string `json:"reason"`
}

// EventName returns FailedEvent: a Failure is a handlers.Event.
func (Failure) EventName() string { return FailedEvent }

// Timeout is the payload of TimedOutEvent. It is a handlers.Event, so a
// service consumes it with a typed handler to undo its step.
type Timeout struct {
	Saga string `json:"saga"`
	ID   string `json:"id"`
	// Deadline is what was missed: "saga" or "step NAME"; Step is the
	// current step then.
	Deadline   string    `json:"deadline"`
	DeadlineAt time.Time `json:"deadline_at"`
	Step       string    `json:"step,omitempty"`
}

// EventName returns TimedOutEvent.
func (Timeout) EventName() string { return TimedOutEvent }

// alert emits FailedEvent when an instance has just been parked.
func (t *Tracker) alert(ctx context.Context, tx *outbox.Tx, id string, before, after Status, cause *message.Message) error {
	if after.State != Failed || before.State == Failed {
		return nil
	}
	_, err := t.emit(ctx, tx, FailedEvent, id, cause.UUID, Failure{Saga: t.s.Name, ID: id, Step: after.Step, Reason: after.Reason})
	return err
}

// emit writes an event of the tracker to its outbox in tx, with the
// instance's saga id; it returns the message id.
func (t *Tracker) emit(ctx context.Context, tx *outbox.Tx, event, id, causation string, payload any) (string, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("saga: encode %s: %w", event, err)
	}
	mid, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("saga: message id: %w", err)
	}
	m := message.NewMessage(mid.String(), b)
	md := m.Metadata
	md.Set(envelope.EventKey, event)
	md.Set(envelope.SagaIDKey, id)
	md.Set(envelope.ProducerKey, TrackerService)
	md.Set(envelope.ProducedAtKey, t.cfg.Clock.Now().UTC().Format(time.RFC3339Nano))
	md.Set(envelope.ContentTypeKey, "application/json")
	md.Set(envelope.IdempotencyKey, m.UUID)
	if causation != "" {
		md.Set(envelope.CausationIDKey, causation)
	}
	tracing.Inject(ctx, md)
	return m.UUID, tx.Add(ctx, event, id, m)
}

// CheckDeadlines times out every running instance whose next deadline is
// at or before the clock's now: in one transaction per instance it
// records the timeout in the history (state timed_out) and writes
// TimedOutEvent to the outbox, whose consumers start the declared
// compensation. Replicas checking at once time an instance out once. It
// returns how many instances timed out; Run calls it every
// DeadlineInterval.
func (t *Tracker) CheckDeadlines(ctx context.Context) (int, error) {
	now := t.cfg.Clock.Now().UTC()
	due, err := t.store.instances(ctx, t.store.db, `WHERE saga = ? AND state = ? AND deadline_at IS NOT NULL AND deadline_at <= ?
		ORDER BY deadline_at LIMIT 256`, t.s.Name, string(Running), nanos(now))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range due {
		timedOut, err := t.timeOut(ctx, in.ID, now)
		if err != nil {
			return n, err
		}
		if timedOut {
			n++
		}
	}
	return n, nil
}

// timeOut times instance id out if it is still running and due.
func (t *Tracker) timeOut(ctx context.Context, id string, now time.Time) (bool, error) {
	done := false
	err := t.store.db.InTx(ctx, func(tx *outbox.Tx) error {
		if err := t.store.lock(ctx, tx, t.s.Name, id); err != nil {
			return err
		}
		history, err := t.store.history(ctx, tx, t.s.Name, id)
		if err != nil {
			return err
		}
		st := Derive(t.s, history)
		if st.State != Running || st.DeadlineAt.IsZero() || st.DeadlineAt.After(now) {
			return nil // moved on, or another replica was first
		}
		reason := fmt.Sprintf("deadline of the %s missed (due %s)", st.Deadline, st.DeadlineAt.Format(time.RFC3339Nano))
		mid, err := t.emit(ctx, tx, TimedOutEvent, id, "", Timeout{Saga: t.s.Name, ID: id, Deadline: st.Deadline, DeadlineAt: st.DeadlineAt, Step: st.Step})
		if err != nil {
			return err
		}
		e := Entry{At: now, RecordedAt: now, Kind: TimedOutEntry, Event: TimedOutEvent, MessageID: mid,
			Step: st.Step, Error: reason, Meaning: "deadline missed; " + TimedOutEvent + " emitted"}
		if trs := t.s.Transitions(TimedOutEvent); len(trs) > 0 {
			e.Meaning += "; " + meaning(trs)
		}
		_, _, done, err = t.store.record(ctx, tx, t.s, id, e)
		return err
	})
	return done, err
}
