package strictjson_test

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/troupehq/troupe/internal/strictjson"
)

func TestEnd(t *testing.T) {
	tests := []struct {
		give string
		want error
	}{
		{`{"a":1}`, nil},
		{"{\"a\":1} \n\t ", nil},
		{`{"a":1}]`, strictjson.ErrTrailingData},
		{`{"a":1}}`, strictjson.ErrTrailingData},
		{`{"a":1} {"a":2}`, strictjson.ErrTrailingData},
		{`{"a":1}0`, strictjson.ErrTrailingData},
		{`{"a":1} x`, strictjson.ErrTrailingData},
		{`{"a":1},`, strictjson.ErrTrailingData},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(tt.give))
			var v map[string]int
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if err := strictjson.End(dec); !errors.Is(err, tt.want) {
				t.Fatalf("End = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestEndReadError: a reader's failure after the value is its own error,
// not trailing data.
func TestEndReadError(t *testing.T) {
	boom := errors.New("boom")
	dec := json.NewDecoder(iotest.OneByteReader(io.MultiReader(strings.NewReader(`{"a":1}`), iotest.ErrReader(boom))))
	var v map[string]int
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	if err := strictjson.End(dec); !errors.Is(err, boom) {
		t.Fatalf("End = %v, want %v", err, boom)
	}
}
