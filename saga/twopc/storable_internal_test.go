package twopc

import "testing"

func TestStorable(t *testing.T) {
	for give, want := range map[string]string{
		"out of stock":      "out of stock",
		"bad \xff\xfe byte": "bad \ufffd\ufffd byte",
		"nul\x00here":       "nul\ufffdhere",
		"é ok":              "é ok",
	} {
		if got := storable(give); got != want {
			t.Errorf("storable(%q) = %q, want %q", give, got, want)
		}
		m := Message{Kind: KindVote, GID: "g", From: "p", To: "c", Vote: No, Reason: storable(give)}
		if err := m.Validate(); err != nil {
			t.Errorf("a vote with the reason storable(%q): %v", give, err)
		}
	}
}
