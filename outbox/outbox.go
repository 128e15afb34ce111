package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/internal/pglazy"
)

// notifyChannel is the PostgreSQL NOTIFY channel that wakes relays in other
// processes when outbox rows commit.
const notifyChannel = "troupe_outbox"

// Add writes msg to the outbox in tx: it is published to topic after tx
// commits, by a relay, in commit order with the other messages of its
// ordering key (a saga id, an aggregate id; "" orders it with nothing
// else). If tx rolls back, it is never published. The message's UUID must
// be unique; its metadata (trace context included) travels with it. On
// PostgreSQL the row is written with the commit, in the same round trip:
// tx's own queries do not see it, and a UUID not unique fails the commit
// rather than Add.
func (tx *Tx) Add(ctx context.Context, topic, orderingKey string, msg *message.Message) error {
	md, err := json.Marshal(msg.Metadata)
	if err != nil {
		return fmt.Errorf("outbox: encode metadata of %s: %w", msg.UUID, err)
	}
	if orderingKey == "" {
		orderingKey = msg.UUID
	}
	orderingKey = storedKey(orderingKey) // any bytes order alike on every dialect
	now := time.Now().UTC()
	if h := tx.db.handoff.Load(); h != nil && (tx.handoff == nil || tx.handoff == h) && h.room() {
		// SQLite, with a relay of this process running (handoff.go).
		res, err := tx.Exec(ctx, freshInsert, msg.UUID, topic, orderingKey, []byte(msg.Payload), string(md), now,
			h.tag, now.Add(h.lease), orderingKey, h.tag)
		if err != nil {
			return fmt.Errorf("outbox: add %s: %w", msg.UUID, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 1 {
			id, err := res.LastInsertId()
			if err != nil {
				return fmt.Errorf("outbox: add %s: %w", msg.UUID, err)
			}
			md := maps.Clone(msg.Metadata)
			if md == nil {
				md = message.Metadata{}
			}
			tx.handoff = h
			tx.handed = append(tx.handed, row{id: id, messageID: msg.UUID, topic: topic, key: orderingKey,
				payload: slices.Clone(msg.Payload), md: md, createdAt: now})
			return nil
		}
		// Not the head of its key: for the claims, which keep its order.
	}
	insert := `INSERT INTO troupe_outbox (message_id, topic, ordering_key, payload, metadata, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`
	if tx.db.dialect == Postgres {
		// Sent with the COMMIT, in its round trip (internal/pglazy): the
		// row is not visible in tx before, and its error (a UUID not
		// unique) fails the commit.
		insert = pglazy.Deferred + insert
	}
	if _, err := tx.Exec(ctx, insert, msg.UUID, topic, orderingKey, []byte(msg.Payload), string(md), now); err != nil {
		return fmt.Errorf("outbox: add %s: %w", msg.UUID, err)
	}
	// On PostgreSQL the insert's trigger notifies the relays listening in
	// any process, at commit (migration 5).
	tx.added++
	return nil
}

// notifier wakes the relays of this process when outbox rows commit.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next notify.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
