package topic

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

// dest stands for the broker's binding destination.
type dest int

const benchKey = "order.eu.placed.v2"

// benchTrie returns a trie of n realistic bindings, of which only a few
// match benchKey: "order.#", "order.eu.*.*", "*.eu.placed.v2" and the exact
// key, at any size. The others spread over n/4 services (distinct first
// words) with per-service, per-region and exact-key patterns.
func benchTrie(n int) *Trie[dest] {
	var tr Trie[dest]
	matching := []string{benchKey, "order.#", "order.eu.*.*", "*.eu.placed.v2"}
	for i, p := range matching[:min(n, len(matching))] {
		tr.Add(p, dest(i))
	}
	regions := []string{"eu", "us", "ap", "sa"}
	events := []string{"placed", "shipped", "cancelled", "refunded", "created"}
	r := rand.New(rand.NewPCG(42, 42))
	for tr.Len() < n {
		i := tr.Len()
		svc := "svc" + strconv.Itoa(r.IntN(max(n/4, 1)))
		region := regions[r.IntN(len(regions))]
		event := events[r.IntN(len(events))]
		var p string
		switch i % 5 {
		case 0:
			p = svc + "." + region + ".*"
		case 1:
			p = svc + ".#"
		case 2:
			p = svc + ".*." + event + ".#"
		case 3:
			p = "order.us." + event + ".v" + strconv.Itoa(r.IntN(1000))
		default:
			p = svc + "." + region + "." + event + ".v" + strconv.Itoa(1+r.IntN(3))
		}
		tr.Add(p, dest(i))
	}
	return &tr
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1_000, 100_000} {
		b.Run(fmt.Sprintf("bindings=%d", n), func(b *testing.B) {
			tr := benchTrie(n)
			hits := 0
			fn := func(dest) { hits++ }
			b.ReportAllocs()
			for b.Loop() {
				tr.Match(benchKey, fn)
			}
			b.ReportMetric(float64(hits)/float64(b.N), "matches/op")
		})
	}
}

func BenchmarkMatchPathological(b *testing.B) {
	tests := []struct {
		name    string
		pattern string
		key     string
	}{
		{"hashes=5/words=16", "#.a.#.a.#.a.#.a.#.b", "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"},
		{"repeated-hash/words=16", "#.#.#.#.#.#.#.#.b", "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			var tr Trie[int]
			tr.Add(tt.pattern, 1)
			fn := func(int) {}
			b.ReportAllocs()
			for b.Loop() {
				tr.Match(tt.key, fn)
			}
		})
	}
}

func BenchmarkAddRemove(b *testing.B) {
	tr := benchTrie(100_000)
	b.ReportAllocs()
	for b.Loop() {
		tr.Add("billing.eu.*.#", -1)
		tr.Remove("billing.eu.*.#", -1)
	}
}
