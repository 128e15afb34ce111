#!/usr/bin/env bash
# Compare two builds of the shop under the in-process load, side by side:
#
#   bash scripts/shop-ab.sh [-k ROUNDS] [-n ORDERS] [-c IN_FLIGHT] A B [-- LOAD_ARGS...]
#
# A and B are git revisions (built here, from a detached worktree each) or paths to
# shop binaries. Each round runs `shop load -inprocess` of both AT THE SAME TIME, each on
# a fresh data folder, so that both see the same machine: on our 2-core machines the
# speed of one build drifts by ±20% within minutes, which hides changes of a few
# percent between runs taken one after the other. Both get about one core, so their
# figures are not those of a run alone; what counts is the ratio of their CPU time
# per order (user + system of the whole process over the orders) within the round.
# Prints a line per round as it finishes and the mean ratio at the end; a ratio
# below 1 means B needs less CPU per order than A. LOAD_ARGS go to both loads
# (default: -transient-failures 0). Defaults: 3 rounds of 10,000 orders, 200 in flight.
# Exits 1 when a load fails or its books do not balance.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

rounds=3 orders=10000 inflight=200
while getopts "k:n:c:" opt; do
	case $opt in
	k) rounds=$OPTARG ;;
	n) orders=$OPTARG ;;
	c) inflight=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ $# -lt 2 ]; then
	echo "usage: $0 [-k ROUNDS] [-n ORDERS] [-c IN_FLIGHT] A B [-- LOAD_ARGS...]" >&2
	exit 2
fi
a=$1 b=$2
shift 2
[ "${1:-}" != "--" ] || shift
load_args=("$@")
[ ${#load_args[@]} -gt 0 ] || load_args=(-transient-failures 0)

work=$(mktemp -d "${TMPDIR:-/tmp}/shop-ab.XXXXXX")
trees=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local t
	for t in "${trees[@]}"; do git -C "$root" worktree remove --force "$t" >/dev/null 2>&1 || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# binary REV NAME: sets bin to the shop binary of REV (a path to one, or a
# revision to build).
binary() {
	if [ -x "$1" ] && [ -f "$1" ]; then
		bin=$(readlink -f "$1")
		return
	fi
	local tree=$work/tree-$2
	git -C "$root" worktree add --detach --quiet "$tree" "$1"
	trees+=("$tree")
	(cd "$tree" && go build -o "$work/shop-$2" ./examples/ecommerce/cmd/shop)
	bin=$work/shop-$2
}
echo "building A ($a) and B ($b)"
binary "$a" a
bin_a=$bin
binary "$b" b
bin_b=$bin

# run NAME BIN ROUND: one load; writes NAME.out and NAME.cpu (user and system seconds).
run() {
	local data=$work/data-$1-$3
	local TIMEFORMAT='%3U %3S'
	{ time "$2" load -inprocess -data "$data" -n "$orders" -c "$inflight" "${load_args[@]}" >"$work/$1.out" 2>&1; } 2>"$work/$1.cpu"
	rm -rf "$data"
}

# figures NAME: "ORDERS_PER_S CPU_MS_PER_ORDER", or fails when the load failed.
figures() {
	local out=$work/$1.out rate cpu
	if ! grep -q '^books: balanced' "$out"; then
		echo "$1: the load failed or its books do not balance; its output (last lines):" >&2
		tail -n 20 "$out" >&2
		return 1
	fi
	rate=$(grep -o '^tally:.*' "$out" | grep -oE '[0-9]+ orders/s' | grep -oE '[0-9]+')
	cpu=$(awk -v n="$orders" '{printf "%.3f", ($1 + $2) * 1000 / n}' "$work/$1.cpu")
	echo "$rate $cpu"
}

sum=0
for round in $(seq "$rounds"); do
	run a "$bin_a" "$round" &
	pa=$!
	run b "$bin_b" "$round" &
	pb=$!
	wait "$pa" "$pb" || true
	fa=$(figures a)
	fb=$(figures b)
	read -r rate_a cpu_a <<<"$fa"
	read -r rate_b cpu_b <<<"$fb"
	ratio=$(awk -v a="$cpu_a" -v b="$cpu_b" 'BEGIN {printf "%.3f", b / a}')
	sum=$(awk -v s="$sum" -v r="$ratio" 'BEGIN {print s + r}')
	printf 'round %d/%d: A %s orders/s, %s ms CPU/order | B %s orders/s, %s ms CPU/order | B/A %s\n' \
		"$round" "$rounds" "$rate_a" "$cpu_a" "$rate_b" "$cpu_b" "$ratio"
done
awk -v s="$sum" -v k="$rounds" 'BEGIN {printf "mean B/A CPU per order over %d rounds: %.3f\n", k, s / k}'
