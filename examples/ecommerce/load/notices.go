package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// A run follows the order API's notices (GET /orders/notified, a stream
// of server-sent events) rather than long-polling GET /orders/{id} once per
// order: one request for the whole run instead of one per order, which
// is a share of the CPU the run measures when the generator runs in the
// shop's process. When the stream cannot be opened (an older shop) or
// ends early (the shop's "end" event, a broken connection), the orders
// still waiting go back to the long-poll; none is lost either way.

// maxEarly bounds the notices kept for orders not waited for yet (the
// stream's notice came before the POST's answer, or the order is another
// client's); beyond it they are dropped, and their orders, if any are
// this run's, are found by the long-poll after the wait.
const maxEarly = 1 << 20

// notices is a run's subscription to the order API's notices. Safe for
// concurrent use.
type notices struct {
	mu      sync.Mutex
	waiting map[string]chan shop.Notice
	early   map[string]shop.Notice
	lost    chan struct{} // closed when the stream has ended
	err     error         // why, set before lost is closed
	done    chan struct{} // closed when the reader has returned
}

// openNotices opens the stream; the reader runs until ctx ends or the
// stream does.
func openNotices(ctx context.Context, cfg Config) (*notices, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL+"/orders/notified", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /orders/notified: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET /orders/notified: %s", resp.Status)
	}
	n := &notices{waiting: map[string]chan shop.Notice{}, early: map[string]shop.Notice{},
		lost: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		defer resp.Body.Close()
		err := n.read(resp.Body)
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(n.lost)
	}()
	return n, nil
}

// read dispatches the stream's events until it ends; it returns why.
func (n *notices) read(body io.Reader) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var event string
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			switch event {
			case "notified":
				var nt shop.Notice
				if err := json.Unmarshal(data, &nt); err != nil || nt.OrderID == "" {
					return fmt.Errorf("notice %q: undecodable (%v)", data, err)
				}
				n.deliver(nt)
			case "end":
				var end struct {
					Reason string `json:"reason"`
				}
				_ = json.Unmarshal(data, &end)
				return fmt.Errorf("the shop ended the stream: %s", cmpOr(end.Reason, "no reason given"))
			}
			event, data = "", data[:0]
		case line[0] == ':': // a comment: the shop's ping
		case bytes.HasPrefix(line, []byte("event:")):
			event = string(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimSpace(line[len("data:"):])...)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// deliver hands nt to its order's waiter, or keeps it for later.
func (n *notices) deliver(nt shop.Notice) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiting[nt.OrderID]; ok {
		delete(n.waiting, nt.OrderID)
		ch <- nt // buffered, and the only send
		return
	}
	if len(n.early) < maxEarly {
		n.early[nt.OrderID] = nt
	}
}

// await returns the channel that receives id's notice, and a func that
// stops the wait; it reports false once the stream has ended.
func (n *notices) await(id string) (<-chan shop.Notice, func(), bool) {
	select {
	case <-n.lost:
		return nil, nil, false
	default:
	}
	ch := make(chan shop.Notice, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if nt, ok := n.early[id]; ok {
		delete(n.early, id)
		ch <- nt
	} else {
		n.waiting[id] = ch
	}
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.waiting[id] == ch {
			delete(n.waiting, id)
		}
	}, true
}
