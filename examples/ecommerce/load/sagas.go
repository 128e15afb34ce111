package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/saga"
)

// SagaConfig configures AwaitSagas; a value, read only by it.
type SagaConfig struct {
	// URL is the base URL of the saga tracker's API (GET /sagas), e.g.
	// the order API's in one process or the saga-tracker's -http.
	URL string
	// Timeout bounds the wait for every saga to be final; 30 s when 0.
	Timeout time.Duration
	// Poll is the time between two looks; 100 ms when 0.
	Poll time.Duration
	// Client is the HTTP client; http.DefaultClient when nil.
	Client *http.Client
}

// SagaTally is what the saga tracker says of a run's orders; a value, safe
// to read concurrently.
type SagaTally struct {
	// States counts the run's sagas per state ("missing": the tracker
	// has no instance for the order).
	States map[saga.State]int
	// Settled is true when none was left running, compensating, timed
	// out or missing before the timeout.
	Settled bool
	// Waited is the time from the call to the sending of the look that
	// found every saga final (0: final at the first look), or to the last
	// look when not Settled.
	Waited time.Duration
	// Lag is the tracker's last record of any of the run's sagas (its
	// updated_at) minus the last notification the order service recorded
	// (Result.LastNotifiedAt): how far the tracker trailed the customers'
	// notifications; negative when it was done first. Both clocks are the
	// services', on one machine here. Zero when not Settled.
	Lag time.Duration
}

const missing saga.State = "missing"

// Final reports whether every saga is completed or compensated.
func (t SagaTally) Final() bool {
	for st, n := range t.States {
		if n > 0 && st != saga.Completed && st != saga.Compensated {
			return false
		}
	}
	return t.Settled
}

func (t SagaTally) String() string {
	keys := slices.Sorted(maps.Keys(t.States))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", t.States[k], k))
	}
	s := strings.Join(parts, ", ")
	if !t.Settled {
		return s + fmt.Sprintf("; NOT settled after %v", t.Waited.Round(time.Millisecond))
	}
	when := "final at the first look after the load"
	if t.Waited > 0 {
		when = fmt.Sprintf("final %v after the load ended", t.Waited.Round(time.Millisecond))
	}
	return s + fmt.Sprintf("; %s; tracker lag %v (its last record minus the last notification)", when, t.Lag.Round(100*time.Microsecond))
}

// AwaitSagas looks at the saga tracker's instances of the run's orders
// (res.OrderIDs) until none is running, compensating, timed out or
// missing, or cfg.Timeout passes, and returns their states and the
// tracker's lag. An error means the tracker could not be asked (or ctx
// ended); a tracker that does not keep up shows as a tally that is not
// Settled. Safe to call concurrently.
func AwaitSagas(ctx context.Context, cfg SagaConfig, res Result) (SagaTally, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return SagaTally{}, fmt.Errorf("load: sagas URL %q is not http(s)://", cfg.URL)
	}
	cfg.URL = strings.TrimSuffix(cfg.URL, "/")
	cfg.Timeout = cmpOr(cfg.Timeout, 30*time.Second)
	cfg.Poll = cmpOr(cfg.Poll, 100*time.Millisecond)
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	deadline := time.Now().Add(cfg.Timeout)
	var start time.Time // the first look's
	// The list is the most recently updated first: the run's sagas come
	// first unless older ones were updated since; a full answer that
	// lacks some of them is asked again with twice the limit.
	limit := len(res.OrderIDs) + 100
	for {
		sent := time.Now()
		if start.IsZero() {
			start = sent
		}
		ins, err := listSagas(ctx, cfg, limit)
		if err != nil {
			return SagaTally{}, err
		}
		tally, last := tallySagas(ins, res.OrderIDs)
		tally.Waited = sent.Sub(start)
		if tally.States[missing] > 0 && len(ins) == limit {
			limit *= 2
		}
		if open := tally.States[saga.Running] + tally.States[saga.Compensating] + tally.States[saga.TimedOut] + tally.States[missing]; open == 0 {
			tally.Settled = true
			if !res.LastNotifiedAt.IsZero() && !last.IsZero() {
				tally.Lag = last.Sub(res.LastNotifiedAt)
			}
			return tally, nil
		}
		if time.Now().After(deadline) {
			return tally, nil
		}
		if !sleep(ctx, cfg.Poll) {
			return tally, ctx.Err()
		}
	}
}

// tallySagas counts the states of the instances of ids and returns the
// latest update among them.
func tallySagas(ins []saga.Instance, ids []string) (SagaTally, time.Time) {
	byID := make(map[string]saga.Instance, len(ins))
	for _, in := range ins {
		byID[in.ID] = in
	}
	t := SagaTally{States: map[saga.State]int{}}
	var last time.Time
	for _, id := range ids {
		in, ok := byID[id]
		if !ok {
			t.States[missing]++
			continue
		}
		t.States[in.State]++
		if in.UpdatedAt.After(last) {
			last = in.UpdatedAt
		}
	}
	return t, last
}

func listSagas(ctx context.Context, cfg SagaConfig, limit int) ([]saga.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := fmt.Sprintf("%s/sagas?saga=%s&limit=%d", cfg.URL, shop.CheckoutSaga.Name, limit)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /sagas: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /sagas: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	var ins []saga.Instance
	if err := json.NewDecoder(resp.Body).Decode(&ins); err != nil {
		return nil, fmt.Errorf("GET /sagas: %w", err)
	}
	return ins, nil
}

// errNotFinal is the verdict on a tally that is not Final.
var errNotFinal = errors.New("load: not every saga is completed or compensated")

// Verdict is nil when every saga of the run is final and the tracker's
// counts agree with the run's tally (completed = confirmed, compensated =
// cancelled), else an error saying what differs.
func (t SagaTally) Verdict(res Result) error {
	if !t.Final() {
		return fmt.Errorf("%w: %v", errNotFinal, t)
	}
	if t.States[saga.Completed] != res.Confirmed || t.States[saga.Compensated] != res.Cancelled {
		return fmt.Errorf("load: the tracker has %d completed and %d compensated sagas, the run %d confirmed and %d cancelled orders",
			t.States[saga.Completed], t.States[saga.Compensated], res.Confirmed, res.Cancelled)
	}
	return nil
}
