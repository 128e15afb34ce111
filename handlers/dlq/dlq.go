// Package dlq inspects and replays dead letters: the messages that
// package handlers parked in a handler's dead-letter queue, with their error,
// attempts and failure times in headers. `troupe dlq` is its command line.
//
// Reading a dead-letter queue takes every message unacknowledged (AMQP
// basic.get) and gives back the ones it does not replay when it is done, so
// a listing changes nothing but the redelivered flag. A replay publishes
// the message back to its work queue (with publisher confirms) before it
// acks the dead letter, so a crash in between duplicates, never loses; the
// consumer's idempotency key makes the duplicate harmless.
package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// Letter is one dead letter.
type Letter struct {
	ID       string
	Metadata map[string]string
	Body     []byte
	// headers are the raw AMQP headers, republished as they were.
	headers map[string]any
	tag     uint64
}

// Event, Saga, Error... read the letter's Troupe headers.
func (l Letter) Event() string     { return l.Metadata[envelope.EventKey] }
func (l Letter) Saga() string      { return l.Metadata[envelope.SagaIDKey] }
func (l Letter) Error() string     { return l.Metadata[envelope.ErrorKey] }
func (l Letter) ErrorKind() string { return l.Metadata[envelope.ErrorKindKey] }
func (l Letter) Attempts() string  { return l.Metadata[envelope.AttemptsKey] }
func (l Letter) LastFailure() string {
	return l.Metadata[envelope.LastFailureKey]
}

// WorkQueue is the queue a replay sends the letter back to: the one in its
// headers, else the dead-letter queue's name without ".dlq".
func (l Letter) WorkQueue(dlqName string) string {
	if q := l.Metadata[envelope.QueueKey]; q != "" {
		return q
	}
	return strings.TrimSuffix(dlqName, ".dlq")
}

// Conn is what dlq needs from a broker connection; one is made per
// operation and closed at its end (which gives back unsettled letters).
type Conn interface {
	// Get takes the next message of queue, unacknowledged; ok is false
	// when the queue has none left.
	Get(ctx context.Context, queue string) (l Letter, ok bool, err error)
	// Ack removes a letter taken by Get.
	Ack(l Letter) error
	// Publish sends a message to queue through the default exchange and
	// waits for the broker's confirm.
	Publish(ctx context.Context, queue string, id string, headers map[string]any, body []byte) error
	// Close gives back every letter taken and not acked.
	Close() error
}

// List returns every dead letter of queue (a dead-letter queue's name),
// leaving them in place.
func List(ctx context.Context, c Conn, queue string) ([]Letter, error) {
	defer c.Close()
	var out []Letter
	for {
		l, ok, err := c.Get(ctx, queue)
		if err != nil {
			return nil, fmt.Errorf("dlq: read %s: %w", queue, err)
		}
		if !ok {
			return out, nil
		}
		out = append(out, l)
	}
}

// Group is the dead letters that share a key (an error text, a saga id).
type Group struct {
	Key     string
	Letters []Letter
}

// GroupBy groups letters by key(l), largest group first.
func GroupBy(letters []Letter, key func(Letter) string) []Group {
	idx := map[string]int{}
	var groups []Group
	for _, l := range letters {
		k := key(l)
		i, ok := idx[k]
		if !ok {
			i = len(groups)
			idx[k] = i
			groups = append(groups, Group{Key: k})
		}
		groups[i].Letters = append(groups[i].Letters, l)
	}
	slices.SortStableFunc(groups, func(a, b Group) int { return cmp.Compare(len(b.Letters), len(a.Letters)) })
	return groups
}

// Filter selects the letters a replay moves.
type Filter struct {
	ID, Error, Saga string
	All             bool
}

// Validate refuses an empty filter (replaying everything must be asked
// for with All) and a mix of All with a narrower one.
func (f Filter) Validate() error {
	narrow := f.ID != "" || f.Error != "" || f.Saga != ""
	switch {
	case !narrow && !f.All:
		return errors.New("dlq: say which letters to replay: an id, an error, a saga, or all")
	case narrow && f.All:
		return errors.New("dlq: all cannot be combined with an id, an error or a saga")
	}
	return nil
}

func (f Filter) match(l Letter) bool {
	return f.All || (f.ID == "" || l.ID == f.ID) && (f.Error == "" || l.Error() == f.Error) && (f.Saga == "" || l.Saga() == f.Saga)
}

// Replay sends the letters of queue that f selects back to their work
// queue, recording the replay in their headers: who (by), when, and how
// many times so far. Their attempt counts restart, so the handler's retry
// policy applies afresh. It returns the replayed letters.
func Replay(ctx context.Context, c Conn, queue string, f Filter, by string, now time.Time) ([]Letter, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	defer c.Close()
	var done []Letter
	for {
		l, ok, err := c.Get(ctx, queue)
		if err != nil {
			return done, fmt.Errorf("dlq: read %s: %w", queue, err)
		}
		if !ok {
			return done, nil
		}
		if !f.match(l) {
			continue // given back by Close
		}
		h := make(map[string]any, len(l.headers)+3)
		for k, v := range l.headers {
			h[k] = v
		}
		for _, k := range append([]string{envelope.AttemptsKey, envelope.DelayedKey}, bus.BrokerKeys...) {
			delete(h, k)
		}
		replays, _ := strconv.Atoi(l.Metadata[envelope.ReplaysKey])
		h[envelope.ReplaysKey] = strconv.Itoa(replays + 1)
		h[envelope.ReplayedByKey] = by
		h[envelope.ReplayedAtKey] = now.UTC().Format(time.RFC3339Nano)
		target := l.WorkQueue(queue)
		if err := c.Publish(ctx, target, l.ID, h, l.Body); err != nil {
			return done, fmt.Errorf("dlq: replay %s to %s: %w", l.ID, target, err)
		}
		if err := c.Ack(l); err != nil {
			return done, fmt.Errorf("dlq: ack %s after its replay: %w", l.ID, err)
		}
		done = append(done, l)
	}
}

func newLetter(id string, headers map[string]any, body []byte, tag uint64) Letter {
	md := make(map[string]string, len(headers))
	for k, v := range headers {
		md[k] = envelope.Text(v)
	}
	if id == "" {
		id = md[envelope.UUIDHeader]
	}
	return Letter{ID: id, Metadata: md, Body: body, headers: headers, tag: tag}
}
