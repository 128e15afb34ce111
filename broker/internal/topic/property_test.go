package topic

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func randomWords(r *rand.Rand, alphabet []string, maxWords int) string {
	n := r.IntN(maxWords + 1)
	words := make([]string, n)
	for i := range words {
		words[i] = alphabet[r.IntN(len(alphabet))]
	}
	return strings.Join(words, ".")
}

var (
	patternAlphabet = []string{"a", "b", "", "*", "#"}
	keyAlphabet     = []string{"a", "b", ""}
)

func TestMatchAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		patterns := make([]string, 1+r.IntN(40))
		var tr Trie[int]
		for i := range patterns {
			patterns[i] = randomWords(r, patternAlphabet, 6)
			tr.Add(patterns[i], i)
		}
		for range 50 {
			key := randomWords(r, keyAlphabet, 7)
			if got, want := matches(&tr, key), refMatches(patterns, key); !slices.Equal(got, want) {
				t.Fatalf("round %d: key %q, patterns %q: got %v, want %v", round, key, patterns, got, want)
			}
		}
	}
}

type pair struct {
	pattern string
	v       int
}

// TestAddRemoveAgainstReference runs random Add and Remove calls against a
// map of pairs, checking results, Len and Match along the way.
func TestAddRemoveAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 100 {
		var tr Trie[int]
		ref := map[pair]bool{}
		for step := range 400 {
			p := pair{randomWords(r, patternAlphabet, 4), r.IntN(3)}
			remove := r.IntN(2) == 0
			got, want := apply(&tr, op{remove, p.pattern, p.v}), ref[p] == remove
			if got != want {
				t.Fatalf("round %d step %d: remove=%v %q %d = %v, want %v", round, step, remove, p.pattern, p.v, got, want)
			}
			ref[p] = !remove
			if !ref[p] {
				delete(ref, p)
			}
			if tr.Len() != len(ref) {
				t.Fatalf("round %d step %d: Len() = %d, want %d", round, step, tr.Len(), len(ref))
			}
		}
		checkMatchesPairs(t, &tr, ref, randomWords(r, keyAlphabet, 5))
	}
}

func checkMatchesPairs(t *testing.T, tr *Trie[int], ref map[pair]bool, key string) {
	t.Helper()
	want := []int{}
	for p := range ref {
		if refMatch(refWords(p.pattern), refWords(key)) {
			want = append(want, p.v)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if got := matches(tr, key); !slices.Equal(got, want) {
		t.Fatalf("Match(%q) = %v, want %v (pairs %v)", key, got, want, ref)
	}
}

// TestMatchManyHashNodes makes one Match enter more '#' nodes than the
// matcher tracks without allocating.
func TestMatchManyHashNodes(t *testing.T) {
	patterns := []string{"x"}
	for range 4 {
		var next []string
		for _, p := range patterns {
			next = append(next, "a."+p, "*."+p, "#."+p)
		}
		patterns = append(patterns, next...)
	}
	var tr Trie[int]
	for i, p := range patterns {
		tr.Add(p, i)
	}
	tests := []struct {
		give string
	}{
		{give: "a.a.a.x"},
		{give: "a.b.a.a.x"},
		{give: "a.a.a.a.a.a.x"},
		{give: "x"},
		{give: "a.a.a.y"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got, want := matches(&tr, tt.give), refMatches(patterns, tt.give); !slices.Equal(got, want) {
				t.Errorf("Match(%q) = %v, want %v", tt.give, got, want)
			}
		})
	}
}
