package storetext_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/storetext"
)

func TestStorable(t *testing.T) {
	for give, want := range map[string]string{
		"out of stock":      "out of stock",
		"bad \xff\xfe byte": "bad \ufffd byte",
		"nul\x00here":       "nul\ufffdhere",
		"\x00\x00":          "\ufffd\ufffd",
		"é ok":              "é ok",
		"":                  "",
	} {
		got := storetext.Storable(give)
		if got != want {
			t.Errorf("Storable(%q) = %q, want %q", give, got, want)
		}
		if !storetext.Keepable(got) {
			t.Errorf("Storable(%q) = %q is not keepable", give, got)
		}
		if storetext.Keepable(give) != (got == give) {
			t.Errorf("Keepable(%q) = %v, but Storable changed it to %q", give, storetext.Keepable(give), got)
		}
	}
}
