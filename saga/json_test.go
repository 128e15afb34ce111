package saga_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/saga"
)

func TestJSONRoundTrip(t *testing.T) {
	for _, s := range []*saga.Saga{trip(), signup()} {
		b, err := s.MarshalIndent()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), s.Name+".saga.json")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := saga.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("read back\n got %+v\nwant %+v", got, s)
		}
	}
}

func TestParseJSONRejects(t *testing.T) {
	valid, err := trip().MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, give, want string
	}{
		{"not json", `{"name":`, "unexpected EOF"},
		{"unknown field", `{"name": "x", "stepz": []}`, `unknown field "stepz"`},
		{"trailing data", string(valid) + `{}`, "data after"},
		{"a stray brace after it", string(valid) + `}`, "data after"},
		{"wrong type", `{"name": 1}`, "cannot unmarshal"},
		{"invalid declaration", strings.Replace(string(valid), `"no_compensation": "last step"`, `"no_compensation": ""`, 1),
			"saga trip: step car: uncompensated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := saga.ParseJSON([]byte(tt.give))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := saga.ReadFile(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestJSONDeadlines(t *testing.T) {
	s := saga.Saga{Name: "s", Start: "a.started", Deadline: 2 * time.Minute, Steps: []saga.Step{
		{Name: "one", Service: "x", Success: "a.started", NoCompensation: "first"},
		{Name: "two", Service: "y", Trigger: "a.started", Success: "a.done", NoCompensation: "last", Deadline: 1500 * time.Millisecond},
	}, Completed: []string{"a.done"}}
	b, err := s.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"deadline": "2m0s"`) || !strings.Contains(string(b), `"deadline": "1.5s"`) {
		t.Fatalf("deadlines not written as durations:\n%s", b)
	}
	back, err := saga.ParseJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*back, s) {
		t.Fatalf("read back %+v, want %+v", back, s)
	}
	for _, bad := range []string{`"deadline": "soon"`, `"deadline": 5`} {
		if _, err := saga.ParseJSON([]byte(strings.Replace(string(b), `"deadline": "2m0s"`, bad, 1))); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := saga.ParseJSON([]byte(strings.Replace(string(b), `"deadline": "1.5s"`, `"deadline": "1.5s", "colour": "red"`, 1))); err == nil {
		t.Error("unknown field in a step accepted")
	}
}

// FuzzParseJSON: a declaration file is untrusted input. ParseJSON refuses
// what it cannot load with an error, never a panic; what it loads writes
// back to the same declaration; and deriving the status of any history of
// its events does not panic either.
func FuzzParseJSON(f *testing.F) {
	for _, s := range []*saga.Saga{trip(), signup(), checkout()} {
		b, err := s.MarshalIndent()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if b, err := os.ReadFile("../examples/ecommerce/checkout.saga.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"name":"x","start":"a.b","steps":[{"name":"s","trigger":"a.b","success":"c.d","deadline":"-1s"}]}`))
	f.Add([]byte(`{"name":"x"} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := saga.ParseJSON(data)
		if err != nil {
			if s != nil {
				t.Fatalf("a declaration and an error: %v", err)
			}
			return
		}
		b, err := s.MarshalIndent()
		if err != nil {
			t.Fatalf("loaded but cannot write back: %v", err)
		}
		again, err := saga.ParseJSON(b)
		if err != nil {
			t.Fatalf("written back but refused: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("read back differs\n got %+v\nwant %+v", again, s)
		}
		var history []saga.Entry
		for i, ev := range s.Events() {
			history = append(history, saga.Entry{Seq: int64(i + 1), Kind: saga.EventEntry, Event: ev, MessageID: ev})
			saga.Derive(s, history)
		}
	})
}
