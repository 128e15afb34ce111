package saga

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/troupehq/troupe/internal/strictjson"
)

// HTTPHandler serves a store as JSON, for an operator's tools and pages:
//
//	GET  /sagas?state=&saga=&limit=      instances, most recently updated first
//	GET  /sagas/{id}[?saga=]             an instance and its history (a timeline)
//	POST /sagas/{id}/resume|skip|resolve an operator action; body {"actor": "...", "note": "..."}
//
// Errors are {"error": "..."}: 400 for a bad request (an unknown state, no
// actor), 404 for an unknown instance, 409 for an action that does not
// apply (not parked, already ended), 500 otherwise. Mount it where the
// paths fit (http.StripPrefix for another prefix). rd is the way to
// dead letters for resume (nil: resume answers 501). Safe for concurrent
// use.
func HTTPHandler(st *Store, rd Redriver, clock Clock) http.Handler {
	if clock == nil {
		clock = systemClock{}
	}
	h := &httpHandler{st: st, rd: rd, clock: clock}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sagas", h.list)
	mux.HandleFunc("GET /sagas/{id}", h.get)
	mux.HandleFunc("POST /sagas/{id}/{action}", h.act)
	return mux
}

type httpHandler struct {
	st    *Store
	rd    Redriver
	clock Clock
}

// ActionRequest is the body of an operator action.
type ActionRequest struct {
	Actor string `json:"actor"`
	Note  string `json:"note,omitempty"`
}

type httpError struct {
	Error string `json:"error"`
}

func (h *httpHandler) list(w http.ResponseWriter, r *http.Request) {
	q := Query{Saga: r.URL.Query().Get("saga"), State: State(r.URL.Query().Get("state"))}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeJSON(w, http.StatusBadRequest, httpError{"limit: want a positive number"})
			return
		}
		q.Limit = n
	}
	if q.State != "" && !slices.Contains(States, q.State) {
		writeJSON(w, http.StatusBadRequest, httpError{"unknown state " + strconv.Quote(string(q.State))})
		return
	}
	ins, err := h.st.List(r.Context(), q)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, httpError{err.Error()})
		return
	}
	if ins == nil {
		ins = []Instance{}
	}
	writeJSON(w, http.StatusOK, ins)
}

func (h *httpHandler) get(w http.ResponseWriter, r *http.Request) {
	in, err := h.st.Get(r.Context(), r.URL.Query().Get("saga"), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (h *httpHandler) act(w http.ResponseWriter, r *http.Request) {
	a := Action(r.PathValue("action"))
	if a != Resume && a != Skip && a != Resolve {
		writeJSON(w, http.StatusNotFound, httpError{"no action " + strconv.Quote(string(a)) + ": want resume, skip or resolve"})
		return
	}
	var req ActionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, httpError{"body: " + err.Error()})
		return
	}
	if err := strictjson.End(dec); err != nil {
		writeJSON(w, http.StatusBadRequest, httpError{"body: " + err.Error()})
		return
	}
	in, err := h.st.Act(r.Context(), r.URL.Query().Get("saga"), r.PathValue("id"), a, req.Actor, req.Note, h.clock.Now(), h.rd)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrNoActor):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotParked), errors.Is(err, ErrEnded):
		status = http.StatusConflict
	case errors.Is(err, ErrNoRedriver):
		status = http.StatusNotImplemented
	}
	writeJSON(w, status, httpError{err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
