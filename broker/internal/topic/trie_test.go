package topic

import (
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMatchRabbitMQTutorial(t *testing.T) {
	var tr Trie[string]
	tr.Add("*.orange.*", "Q1")
	tr.Add("*.*.rabbit", "Q2")
	tr.Add("lazy.#", "Q2")

	tests := []struct {
		give string
		want []string
	}{
		{give: "quick.orange.rabbit", want: []string{"Q1", "Q2"}},
		{give: "lazy.orange.elephant", want: []string{"Q1", "Q2"}},
		{give: "quick.orange.fox", want: []string{"Q1"}},
		{give: "lazy.brown.fox", want: []string{"Q2"}},
		{give: "lazy.pink.rabbit", want: []string{"Q2"}},
		{give: "quick.brown.fox", want: []string{}},
		{give: "orange", want: []string{}},
		{give: "quick.orange.male.rabbit", want: []string{}},
		{give: "lazy.orange.male.rabbit", want: []string{"Q2"}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := matches(&tr, tt.give); !slices.Equal(got, tt.want) {
				t.Errorf("Match(%q) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

func TestMatchSinglePattern(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		give    string
		want    bool
	}{
		{"empty matches empty", "", "", true},
		{"empty vs word", "", "a", false},
		{"empty vs dot", "", ".", false},
		{"hash vs empty", "#", "", true},
		{"hash vs word", "#", "a", true},
		{"hash vs words", "#", "a.b.c", true},
		{"hash vs dot", "#", ".", true},
		{"star vs empty key has no word", "*", "", false},
		{"star vs word", "*", "a", true},
		{"star vs two words", "*", "a.b", false},
		{"star vs dot is two words", "*", ".", false},
		{"two stars vs dot", "*.*", ".", true},
		{"star vs literal star", "*", "*", true},
		{"literal vs key star", "a", "*", false},
		{"hash vs key hash", "#", "#", true},
		{"literal vs key hash", "a", "#", false},
		{"inner empty word", "a..b", "a..b", true},
		{"star on inner empty word", "a.*.b", "a..b", true},
		{"missing inner empty word", "a.b", "a..b", false},
		{"extra inner empty word", "a..b", "a.b", false},
		{"leading dot", ".a", ".a", true},
		{"star on leading empty word", "*.a", ".a", true},
		{"leading dot missing", "a", ".a", false},
		{"trailing dot", "a.", "a.", true},
		{"star on trailing empty word", "a.*", "a.", true},
		{"trailing dot vs none", "a.", "a", false},
		{"prefix hash zero words", "a.#", "a", true},
		{"prefix hash empty word", "a.#", "a.", true},
		{"prefix hash many words", "a.#", "a.b.c.d", true},
		{"prefix hash is word aligned", "a.#", "ab", false},
		{"hash around hit", "#.a.#", "x.a.y", true},
		{"hash around alone", "#.a.#", "a", true},
		{"hash around miss", "#.a.#", "x.y", false},
		{"hash hash zero", "a.#.#.b", "a.b", true},
		{"hash hash many", "a.#.#.b", "a.x.y.b", true},
		{"hash hash miss", "a.#.#.b", "a.x", false},
		{"many hashes vs empty", "#.#.#.#.#", "", true},
		{"many hashes vs words", "#.#.#.#.#", "a.b", true},
		{"hash star vs empty", "#.*", "", false},
		{"hash star vs word", "#.*", "a", true},
		{"star hash vs empty", "*.#", "", false},
		{"star hash vs word", "*.#", "a", true},
		{"hash dot vs trailing empty", "#.", "a.", true},
		{"hash dot vs empty key", "#.", "", false},
		{"hash dot vs dot", "#.", ".", true},
		{"hash dot vs word", "#.", "a", false},
		{"case sensitive", "A", "a", false},
		{"star hash star", "a.*.#.*", "a.b.c", true},
		{"star hash star too short", "a.*.#.*", "a.b", false},
		{"hashes then literal", "#.#.a", "a", true},
		{"suffix", "#.a", "x.y.a", true},
		{"suffix miss", "#.a", "x.a.y", false},
		{"bytes not runes", "é", "é", true},
		{"word boundary", "ab", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Trie[int]
			tr.Add(tt.pattern, 1)
			got := len(matches(&tr, tt.give)) == 1
			if got != tt.want {
				t.Errorf("pattern %q, key %q: match = %v, want %v", tt.pattern, tt.give, got, tt.want)
			}
			if ref := refMatch(refWords(tt.pattern), refWords(tt.give)); ref != tt.want {
				t.Errorf("pattern %q, key %q: reference = %v, want %v", tt.pattern, tt.give, ref, tt.want)
			}
		})
	}
}

type op struct {
	remove  bool
	pattern string
	v       int
}

func add(p string, v int) op    { return op{pattern: p, v: v} }
func remove(p string, v int) op { return op{remove: true, pattern: p, v: v} }

func apply(tr *Trie[int], o op) bool {
	if o.remove {
		return tr.Remove(o.pattern, o.v)
	}
	return tr.Add(o.pattern, o.v)
}

func TestBookkeeping(t *testing.T) {
	tests := []struct {
		name      string
		give      []op
		want      []bool
		wantLen   int
		key       string
		wantMatch []int
	}{
		{
			name:      "duplicate add",
			give:      []op{add("a.b", 1), add("a.b", 1), add("a.b", 2)},
			want:      []bool{true, false, true},
			wantLen:   2,
			key:       "a.b",
			wantMatch: []int{1, 2},
		},
		{
			name:      "remove absent",
			give:      []op{remove("a", 1), add("a", 1), remove("a", 2), remove("b", 1), remove("a.b", 1), remove("*", 1)},
			want:      []bool{false, true, false, false, false, false},
			wantLen:   1,
			key:       "a",
			wantMatch: []int{1},
		},
		{
			name:      "remove twice",
			give:      []op{add("a.*", 1), remove("a.*", 1), remove("a.*", 1)},
			want:      []bool{true, true, false},
			wantLen:   0,
			key:       "a.b",
			wantMatch: []int{},
		},
		{
			name:      "collapsed patterns are distinct bindings",
			give:      []op{add("#", 1), add("#.#", 1), add("#.#.#", 1), add("#.#", 1), remove("#", 1), remove("#", 1)},
			want:      []bool{true, true, true, false, true, false},
			wantLen:   2,
			key:       "x",
			wantMatch: []int{1},
		},
		{
			name:      "alias removal keeps canonical",
			give:      []op{add("a.#.#.b", 1), add("a.#.b", 1), remove("a.#.#.b", 1), remove("a.#.#.b", 1), remove("a.#.#.#.b", 1)},
			want:      []bool{true, true, true, false, false},
			wantLen:   1,
			key:       "a.x.b",
			wantMatch: []int{1},
		},
		{
			name:      "removing all aliases unbinds",
			give:      []op{add("#.#", 1), add("#.#.#", 1), remove("#.#.#", 1), remove("#.#", 1)},
			want:      []bool{true, true, true, true},
			wantLen:   0,
			key:       "x",
			wantMatch: []int{},
		},
		{
			name:      "empty and dotted patterns are distinct",
			give:      []op{add("", 1), add(".", 1), add("..", 1), add("", 1)},
			want:      []bool{true, true, true, false},
			wantLen:   3,
			key:       ".",
			wantMatch: []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Trie[int]
			got := make([]bool, 0, len(tt.give))
			for _, o := range tt.give {
				got = append(got, apply(&tr, o))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("results = %v, want %v", got, tt.want)
			}
			if tr.Len() != tt.wantLen {
				t.Errorf("Len() = %d, want %d", tr.Len(), tt.wantLen)
			}
			if m := matches(&tr, tt.key); !slices.Equal(m, tt.wantMatch) {
				t.Errorf("Match(%q) = %v, want %v", tt.key, m, tt.wantMatch)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name      string
		give      []string
		remove    []string
		wantNodes int
	}{
		{"all removed", []string{"a.b.c", "a.*.#", "#.#.x", "", ".", "a..", "*"}, []string{"a.b.c", "a.*.#", "#.#.x", "", ".", "a..", "*"}, 1},
		{"sibling kept", []string{"a.b.c", "a.x"}, []string{"a.b.c"}, 3},
		{"prefix kept", []string{"a.b.c", "a.b"}, []string{"a.b.c"}, 3},
		{"longer kept", []string{"a.b.c", "a.b"}, []string{"a.b"}, 4},
		{"wildcards kept", []string{"*.#.a", "*.#"}, []string{"*.#.a"}, 3},
		{"collapsed removed", []string{"#.#.#", "a.#.#"}, []string{"#.#.#", "a.#.#"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Trie[int]
			for _, p := range tt.give {
				tr.Add(p, 7)
			}
			for _, p := range tt.remove {
				tr.Remove(p, 7)
			}
			if got := countNodes(&tr.root); got != tt.wantNodes {
				t.Errorf("nodes = %d, want %d", got, tt.wantNodes)
			}
		})
	}
}

func TestRemoveAllRestoresZeroValue(t *testing.T) {
	patterns := []string{"a.b.c", "a.*.#", "#.#.x", "", ".", "a..", "*", "#", "#.#", "x.#.#.#.y", "a.b"}
	var tr Trie[int]
	for i, p := range patterns {
		tr.Add(p, i%3)
		tr.Add(p, 10+i)
	}
	for i, p := range patterns {
		tr.Remove(p, i%3)
		tr.Remove(p, 10+i)
	}
	if !reflect.DeepEqual(tr, Trie[int]{}) {
		t.Errorf("after removing all: %+v, want the zero Trie", tr)
	}
}

func TestNilAndZero(t *testing.T) {
	var nilTrie *Trie[int]
	nilTrie.Match("a", func(int) { t.Error("nil Trie matched") })
	if nilTrie.Len() != 0 || nilTrie.Remove("a", 1) {
		t.Error("nil Trie is not empty")
	}
	var tr Trie[int]
	tr.Add("#", 1)
	tr.Match("a", nil) // must not panic
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tr := benchTrie(10_000)
	n := 0
	fn := func(dest) { n++ }
	allocs := testing.AllocsPerRun(100, func() { tr.Match(benchKey, fn) })
	if allocs != 0 {
		t.Errorf("Match allocates %v times per call, want 0", allocs)
	}
	if n == 0 {
		t.Error("benchmark key matched nothing")
	}
}

// TestMatchManyHashesIsPolynomial would not finish if Match tried every way
// of splitting the key among the '#' words.
func TestMatchManyHashesIsPolynomial(t *testing.T) {
	var tr Trie[int]
	tr.Add("#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.b", 1)
	tr.Add(strings.Repeat("#.", 500)+"#", 2)
	tr.Add(strings.Repeat("*.#.", 50)+"b", 3)
	key := strings.Repeat("a.", 2000) + "c"
	start := time.Now()
	got := matches(&tr, key)
	if !slices.Equal(got, []int{2}) {
		t.Errorf("Match = %v, want [2]", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Match took %v", d)
	}
}

func TestConcurrentMatch(t *testing.T) {
	tr := benchTrie(1_000)
	want := matchesDest(tr, benchKey)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := matchesDest(tr, benchKey); !slices.Equal(got, want) {
					t.Errorf("concurrent Match = %v, want %v", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func matchesDest(tr *Trie[dest], key string) []dest {
	var got []dest
	tr.Match(key, func(d dest) { got = append(got, d) })
	slices.Sort(got)
	return slices.Compact(got)
}
