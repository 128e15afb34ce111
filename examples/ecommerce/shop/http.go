package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/internal/strictjson"
	"github.com/troupehq/troupe/tracing"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// APIError is the JSON body of every error answer; Field names the request
// field at fault, when one is.
type APIError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// HTTPHandler serves the order API:
//
//	POST /orders        place an order (JSON PlaceRequest); an Idempotency-Key
//	                    header (at most 255 bytes) makes a retried request
//	                    return the first order; the key with another request
//	                    is a 422
//	GET  /orders/{id}   an order and its history; with ?wait=notified (and
//	                    &timeout=10s, at most MaxWait) it long-polls: it answers
//	                    once the customer was told (notified_at set) or when
//	                    the timeout ends (notified_at absent)
//	GET  /orders/notified
//	                    server-sent events: a "notified" event (a Notice) per
//	                    order whose customer is told from then on
//
// Each request is a server span (otelhttp, continuing a traceparent the
// client sent): an order's trace starts at its POST, and the span carries
// the order id as troupe.saga_id. Safe for concurrent use.
func (s *OrderService) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /orders", otelhttp.NewHandler(http.HandlerFunc(s.place), "POST /orders"))
	mux.Handle("GET /orders/{id}", otelhttp.NewHandler(http.HandlerFunc(s.get), "GET /orders/{id}"))
	mux.HandleFunc("GET /orders/notified", s.streamNotified) // no span: it lasts as long as its client
	return mux
}

func (s *OrderService) place(w http.ResponseWriter, r *http.Request) {
	req, err := DecodePlaceRequest(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, APIError{Error: "body: " + err.Error()})
		return
	}
	o, created, err := s.Place(r.Context(), req, r.Header.Get("Idempotency-Key"))
	if fe, ok := errors.AsType[*FieldError](err); ok {
		writeJSON(w, http.StatusBadRequest, APIError{Error: fe.Error(), Field: fe.Field})
		return
	}
	if ke, ok := errors.AsType[*KeyReusedError](err); ok {
		w.Header().Set("Location", "/orders/"+ke.OrderID)
		writeJSON(w, http.StatusUnprocessableEntity, APIError{Error: ke.Error(), Field: "Idempotency-Key"})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
		return
	}
	trace.SpanFromContext(r.Context()).SetAttributes(tracing.SagaIDKey.String(o.ID))
	w.Header().Set("Location", "/orders/"+o.ID)
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, o)
}

func (s *OrderService) get(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, APIError{Error: err.Error()})
		return
	}
	var o Order
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		o, err = s.WaitNotified(ctx, r.PathValue("id"))
	} else {
		o, err = s.Get(r.Context(), r.PathValue("id"))
	}
	switch {
	case errors.Is(err, ErrNoOrder):
		writeJSON(w, http.StatusNotFound, APIError{Error: "no order " + clip(r.PathValue("id"))})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
	default:
		writeJSON(w, http.StatusOK, o)
	}
}

// clip shortens what a client sent, for an error that quotes it.
func clip(s string) string {
	const most = 100
	if len(s) <= most {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(s[:most], ""), len(s))
}

// parseWait reads ?wait=notified&timeout=D; 0 without wait.
func parseWait(r *http.Request) (time.Duration, error) {
	q := r.URL.Query()
	switch q.Get("wait") {
	case "":
		if q.Has("timeout") {
			return 0, errors.New("timeout: only with wait=notified")
		}
		return 0, nil
	case "notified":
	default:
		return 0, fmt.Errorf("wait: %q is not \"notified\"", q.Get("wait"))
	}
	if !q.Has("timeout") {
		return 10 * time.Second, nil
	}
	d, err := time.ParseDuration(q.Get("timeout"))
	if err != nil || d <= 0 || d > MaxWait {
		return 0, fmt.Errorf("timeout: %q is not a duration in (0, %v]", q.Get("timeout"), MaxWait)
	}
	return d, nil
}

// DecodePlaceRequest reads the body of POST /orders strictly: one JSON
// object, no field the request does not have, nothing after it. It does
// not validate the request (PlaceRequest.Validate does).
func DecodePlaceRequest(body io.Reader) (PlaceRequest, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req PlaceRequest
	if err := dec.Decode(&req); err != nil {
		return PlaceRequest{}, err
	}
	if err := strictjson.End(dec); err != nil {
		return PlaceRequest{}, err
	}
	return req, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
