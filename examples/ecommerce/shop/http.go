package shop

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

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
//	                    header makes a retried request return the first order
//	GET  /orders/{id}   an order and its history
//
// Each request is a server span (otelhttp, continuing a traceparent the
// client sent): an order's trace starts at its POST, and the span carries
// the order id as troupe.saga_id. Safe for concurrent use.
func (s *OrderService) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /orders", otelhttp.NewHandler(http.HandlerFunc(s.place), "POST /orders"))
	mux.Handle("GET /orders/{id}", otelhttp.NewHandler(http.HandlerFunc(s.get), "GET /orders/{id}"))
	return mux
}

func (s *OrderService) place(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	var req PlaceRequest
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, APIError{Error: "body: " + err.Error()})
		return
	}
	o, created, err := s.Place(r.Context(), req, r.Header.Get("Idempotency-Key"))
	if fe, ok := errors.AsType[*FieldError](err); ok {
		writeJSON(w, http.StatusBadRequest, APIError{Error: fe.Error(), Field: fe.Field})
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
	o, err := s.Get(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNoOrder):
		writeJSON(w, http.StatusNotFound, APIError{Error: "no order " + r.PathValue("id")})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
	default:
		writeJSON(w, http.StatusOK, o)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
