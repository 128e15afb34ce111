package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// Config configures a run.
type Config struct {
	// URL is the order API's base URL, e.g. "http://127.0.0.1:8080".
	URL string
	// Orders is how many orders to place.
	Orders int
	// Concurrency is how many orders are in flight at most (placed and
	// not yet notified); 50 when 0.
	Concurrency int
	// Rate paces the placements (orders per second); 0: as fast as the
	// Concurrency allows.
	Rate float64
	// Timeout is how long an order may take from placement to
	// notification before it counts as stuck; 30 s when 0.
	Timeout time.Duration
	// DeclinedShare is the share of orders paid with DeclinedMethod
	// (cancelled by the payment service), 0..1.
	DeclinedShare float64
	// SoldOutShare is the share of orders that also ask for SoldOutSKU
	// (paid, then refunded when the inventory has none left), 0..1.
	SoldOutShare float64
	// DeclinedMethod is the payment method the shop declines;
	// "card-declined" when empty.
	DeclinedMethod string
	// SoldOutSKU is a sku the shop runs out of; "plum" when empty.
	SoldOutSKU string
	// Seed makes the mix reproducible.
	Seed uint64
	// Progress, when set, receives a progress line about every
	// ProgressInterval (1 s when 0); with ProgressInPlace each line
	// overwrites the last (a terminal).
	Progress         io.Writer
	ProgressInterval time.Duration
	ProgressInPlace  bool
	// Client is the HTTP client; one with enough idle connections for
	// Concurrency when nil.
	Client *http.Client
	// LongPoll waits for each order with its own long-poll (GET
	// /orders/{id}?wait=notified) instead of following the order API's
	// stream of notices (GET /orders/notified), which the run falls back
	// to anyway when the stream is not there or ends early.
	LongPoll bool
}

func (c *Config) setDefaults() {
	c.Concurrency = cmpOr(c.Concurrency, 50)
	c.Timeout = cmpOr(c.Timeout, 30*time.Second)
	c.DeclinedMethod = cmpOr(c.DeclinedMethod, "card-declined")
	c.SoldOutSKU = cmpOr(c.SoldOutSKU, "plum")
	c.ProgressInterval = cmpOr(c.ProgressInterval, time.Second)
	c.URL = strings.TrimSuffix(c.URL, "/")
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			MaxIdleConns: 2 * c.Concurrency, MaxIdleConnsPerHost: 2 * c.Concurrency, IdleConnTimeout: time.Minute,
		}}
	}
}

// Validate reports every problem of the configuration, each a
// *FieldError.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, value any, want string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Want: want})
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		bad("URL", fmt.Sprintf("%q", c.URL), "want http:// or https://")
	}
	if c.Orders <= 0 {
		bad("Orders", c.Orders, "must be at least 1")
	}
	if c.Concurrency < 0 {
		bad("Concurrency", c.Concurrency, "must not be negative")
	}
	if !(c.Rate >= 0) || math.IsInf(c.Rate, 1) { // NaN too
		bad("Rate", c.Rate, "must be a number of at least 0 (0: unpaced)")
	}
	if c.Timeout < 0 {
		bad("Timeout", c.Timeout, "must not be negative")
	}
	if !(c.DeclinedShare >= 0 && c.DeclinedShare <= 1) {
		bad("DeclinedShare", c.DeclinedShare, "must be in 0..1")
	}
	if !(c.SoldOutShare >= 0 && c.SoldOutShare <= 1) {
		bad("SoldOutShare", c.SoldOutShare, "must be in 0..1")
	}
	if c.DeclinedShare+c.SoldOutShare > 1 {
		bad("SoldOutShare", c.SoldOutShare, fmt.Sprintf("and DeclinedShare %v add up to more than 1", c.DeclinedShare))
	}
	return errors.Join(errs...)
}

// FieldError is a field of Config with a value it cannot take.
type FieldError struct {
	Field string // Config's field, e.g. "Orders"
	Value any    // its value
	Want  string // what is wrong, e.g. "must be at least 1"
}

func (e *FieldError) Error() string { return fmt.Sprintf("load: %s %v: %s", e.Field, e.Value, e.Want) }

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Kind is the path an order is meant to take.
type Kind uint8

// Kinds of orders in the mix.
const (
	Happy Kind = iota + 1
	Declined
	SoldOut
)

// Result is the tally of a run.
type Result struct {
	// Planned counts the orders of each kind the run meant to place.
	Planned map[Kind]int
	// Confirmed and Cancelled orders were notified in time; Stuck ones
	// were placed but not notified within Config.Timeout; Failed ones
	// could not be placed (an HTTP error or answer), or were notified
	// while neither confirmed nor cancelled.
	Confirmed, Cancelled, Stuck, Failed int
	// FirstErr is the first placement or long-poll error, for Failed.
	FirstErr error
	Elapsed  time.Duration
	// Latency is placement (the POST sent) to notification (the notice
	// or the long-poll's answer received) of the notified orders.
	P50, P99, Max time.Duration
	// OrderIDs are the orders placed, in no particular order.
	OrderIDs []string
	// LastNotifiedAt is the latest notified_at (the order service's time
	// of recording a notification) among the notified orders.
	LastNotifiedAt time.Time
	// Notices says how the run learnt of the notifications: "stream" (GET
	// /orders/notified), "long-poll", or the stream then the long-poll,
	// with the reason.
	Notices string
}

// Completed is how many orders were notified.
func (r Result) Completed() int { return r.Confirmed + r.Cancelled }

// Rate is the completed orders per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Completed()) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	return fmt.Sprintf("%d confirmed, %d cancelled, %d stuck, %d failed in %.1fs: %.0f orders/s; placement to notification p50 %v, p99 %v, max %v",
		r.Confirmed, r.Cancelled, r.Stuck, r.Failed, r.Elapsed.Seconds(), r.Rate(),
		r.P50.Round(100*time.Microsecond), r.P99.Round(100*time.Microsecond), r.Max.Round(100*time.Microsecond))
}

// plan is one order to place.
type plan struct {
	kind Kind
	req  shop.PlaceRequest
}

func makePlans(cfg Config) []plan {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5851f42d4c957f2d))
	plans := make([]plan, cfg.Orders)
	for i := range plans {
		items := []shop.Item{{SKU: "apple", Quantity: 1 + rng.IntN(3), Price: 150}}
		if rng.IntN(2) == 0 {
			items = append(items, shop.Item{SKU: "pear", Quantity: 1 + rng.IntN(2), Price: 90})
		}
		p := plan{kind: Happy}
		method := "card"
		switch x := rng.Float64(); {
		case x < cfg.DeclinedShare:
			p.kind, method = Declined, cfg.DeclinedMethod
		case x < cfg.DeclinedShare+cfg.SoldOutShare:
			p.kind = SoldOut
			items = append(items, shop.Item{SKU: cfg.SoldOutSKU, Quantity: 1, Price: 200})
		}
		amount := 0
		for _, it := range items {
			amount += it.Quantity * it.Price
		}
		p.req = shop.PlaceRequest{Customer: fmt.Sprintf("customer-%d", rng.IntN(1000)), Items: items, Amount: amount, PaymentMethod: method}
		plans[i] = p
	}
	return plans
}

// Run places cfg.Orders orders and follows each to its notification. It
// returns the tally when every order is notified, stuck or failed, or
// when ctx ends (with ctx's error; the tally then covers what finished).
// Runs are independent: several may go at once.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.Client == nil {
		defer func() { cfg.Client.CloseIdleConnections() }() // the client setDefaults makes
	}
	cfg.setDefaults()
	plans := makePlans(cfg)
	r := &run{cfg: cfg, start: time.Now()}
	r.res.Notices = "long-poll"
	if !cfg.LongPoll {
		sctx, stop := context.WithCancel(ctx)
		n, err := openNotices(sctx, cfg)
		if err != nil {
			stop()
			r.res.Notices = fmt.Sprintf("long-poll (no stream: %v)", err)
		} else {
			r.notices = n
			defer func() {
				stop()
				<-n.done
			}()
		}
	}
	r.res.Planned = map[Kind]int{}
	for _, p := range plans {
		r.res.Planned[p.kind]++
	}
	work := make(chan plan)
	var wg sync.WaitGroup
	for range min(cfg.Concurrency, cfg.Orders) {
		wg.Go(func() {
			for p := range work {
				r.order(ctx, p)
			}
		})
	}
	progressDone := make(chan struct{})
	var pwg sync.WaitGroup
	if cfg.Progress != nil {
		pwg.Go(func() { r.progress(progressDone) })
	}
	r.feed(ctx, plans, work)
	close(work)
	wg.Wait()
	close(progressDone)
	pwg.Wait()
	return r.result(), ctx.Err()
}

// feed hands the plans to the workers, paced at cfg.Rate when set.
func (r *run) feed(ctx context.Context, plans []plan, work chan<- plan) {
	var timer *time.Timer
	for i, p := range plans {
		if r.cfg.Rate > 0 {
			at := r.start.Add(time.Duration(float64(i) / r.cfg.Rate * float64(time.Second)))
			if d := time.Until(at); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case work <- p:
		}
	}
}

// run is the state of one Run.
type run struct {
	cfg   Config
	start time.Time

	notices *notices // nil: long-poll

	mu        sync.Mutex
	res       Result
	latencies []time.Duration
}

func (r *run) record(f func(res *Result)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.res)
}

// order places one order and waits for its notification.
func (r *run) order(ctx context.Context, p plan) {
	start := time.Now()
	id, err := r.place(ctx, p.req)
	if err != nil {
		if ctx.Err() == nil {
			r.record(func(res *Result) {
				res.Failed++
				res.FirstErr = cmpOr(res.FirstErr, err)
			})
		}
		return
	}
	r.record(func(res *Result) { res.OrderIDs = append(res.OrderIDs, id) })
	deadline := start.Add(r.cfg.Timeout)
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			r.record(func(res *Result) { res.Stuck++ })
			return
		}
		o, err := r.next(ctx, id, min(remaining, 10*time.Second))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.record(func(res *Result) { res.FirstErr = cmpOr(res.FirstErr, err) })
			if !sleep(ctx, 100*time.Millisecond) {
				return
			}
		case o.NotifiedAt != nil:
			took := time.Since(start)
			r.mu.Lock()
			defer r.mu.Unlock()
			switch o.Status {
			case shop.Confirmed:
				r.res.Confirmed++
			case shop.Cancelled:
				r.res.Cancelled++
			default: // the shop's bug: told the customer before the end
				r.res.Failed++
				r.res.FirstErr = cmpOr(r.res.FirstErr, fmt.Errorf("order %s notified while %s", id, o.Status))
				return
			}
			r.latencies = append(r.latencies, took)
			if o.NotifiedAt.After(r.res.LastNotifiedAt) {
				r.res.LastNotifiedAt = *o.NotifiedAt
			}
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// place posts the order, retrying a failed connection with the same
// Idempotency-Key (so that a retry never places a second order).
func (r *run) place(ctx context.Context, req shop.PlaceRequest) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	key := uuid.Must(uuid.NewV7()).String()
	for attempt := 1; ; attempt++ {
		id, retry, err := r.post(ctx, body, key)
		if err == nil || !retry || attempt == 3 || !sleep(ctx, time.Duration(attempt)*100*time.Millisecond) {
			return id, err
		}
	}
}

// post sends one POST /orders; retry tells whether the failure is worth
// another attempt.
func (r *run) post(ctx context.Context, body []byte, key string) (id string, retry bool, err error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.URL+"/orders", bytes.NewReader(body))
	if err != nil {
		return "", false, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Idempotency-Key", key)
	resp, err := r.cfg.Client.Do(hreq)
	if err != nil {
		return "", true, fmt.Errorf("POST /orders: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", resp.StatusCode >= 500, fmt.Errorf("POST /orders: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	var o shop.Order
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || o.ID == "" {
		return "", false, fmt.Errorf("POST /orders: answer without an order id: %v", err)
	}
	return o.ID, false, nil
}

// wait long-polls for the order's notification, at most timeout.
func (r *run) wait(ctx context.Context, id string, timeout time.Duration) (shop.Order, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	timeout = max(timeout.Truncate(time.Millisecond), time.Millisecond)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/orders/%s?wait=notified&timeout=%v", r.cfg.URL, id, timeout), nil)
	if err != nil {
		return shop.Order{}, err
	}
	resp, err := r.cfg.Client.Do(hreq)
	if err != nil {
		return shop.Order{}, fmt.Errorf("GET /orders/%s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return shop.Order{}, fmt.Errorf("GET /orders/%s: %s: %s", id, resp.Status, bytes.TrimSpace(msg))
	}
	var o shop.Order
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		return shop.Order{}, fmt.Errorf("GET /orders/%s: %w", id, err)
	}
	return o, nil
}

// next waits up to timeout for order id's notification: for its notice
// while the stream lasts, else by long-poll. It returns the order (with
// NotifiedAt set once notified; as it is otherwise).
func (r *run) next(ctx context.Context, id string, timeout time.Duration) (shop.Order, error) {
	if r.notices == nil {
		return r.wait(ctx, id, timeout)
	}
	ch, stop, ok := r.notices.await(id)
	if !ok {
		return r.wait(ctx, id, timeout)
	}
	defer stop()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case nt := <-ch:
		return shop.Order{ID: id, Status: nt.Status, NotifiedAt: &nt.NotifiedAt}, nil
	case <-r.notices.lost:
		return r.wait(ctx, id, timeout) // the stream ended: this order's notice may be lost
	case <-t.C:
		// A notice dropped (maxEarly) or missed: ask for the order as it is.
		return r.wait(ctx, id, time.Millisecond)
	case <-ctx.Done():
		return shop.Order{}, ctx.Err()
	}
}

// result computes the tally so far.
func (r *run) result() Result {
	r.mu.Lock()
	res := r.res
	lat := slices.Clone(r.latencies)
	r.mu.Unlock()
	res.Planned = maps.Clone(res.Planned)
	res.OrderIDs = slices.Clone(res.OrderIDs)
	res.Elapsed = time.Since(r.start)
	if n := r.notices; n != nil {
		res.Notices = "stream"
		select {
		case <-n.lost:
			n.mu.Lock()
			if n.err != nil && !errors.Is(n.err, context.Canceled) {
				res.Notices = fmt.Sprintf("stream, then long-poll (%v)", n.err)
			}
			n.mu.Unlock()
		default:
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99, res.Max = percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1]
	}
	return res
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// progress writes a progress line every interval until done is closed.
func (r *run) progress(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	var last progressMark
	for {
		select {
		case <-done:
			if r.cfg.ProgressInPlace {
				fmt.Fprintln(r.cfg.Progress)
			}
			return
		case <-t.C:
			last = r.writeProgress(last)
		}
	}
}

// progressMark is where the previous progress line was: the orders
// completed then and the run's time.
type progressMark struct {
	completed int
	elapsed   time.Duration
}

// progressLine is a progress line: the bar, the orders ended of total,
// the rate over the whole run and since the previous line (the first
// seconds of a run, while the stack warms up, hold the whole run's rate
// down), the latencies, and the stuck and failed orders if any.
func progressLine(res Result, total int, last progressMark) string {
	done := res.Completed() + res.Stuck + res.Failed
	const width = 30
	filled := width * min(done, total) / max(total, 1)
	now := 0.0
	if d := res.Elapsed - last.elapsed; d > 0 {
		now = float64(res.Completed()-last.completed) / d.Seconds()
	}
	line := fmt.Sprintf("[%s%s] %d/%d  %.0f orders/s (now %.0f)  p50 %v  p99 %v",
		strings.Repeat("#", filled), strings.Repeat(" ", width-filled), done, total, res.Rate(), now,
		res.P50.Round(100*time.Microsecond), res.P99.Round(100*time.Microsecond))
	if res.Stuck+res.Failed > 0 {
		line += fmt.Sprintf("  stuck %d failed %d", res.Stuck, res.Failed)
	}
	return line
}

// writeProgress writes a progress line and returns where it was.
func (r *run) writeProgress(last progressMark) progressMark {
	res := r.result()
	line := progressLine(res, r.cfg.Orders, last)
	mark := progressMark{completed: res.Completed(), elapsed: res.Elapsed}
	if r.cfg.ProgressInPlace {
		fmt.Fprintf(r.cfg.Progress, "\r%-100s", line)
		return mark
	}
	fmt.Fprintln(r.cfg.Progress, line)
	return mark
}
