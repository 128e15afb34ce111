package saga_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

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
