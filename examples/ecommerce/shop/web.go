package shop

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/troupehq/troupe/saga"
)

//go:embed web
var webFiles embed.FS

// DefaultJaegerUI is the Jaeger UI the live page links traces to when
// PageConfig.JaegerURL is empty (the compose stack's).
const DefaultJaegerUI = "http://localhost:16686"

// PageConfig configures the live page (Stack.LivePage).
type PageConfig struct {
	// JaegerURL is the Jaeger UI's base URL: an order's trace is at
	// JaegerURL/trace/<trace id>. DefaultJaegerUI when empty.
	JaegerURL string
	// Interval is how often each open page's event stream looks for
	// changes in the tracker; 500 ms when 0.
	Interval time.Duration
	// Limit bounds the orders listed; 50 when 0.
	Limit  int
	Logger *slog.Logger
}

// ParseJaegerURL checks a Jaeger UI base URL (absolute http or https,
// without query or fragment) and returns it without a trailing slash.
// Pure.
func ParseJaegerURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("jaeger UI URL %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("jaeger UI URL %q: want http(s)://host[:port][/path]", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// LivePage serves the order service's live page:
//
//	GET /  and /ui/             the page (HTML; its script and style under /ui/static/)
//	GET /ui/stream              server-sent events: "orders", the recent orders with
//	                            their saga's state, sent at once and on every change
//	GET /ui/orders/{id}         an order with its saga (its history) and trace link, JSON
//	GET /ui/orders/{id}/graph.svg the saga's graph, the current step highlighted
//
// The streams end when Close is called or the stack closes. Safe for
// concurrent use.
type LivePage struct {
	stack  *Stack
	cfg    PageConfig
	mux    *http.ServeMux
	index  []byte
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	orders map[string]orderSummary // what does not change, by order id
}

// orderSummary is what the page lists of an order besides its saga; it
// does not change, so it is read once.
type orderSummary struct {
	Customer string
	Amount   int
}

// PageRow is one order of the page's list: the order and where its saga
// is.
type PageRow struct {
	ID        string     `json:"id"`
	Customer  string     `json:"customer"`
	Amount    int        `json:"amount"`
	State     saga.State `json:"state"`
	Step      string     `json:"step,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// PageDetail is GET /ui/orders/{id}: the order, its saga instance with
// its history, and the link to its trace (empty when no entry carried a
// trace context).
type PageDetail struct {
	Order    Order         `json:"order"`
	Saga     saga.Instance `json:"saga"`
	TraceID  string        `json:"trace_id,omitempty"`
	TraceURL string        `json:"trace_url,omitempty"`
}

// LivePage returns the live page of this stack, or nil (and no error)
// unless it runs both the order service and the saga tracker (as
// `shop all` does). A bad JaegerURL is an error. Serve it at "GET /{$}"
// and "/ui/", and give its Close to http.Server.RegisterOnShutdown.
func (s *Stack) LivePage(cfg PageConfig) (*LivePage, error) {
	if s.Order == nil || s.Tracker == nil {
		return nil, nil
	}
	if cfg.JaegerURL == "" {
		cfg.JaegerURL = DefaultJaegerUI
	}
	jaeger, err := ParseJaegerURL(cfg.JaegerURL)
	if err != nil {
		return nil, err
	}
	cfg.JaegerURL = jaeger
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 50
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.ParseFS(webFiles, "web/index.html")
	if err != nil {
		return nil, fmt.Errorf("live page: %w", err)
	}
	var index bytes.Buffer
	if err := tmpl.Execute(&index, struct{ JaegerURL, Saga string }{jaeger, CheckoutSaga.Name}); err != nil {
		return nil, fmt.Errorf("live page: %w", err)
	}
	static, err := fs.Sub(webFiles, "web/static")
	if err != nil {
		return nil, fmt.Errorf("live page: %w", err)
	}
	p := &LivePage{stack: s, cfg: cfg, index: index.Bytes(), orders: map[string]orderSummary{}}
	p.ctx, p.cancel = context.WithCancel(s.runCtx)
	p.mux = http.NewServeMux()
	p.mux.HandleFunc("GET /{$}", p.serveIndex)
	p.mux.HandleFunc("GET /ui/{$}", p.serveIndex)
	p.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	p.mux.HandleFunc("GET /ui/stream", p.stream)
	p.mux.HandleFunc("GET /ui/orders/{id}", p.detail)
	p.mux.HandleFunc("GET /ui/orders/{id}/graph.svg", p.graph)
	return p, nil
}

// ServeHTTP serves the page's routes.
func (p *LivePage) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// Close ends the open event streams (for http.Server.RegisterOnShutdown:
// a server shutting down waits for its requests, and a stream would not
// end on its own). Idempotent.
func (p *LivePage) Close() { p.cancel() }

func (p *LivePage) serveIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(p.index)
}

// Rows returns the most recently updated orders (at most PageConfig.Limit)
// with their saga's state, as the stream sends them. Safe for concurrent
// use.
func (p *LivePage) Rows(ctx context.Context) ([]PageRow, error) {
	ins, err := p.stack.Tracker.Store().List(ctx, saga.Query{Saga: CheckoutSaga.Name, Limit: p.cfg.Limit})
	if err != nil {
		return nil, err
	}
	rows := make([]PageRow, 0, len(ins))
	keep := make(map[string]orderSummary, len(ins))
	for _, in := range ins {
		sum, err := p.summary(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		keep[in.ID] = sum
		rows = append(rows, PageRow{ID: in.ID, Customer: sum.Customer, Amount: sum.Amount, State: in.State, Step: in.Step,
			Reason: in.Reason, StartedAt: in.StartedAt, UpdatedAt: in.UpdatedAt})
	}
	p.mu.Lock()
	p.orders = keep // forget the orders no longer listed
	p.mu.Unlock()
	return rows, nil
}

// summary returns an order's customer and amount, read once.
func (p *LivePage) summary(ctx context.Context, id string) (orderSummary, error) {
	p.mu.Lock()
	sum, ok := p.orders[id]
	p.mu.Unlock()
	if ok {
		return sum, nil
	}
	o, err := p.stack.Order.Get(ctx, id)
	if errors.Is(err, ErrNoOrder) {
		return orderSummary{Customer: "?"}, nil // a saga without its order (another stack's)
	}
	if err != nil {
		return orderSummary{}, err
	}
	return orderSummary{Customer: o.Customer, Amount: o.Amount}, nil
}

// stream sends the list as an "orders" event now and whenever it changes,
// until the client goes, Close, or the stack closes.
func (p *LivePage) stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel)
	defer stop()
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	var last []byte
	for {
		rows, err := p.Rows(ctx)
		if err != nil && ctx.Err() == nil {
			p.cfg.Logger.WarnContext(ctx, "live page: list orders", slog.Any("error", err))
		}
		if err == nil {
			b, _ := json.Marshal(rows)
			if !bytes.Equal(b, last) {
				if _, err := fmt.Fprintf(w, "event: orders\ndata: %s\n\n", b); err != nil {
					return
				}
				if err := rc.Flush(); err != nil {
					return
				}
				last = b
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *LivePage) detail(w http.ResponseWriter, r *http.Request) {
	o, in, ok := p.load(w, r)
	if !ok {
		return
	}
	d := PageDetail{Order: o, Saga: in, TraceID: TraceIDOf(&CheckoutSaga, in)}
	if d.TraceID != "" {
		d.TraceURL = p.cfg.JaegerURL + "/trace/" + d.TraceID
	}
	writeJSON(w, http.StatusOK, d)
}

func (p *LivePage) graph(w http.ResponseWriter, r *http.Request) {
	_, in, ok := p.load(w, r)
	if !ok {
		return
	}
	var b bytes.Buffer
	if err := writeGraphSVG(&b, &CheckoutSaga, in); err != nil {
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b.Bytes())
}

// load reads an order and its saga, answering 404 or 500 itself.
func (p *LivePage) load(w http.ResponseWriter, r *http.Request) (Order, saga.Instance, bool) {
	id := r.PathValue("id")
	o, err := p.stack.Order.Get(r.Context(), id)
	if errors.Is(err, ErrNoOrder) {
		writeJSON(w, http.StatusNotFound, APIError{Error: "no order " + id})
		return Order{}, saga.Instance{}, false
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
		return Order{}, saga.Instance{}, false
	}
	in, err := p.stack.Tracker.Store().Get(r.Context(), CheckoutSaga.Name, id)
	if errors.Is(err, saga.ErrNotFound) {
		// Placed, but the tracker has not seen order.placed yet.
		in, err = saga.Instance{Saga: CheckoutSaga.Name, ID: id, State: saga.Running}, nil
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
		return Order{}, saga.Instance{}, false
	}
	return o, in, true
}

// TraceIDOf returns the trace of a saga instance: the trace id its Start
// event carried, else the first one of its history; "" when none did.
// Pure.
func TraceIDOf(s *saga.Saga, in saga.Instance) string {
	first := ""
	for _, e := range in.History {
		if e.TraceID == "" {
			continue
		}
		if e.Kind == saga.EventEntry && e.Event == s.Start {
			return e.TraceID
		}
		if first == "" {
			first = e.TraceID
		}
	}
	return first
}
