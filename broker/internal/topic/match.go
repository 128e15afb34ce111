package topic

// inlineHashes is how many '#' nodes a match tracks without allocating.
const inlineHashes = 16

// matcher is the state of one Match call. It lives on Match's stack.
type matcher[V comparable] struct {
	key string
	end int
	fn  func(V)
	// hashes records, for each '#' node entered so far, the smallest offset
	// at which it was entered: the '#' has then been tried against every
	// split of the key from that offset on, which never needs redoing.
	hashes [inlineHashes]hashVisit[V]
	nhash  int
	spill  map[*node[V]]int // the '#' nodes that did not fit in hashes
}

type hashVisit[V comparable] struct {
	n    *node[V]
	from int
}

// walk reports the values of the patterns below n that match the words of
// the key from offset pos on. Literal edges are followed in a loop and only
// '*' and '#' edges recurse, so the depth of recursion is bounded by the
// depth of the trie, not by the length of the key.
func (m *matcher[V]) walk(n *node[V], pos int) {
	for pos < m.end {
		w, next := word(m.key, pos)
		if n.hash != nil {
			m.skip(n.hash, pos)
		}
		if n.star != nil {
			m.walk(n.star, next)
		}
		c := n.children[w]
		if c == nil {
			return
		}
		n, pos = c, next
	}
	for _, v := range n.list {
		m.fn(v)
	}
	if n.hash != nil {
		m.skip(n.hash, pos)
	}
}

// skip matches the '#' node h, entered at offset pos: the '#' swallows zero
// or more words and the patterns below h must match the rest. Each (h,
// offset) pair is walked at most once per Match, which keeps patterns such
// as "#.a.#.a.#.a" polynomial instead of exponential in the key's length.
func (m *matcher[V]) skip(h *node[V], pos int) {
	done := m.enter(h, pos)
	for p := pos; p < done; p = m.advance(p) {
		m.walk(h, p)
	}
}

// advance returns the offset of the word after the one at p, or, once no
// word is left, an offset past end.
func (m *matcher[V]) advance(p int) int {
	if p >= m.end {
		return m.end + 1
	}
	_, next := word(m.key, p)
	return next
}

// enter records that h is entered at offset pos and returns the offset from
// which h was already walked, or an offset past end if it was not.
func (m *matcher[V]) enter(h *node[V], pos int) int {
	for i := range m.nhash {
		if hv := &m.hashes[i]; hv.n == h {
			done := hv.from
			hv.from = min(done, pos)
			return done
		}
	}
	if done, ok := m.spill[h]; ok {
		m.spill[h] = min(done, pos)
		return done
	}
	if m.nhash < len(m.hashes) {
		m.hashes[m.nhash] = hashVisit[V]{h, pos}
		m.nhash++
	} else {
		if m.spill == nil {
			m.spill = make(map[*node[V]]int)
		}
		m.spill[h] = pos
	}
	return m.end + 1
}
