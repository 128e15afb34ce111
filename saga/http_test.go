package saga_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/saga"
)

func TestHTTPHandler(t *testing.T) {
	r := newRig(t, "sqlite:"+t.TempDir()+"/tracker.db", "")
	r.send("h1", "order.placed", "payment.captured", "inventory.reserved", "order.confirmed")
	r.send("h2", "order.placed", "payment.captured", "inventory.failed")
	r.publish(r.deadLetter("h2", "payment", "inventory.failed", "refund gateway down"))
	r.await("h1", saga.Completed, "confirm", 4)
	r.await("h2", saga.Failed, "charge", 4)
	var redriven []string
	rd := func(_ context.Context, e saga.Entry, actor string, _ time.Time) error {
		redriven = append(redriven, e.CausationID+" by "+actor)
		return nil
	}
	srv := httptest.NewServer(saga.HTTPHandler(r.tk.Store(), rd, r.clock))
	defer srv.Close()
	call := func(method, path, body string, wantStatus int, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != wantStatus {
			var e map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&e)
			t.Fatalf("%s %s: status %d (%v), want %d", method, path, resp.StatusCode, e, wantStatus)
		}
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	var list []saga.Instance
	call("GET", "/sagas", "", 200, &list)
	if len(list) != 2 {
		t.Errorf("GET /sagas: %d instances", len(list))
	}
	call("GET", "/sagas?state=failed", "", 200, &list)
	if len(list) != 1 || list[0].ID != "h2" || list[0].Reason != "refund gateway down" || list[0].History != nil {
		t.Errorf("GET /sagas?state=failed = %+v", list)
	}
	var in saga.Instance
	call("GET", "/sagas/h1", "", 200, &in)
	if in.State != saga.Completed || len(in.History) != 4 || in.History[0].Event != "order.placed" {
		t.Errorf("GET /sagas/h1 = %+v", in)
	}
	call("GET", "/sagas/none", "", 404, nil)
	call("GET", "/sagas?state=lost", "", 400, nil)
	call("POST", "/sagas/h2/resume", `{}`, 400, nil)
	call("POST", "/sagas/h2/resume", `{"actor": "alice", "note": "gateway back"}`, 200, &in)
	if in.State != saga.Compensating || len(redriven) != 1 || in.History[len(in.History)-1].Actor != "alice" {
		t.Errorf("after resume: %+v, redriven %v", in, redriven)
	}
	call("POST", "/sagas/h2/skip", `{"actor": "alice"}`, 409, nil)
	call("POST", "/sagas/h1/resolve", `{"actor": "alice"}`, 409, nil)
	call("POST", "/sagas/h2/explode", `{"actor": "alice"}`, 404, nil)
	call("POST", "/sagas/h2/resolve", `{"actor": "bob", "unknown": 1}`, 400, nil)
	call("POST", "/sagas/h2/resolve", `{"actor": "bob"}`, 200, &in)
	if in.State != saga.Resolved {
		t.Errorf("after resolve: %s", in.State)
	}
	noRedrive := httptest.NewServer(saga.HTTPHandler(r.tk.Store(), nil, nil))
	defer noRedrive.Close()
	resp, err := http.Post(noRedrive.URL+"/sagas/h2/resume", "application/json", strings.NewReader(`{"actor": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("resume without a redriver: %d", resp.StatusCode)
	}
}
