package shop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Notice is one order whose customer was told: what GET /orders/notified
// streams, as each notification commits.
type Notice struct {
	OrderID    string    `json:"order_id"`
	Status     string    `json:"status"`
	NotifiedAt time.Time `json:"notified_at"`
}

// noticeBuffer is how many notices a stream may fall behind by before it
// is ended (its client then asks for the orders it still waits for, one
// by one).
const noticeBuffer = 8192

// notices fans the notices out to the open streams. Safe for concurrent
// use.
type notices struct {
	mu     sync.Mutex
	subs   map[*noticeSub]struct{}
	closed bool
}

// noticeSub is one stream's subscription: ended is closed when it fell
// behind (reason "overflow") or the service closed its streams ("closing");
// reason is set before.
type noticeSub struct {
	ch     chan Notice
	ended  chan struct{}
	reason string
}

// Reasons a stream ends, in its "end" event.
const (
	endOverflow = "overflow"
	endClosing  = "closing"
)

// subscribe opens a subscription; cancel ends it.
func (n *notices) subscribe() (sub *noticeSub, cancel func()) {
	sub = &noticeSub{ch: make(chan Notice, noticeBuffer), ended: make(chan struct{})}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		sub.reason = endClosing
		close(sub.ended)
		return sub, func() {}
	}
	if n.subs == nil {
		n.subs = map[*noticeSub]struct{}{}
	}
	n.subs[sub] = struct{}{}
	return sub, func() { n.end(sub) }
}

// end removes sub and closes its ended channel, once.
func (n *notices) end(sub *noticeSub) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.subs[sub]; ok {
		delete(n.subs, sub)
		close(sub.ended)
	}
}

// publish hands nt to every subscription; one whose buffer is full is
// ended rather than waited for or silently skipped.
func (n *notices) publish(nt Notice) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for sub := range n.subs {
		select {
		case sub.ch <- nt:
		default:
			delete(n.subs, sub)
			sub.reason = endOverflow
			close(sub.ended)
		}
	}
}

// close ends every subscription, and those opened later at once.
func (n *notices) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for sub := range n.subs {
		delete(n.subs, sub)
		sub.reason = endClosing
		close(sub.ended)
	}
}

// CloseStreams ends the open GET /orders/notified streams and refuses new
// ones (for http.Server.RegisterOnShutdown: a server shutting down waits
// for its requests, and a stream would not end on its own). Idempotent.
func (s *OrderService) CloseStreams() { s.notices.close() }

// streamNotified serves GET /orders/notified: a server-sent event
// "notified" (data: a Notice) per order whose customer is told from now
// on, in commit order. The stream ends with an "end" event, data
// {"reason": "overflow"} for a client that fell noticeBuffer notices
// behind, {"reason": "closing"} when the service closes its streams. A
// comment line every streamPing keeps an idle stream's connection open
// through proxies.
func (s *OrderService) streamNotified(w http.ResponseWriter, r *http.Request) {
	sub, cancel := s.notices.subscribe()
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	ping := time.NewTicker(streamPing)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case nt := <-sub.ch:
			// Write what is buffered, then flush once.
			for more := true; more; {
				b, _ := json.Marshal(nt)
				if _, err := fmt.Fprintf(w, "event: notified\ndata: %s\n\n", b); err != nil {
					return
				}
				select {
				case nt = <-sub.ch:
				default:
					more = false
				}
			}
			if rc.Flush() != nil {
				return
			}
		case <-sub.ended:
			if len(sub.ch) > 0 {
				continue // what it was sent before it ended, first
			}
			_, _ = fmt.Fprintf(w, "event: end\ndata: {\"reason\":%q}\n\n", sub.reason)
			_ = rc.Flush()
			return
		}
	}
}

// streamPing is how often an idle stream sends a comment line.
const streamPing = 15 * time.Second
