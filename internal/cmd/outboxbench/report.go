package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// pairs are the ratios reported: a Troupe outbox against a Forwarder.
var pairs = [][2]string{
	{"troupe-postgres", "forwarder-postgres-tuned"},
	{"troupe-postgres", "forwarder-postgres"},
	{"troupe-sqlite", "forwarder-postgres-tuned"},
	{"troupe-sqlite", "forwarder-postgres"},
}

// ratioModes are the modes whose events/s are compared.
var ratioModes = []string{"drain", "throughput"}

// find returns the result of store in mode in round.
func find(rs []result, round int, store, mode string) (result, bool) {
	for _, r := range rs {
		if r.round == round && r.store == store && r.mode == mode {
			return r, true
		}
	}
	return result{}, false
}

// ratios returns, per round that has both, a's events/s over b's in mode.
func ratios(rs []result, a, b, mode string) []float64 {
	var out []float64
	for round := 1; ; round++ {
		if !slices.ContainsFunc(rs, func(r result) bool { return r.round == round }) {
			return out
		}
		ra, okA := find(rs, round, a, mode)
		rb, okB := find(rs, round, b, mode)
		if okA && okB {
			out = append(out, ra.rate()/rb.rate())
		}
	}
}

// median returns the median of xs (the mean of the middle two for an even
// count); 0 for none.
func median[T float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// printRoundRatios prints the ratios of one round (progress output).
func printRoundRatios(w io.Writer, rs []result, round int) {
	for _, mode := range ratioModes {
		for _, p := range pairs {
			ra, okA := find(rs, round, p[0], mode)
			rb, okB := find(rs, round, p[1], mode)
			if okA && okB {
				fmt.Fprintf(w, "round %d ratio %s / %s %s: %.2fx\n", round, p[0], p[1], mode, ra.rate()/rb.rate())
			}
		}
	}
}

// printTable prints every run, the median per store and mode, and the
// ratios per round with their medians, as Markdown.
func printTable(w io.Writer, rs []result, writers int, every, fwdPoll time.Duration, queued bool) {
	where := "exchange without queues"
	if queued {
		where = "one durable queue bound, purged after each run"
	}
	fmt.Fprintf(w, "\nOne order row + one 1 KiB event per transaction, relayed to RabbitMQ with confirms (persistent, %s).\n", where)
	fmt.Fprintf(w, "throughput: %d writers as fast as they go, relay running; drain: the same events committed first, then the relay (or forwarder) started and timed alone; moderate: 1 writer, one commit every %v.\n", writers, every)
	fmt.Fprintf(w, "Latency: commit returned -> publish confirmed. events/s: N / (first commit -> last confirmed publish); drain: N / (relay start -> last confirmed publish).\n")
	if fwdPoll > 0 {
		fmt.Fprintf(w, "forwarder-postgres: watermill-sql subscriber defaults (poll 1 s); forwarder-postgres-tuned: poll %v.\n", fwdPoll)
	}
	fmt.Fprintln(w, "\nEvery run:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| round | store | mode | events | events/s | p50 | p99 | writers' tx/s | max backlog | drain |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %s | %d | %.0f | %v | %v | %.0f | %d | %v |\n",
			r.round, r.store, r.mode, r.n, r.rate(), round(r.p50), round(r.p99), r.commitRate(), r.maxBacklog, round(r.drain))
	}

	type key struct{ store, mode string }
	var keys []key
	groups := map[key][]result{}
	for _, r := range rs {
		k := key{r.store, r.mode}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	fmt.Fprintln(w, "\nMedian over the rounds (each column's median on its own):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| store | mode | runs | events/s | min–max events/s | p50 | p99 | writers' tx/s | max backlog |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	slices.SortStableFunc(keys, func(a, b key) int { return strings.Compare(a.store, b.store) })
	for _, k := range keys {
		g := groups[k]
		var rate, commit, backlog []float64
		var p50, p99 []time.Duration
		for _, r := range g {
			rate = append(rate, r.rate())
			commit = append(commit, r.commitRate())
			backlog = append(backlog, float64(r.maxBacklog))
			p50 = append(p50, r.p50)
			p99 = append(p99, r.p99)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.0f–%.0f | %v | %v | %.0f | %.0f |\n",
			k.store, k.mode, len(g), median(rate), slices.Min(rate), slices.Max(rate),
			round(median(p50)), round(median(p99)), median(commit), median(backlog))
	}

	fmt.Fprintln(w, "\nRatios of events/s, within each round:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| ratio | mode | per round | median |")
	fmt.Fprintln(w, "|---|---|---|---:|")
	for _, mode := range ratioModes {
		for _, p := range pairs {
			xs := ratios(rs, p[0], p[1], mode)
			if len(xs) == 0 {
				continue
			}
			per := ""
			for i, x := range xs {
				if i > 0 {
					per += ", "
				}
				per += fmt.Sprintf("%.2f", x)
			}
			fmt.Fprintf(w, "| %s / %s | %s | %s | **%.2fx** |\n", p[0], p[1], mode, per, median(xs))
		}
	}
	for _, peer := range []string{"forwarder-postgres", "forwarder-postgres-tuned"} {
		gb, ok := groups[key{peer, "moderate"}]
		if !ok {
			continue
		}
		for _, s := range []string{"troupe-postgres", "troupe-sqlite"} {
			ga, ok := groups[key{s, "moderate"}]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "\nmoderate median p50 %s / %s: %v / %v", s, peer, round(medianP50(ga)), round(medianP50(gb)))
		}
	}
	fmt.Fprintln(w)
}

func medianP50(rs []result) time.Duration {
	var xs []time.Duration
	for _, r := range rs {
		xs = append(xs, r.p50)
	}
	return median(xs)
}
