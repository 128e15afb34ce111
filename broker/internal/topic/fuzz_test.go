package topic

import (
	"slices"
	"strings"
	"testing"
)

// Bounds that keep the exponential reference matcher fast.
const (
	fuzzMaxLen    = 48
	fuzzMaxHashes = 5
)

// fuzzPatterns splits the fuzzed text into at most 4 newline-separated
// patterns, reporting false if the input is too big for the reference.
func fuzzPatterns(text string) ([]string, bool) {
	if len(text) > fuzzMaxLen || strings.Count(text, "#") > fuzzMaxHashes {
		return nil, false
	}
	ps := strings.Split(text, "\n")
	return ps, len(ps) <= 4
}

func FuzzMatch(f *testing.F) {
	f.Add("*.orange.*\n*.*.rabbit\nlazy.#", "quick.orange.rabbit")
	f.Add("*.orange.*\n*.*.rabbit\nlazy.#", "lazy.orange.male.rabbit")
	f.Add("#.a.#\na.#.#.b", "x.a.y.b")
	f.Add("a..b\n*.*\n.a", "a..b")
	f.Add("#\n*\n", "")
	f.Add("#.\na.*", "a.")
	f.Add("#.#.#.#.#", "a.b.c")
	f.Fuzz(func(t *testing.T, text, key string) {
		patterns, ok := fuzzPatterns(text)
		if !ok || len(key) > fuzzMaxLen {
			t.Skip()
		}
		var tr Trie[int]
		for i, p := range patterns {
			tr.Add(p, i)
		}
		if got, want := matches(&tr, key), refMatches(patterns, key); !slices.Equal(got, want) {
			t.Errorf("patterns %q, key %q: got %v, want %v", patterns, key, got, want)
		}
	})
}

func FuzzAddRemove(f *testing.F) {
	f.Add("a.b\n#.#\n#\n\n*.a.#.#")
	f.Add("a.b\na.b\n.\n..")
	f.Add("#.#.#\n#.#\n#")
	f.Fuzz(func(t *testing.T, text string) {
		patterns := strings.Split(text, "\n")
		var tr Trie[int]
		added := map[pair]bool{}
		for i, p := range patterns {
			k := pair{p, i % 2}
			if got := tr.Add(p, k.v); got == added[k] {
				t.Fatalf("Add(%q, %d) = %v, already present %v", p, k.v, got, added[k])
			}
			added[k] = true
		}
		if tr.Len() != len(added) {
			t.Fatalf("Len() = %d, want %d", tr.Len(), len(added))
		}
		for i, p := range slices.Backward(patterns) {
			k := pair{p, i % 2}
			if got := tr.Remove(p, k.v); got != added[k] {
				t.Fatalf("Remove(%q, %d) = %v, want %v", p, k.v, got, added[k])
			}
			delete(added, k)
		}
		if tr.Len() != 0 || countNodes(&tr.root) != 1 || tr.aliases != nil || !tr.root.empty() || tr.root.vals != nil {
			t.Fatalf("trie not empty after removing all: len %d, %d nodes", tr.Len(), countNodes(&tr.root))
		}
	})
}
