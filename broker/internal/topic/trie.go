package topic

import (
	"slices"
	"strings"
)

// Trie holds topic bindings: a set of (pattern, value) pairs. The zero value
// is an empty Trie ready to use.
//
// A Trie is not safe for concurrent mutation: Add and Remove must not run
// concurrently with each other or with Match, so the caller guards them with
// its own lock. Any number of Match and Len calls may run concurrently when
// no mutation is in progress, because they do not modify the Trie.
type Trie[V comparable] struct {
	root node[V]
	n    int
	// aliases holds the (pattern, value) pairs whose pattern has a run of
	// several '#' words, which Add collapses to a single '#'. The pairs
	// whose pattern needs no collapsing are recorded by refs.exact alone.
	aliases map[alias[V]]struct{}
}

// node is a trie node: the words of a pattern label the path to it.
type node[V comparable] struct {
	children map[string]*node[V] // literal words
	star     *node[V]            // the word "*"
	hash     *node[V]            // the word "#"; a hash node never has a hash child
	vals     map[V]refs          // values bound by the patterns ending here
	list     []V                 // the keys of vals, for Match to iterate without a map iterator
}

// refs records which patterns bind one value at one node.
type refs struct {
	exact   bool // bound by the canonical pattern, which has no "#.#"
	aliases int  // number of bound patterns that collapse to the canonical one
}

type alias[V comparable] struct {
	pattern string
	v       V
}

// step is one edge of a path from the root: parent's child for word.
type step[V comparable] struct {
	parent *node[V]
	word   string
}

// Add binds v to pattern and reports whether the pair was new: it returns
// false, changing nothing, if (pattern, v) was already present. Patterns
// that differ only by repeated '#' words ("#" and "#.#") match the same keys
// but are distinct bindings. Add must not run concurrently with any other
// method, and panics only if t is nil or v is an interface holding an
// incomparable value.
func (t *Trie[V]) Add(pattern string, v V) bool {
	it := newPatternIter(pattern)
	n := &t.root
	for w, ok := it.next(); ok; w, ok = it.next() {
		n = n.addChild(w)
	}
	r, existed := n.vals[v]
	if it.collapsed {
		if _, dup := t.aliases[alias[V]{pattern, v}]; dup {
			return false
		}
		if t.aliases == nil {
			t.aliases = make(map[alias[V]]struct{})
		}
		t.aliases[alias[V]{strings.Clone(pattern), v}] = struct{}{}
		r.aliases++
	} else {
		if r.exact {
			return false
		}
		r.exact = true
	}
	if n.vals == nil {
		n.vals = make(map[V]refs)
	}
	n.vals[v] = r
	if !existed {
		n.list = append(n.list, v)
	}
	t.n++
	return true
}

// Remove unbinds v from pattern and reports whether the pair was present. It
// prunes the nodes left empty so that their memory can be reclaimed; once
// every pair is removed the Trie is back to its zero value. Remove must not
// run concurrently with any other method. A nil Trie is empty.
func (t *Trie[V]) Remove(pattern string, v V) bool {
	if t == nil {
		return false
	}
	var buf [16]step[V]
	path := buf[:0]
	it := newPatternIter(pattern)
	n := &t.root
	for w, ok := it.next(); ok; w, ok = it.next() {
		c := n.child(w)
		if c == nil {
			return false
		}
		path = append(path, step[V]{n, w})
		n = c
	}
	r, ok := n.vals[v]
	if !ok || !t.unref(&r, pattern, v, it.collapsed) {
		return false
	}
	if r.exact || r.aliases > 0 {
		n.vals[v] = r
	} else {
		delete(n.vals, v)
		if i := slices.Index(n.list, v); i >= 0 {
			n.list = slices.Delete(n.list, i, i+1)
		}
		if len(n.list) == 0 {
			n.list = nil
		}
	}
	t.n--
	prune(path, n)
	return true
}

// unref drops pattern's reference to v from r, reporting whether it was there.
func (t *Trie[V]) unref(r *refs, pattern string, v V, collapsed bool) bool {
	if !collapsed {
		ok := r.exact
		r.exact = false
		return ok
	}
	k := alias[V]{pattern, v}
	if _, ok := t.aliases[k]; !ok {
		return false
	}
	delete(t.aliases, k)
	if len(t.aliases) == 0 {
		t.aliases = nil // a map never shrinks; drop it to return its memory
	}
	r.aliases--
	return true
}

// prune detaches n and then its ancestors along path for as long as they are
// empty. The root, which has no step, is never detached.
func prune[V comparable](path []step[V], n *node[V]) {
	if len(n.vals) == 0 {
		n.vals = nil
	}
	for i := len(path) - 1; i >= 0 && n.empty(); i-- {
		path[i].parent.removeChild(path[i].word)
		n = path[i].parent
	}
}

// Len returns the number of (pattern, value) pairs in t. It is safe to call
// concurrently with Match and Len, but not with Add or Remove. A nil Trie is
// empty.
func (t *Trie[V]) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}

// Match calls fn for each value bound to a pattern that matches key. A value
// bound by several matching patterns may be reported once per pattern (but
// once only for patterns that differ by repeated '#' words); the caller
// removes duplicates if it needs to. The order of the calls is unspecified.
//
// Match does not modify t, so concurrent Match calls are safe as long as no
// Add or Remove runs at the same time; fn must not modify t either. Match
// does not allocate unless the key meets more than a few distinct '#'
// nodes, and its work is bounded by the number of trie nodes it reaches
// times the number of words in key, whatever the patterns. A nil Trie or a
// nil fn matches nothing.
func (t *Trie[V]) Match(key string, fn func(V)) {
	if t == nil || fn == nil {
		return
	}
	m := matcher[V]{key: key, end: end(key), fn: fn}
	m.walk(&t.root, first(key))
}

func (n *node[V]) child(w string) *node[V] {
	switch w {
	case "*":
		return n.star
	case "#":
		return n.hash
	}
	return n.children[w]
}

func (n *node[V]) addChild(w string) *node[V] {
	if c := n.child(w); c != nil {
		return c
	}
	c := new(node[V])
	switch w {
	case "*":
		n.star = c
	case "#":
		n.hash = c
	default:
		if n.children == nil {
			n.children = make(map[string]*node[V])
		}
		// Clone so that the trie does not pin the caller's whole pattern.
		n.children[strings.Clone(w)] = c
	}
	return c
}

func (n *node[V]) removeChild(w string) {
	switch w {
	case "*":
		n.star = nil
	case "#":
		n.hash = nil
	default:
		delete(n.children, w)
		if len(n.children) == 0 {
			n.children = nil
		}
	}
}

func (n *node[V]) empty() bool {
	return len(n.vals) == 0 && len(n.children) == 0 && n.star == nil && n.hash == nil
}
