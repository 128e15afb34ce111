package topic

import (
	"slices"
	"strings"
)

// refWords splits s the way RabbitMQ does: on '.', with "" having no words.
func refWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// refMatch is the reference matcher: a plain recursive word-list matcher.
func refMatch(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if refMatch(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && refMatch(pattern[1:], key[1:])
	default:
		return len(key) > 0 && key[0] == pattern[0] && refMatch(pattern[1:], key[1:])
	}
}

// refMatches returns the sorted indexes of the patterns that match key.
func refMatches(patterns []string, key string) []int {
	got := []int{}
	for i, p := range patterns {
		if refMatch(refWords(p), refWords(key)) {
			got = append(got, i)
		}
	}
	return got
}

// matches returns the sorted, deduplicated values that t reports for key.
func matches[V interface {
	comparable
	~int | ~string
}](t *Trie[V], key string) []V {
	got := []V{}
	t.Match(key, func(v V) { got = append(got, v) })
	slices.Sort(got)
	return slices.Compact(got)
}

// countNodes returns the number of nodes below and including n.
func countNodes[V comparable](n *node[V]) int {
	if n == nil {
		return 0
	}
	c := 1 + countNodes(n.star) + countNodes(n.hash)
	for _, ch := range n.children {
		c += countNodes(ch)
	}
	return c
}
