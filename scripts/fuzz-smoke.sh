#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time each:
#   scripts/fuzz-smoke.sh [FUZZTIME]      (default 5s)
# The minimizer gets 2 s an input: the targets with SQLite behind them cost
# milliseconds an input, and its default minute would take the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-5s}
n=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$pkg" >/tmp/fuzz-smoke.$$ 2>&1 || {
			cat /tmp/fuzz-smoke.$$ >&2
			rm -f /tmp/fuzz-smoke.$$
			echo "fuzz-smoke: $target in $pkg FAILED; the crasher is in that package's testdata/fuzz" >&2
			exit 1
		}
		n=$((n + 1))
	done
done
rm -f /tmp/fuzz-smoke.$$
echo "fuzz-smoke: $n targets passed"
