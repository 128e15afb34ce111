package topic

import "strings"

// Words are addressed by the byte offset at which they start. Offset end(s),
// one past the last byte, means that no word is left; it is distinct from
// offset len(s), where a last, empty word starts when s ends with '.'.

// first returns the offset of the first word of s. RabbitMQ splits the empty
// string into no words at all (not into one empty word), so a routing key ""
// is matched by the patterns "" and "#" only.
func first(s string) int {
	if s == "" {
		return end(s)
	}
	return 0
}

// end returns the offset that marks that no word of s is left.
func end(s string) int { return len(s) + 1 }

// word returns the word of s that starts at offset pos, which must be less
// than end(s), and the offset of the word after it, or end(s) if none.
func word(s string, pos int) (w string, next int) {
	rest := s[pos:]
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		return rest[:i], pos + i + 1
	}
	return rest, end(s)
}

// patternIter yields the words of a pattern with every run of "#" words
// collapsed into one "#", which matches the same keys.
type patternIter struct {
	s         string
	pos       int
	afterHash bool
	collapsed bool // some "#" was dropped
}

func newPatternIter(s string) patternIter {
	return patternIter{s: s, pos: first(s)}
}

func (it *patternIter) next() (string, bool) {
	for it.pos < end(it.s) {
		var w string
		w, it.pos = word(it.s, it.pos)
		if w == "#" && it.afterHash {
			it.collapsed = true
			continue
		}
		it.afterHash = w == "#"
		return w, true
	}
	return "", false
}
