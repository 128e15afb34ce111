package sagatest

import (
	"sync"
	"time"
)

// Clock is a virtual clock: it stands still until Advance moves it. The
// harness gives it to the saga tracker (its deadlines) and to the routers
// (handlers.WithClock: the production times of events), and Delay holds
// messages until it has moved far enough. Safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan struct{}
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time. It implements saga.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (a negative d is ignored) and
// releases everything waiting for a time now reached. It does not block.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		close(w.ch)
	}
	c.waiters = kept
}

// At returns a channel closed once the clock reaches t (at once if it has).
func (c *Clock) At(t time.Time) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	if !t.After(c.now) {
		close(ch)
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: t, ch: ch})
	return ch
}
