#!/usr/bin/env bash
# The e-commerce load with one process per service, on RabbitMQ and PostgreSQL:
#
#   bash scripts/with-servers.sh bash scripts/shop-load-multiprocess.sh -n 3000 -c 50
#
# Builds the shop binary, creates a fresh PostgreSQL database per service (order,
# payment, inventory, notify, saga-tracker), starts payment, inventory, notify and the
# saga tracker as processes on RabbitMQ (their own exchange and queue prefix), each
# waited for until its /healthz answers 200, then the order service (any order would do:
# every service declares the whole checkout's queues), and runs `shop load` against the
# order API with the books read from the services' databases and the saga tracker's
# /sagas checked after the load (-sagas-url). ARGS go to `shop load` after the ones set
# here (so they may override them). Always stops the processes and removes its files.
# Needs TROUPE_AMQP_URL and TROUPE_POSTGRES_URL (scripts/with-servers.sh exports both).
# With SHOP_PROFILE_DIR set, each service writes a CPU profile of its run to
# SHOP_PROFILE_DIR/SERVICE.prof (go tool pprof).
# Each service runs with GOMAXPROCS=${SHOP_GOMAXPROCS:-1}: seven Go processes, RabbitMQ
# and PostgreSQL share this machine's cores, and a Go process with more processors
# than it keeps busy spends a quarter of its CPU waking and parking them (profiles:
# runtime.findRunnable and futex). SHOP_GOMAXPROCS=0 leaves Go's default.
# After the load it prints the statements each service's database ran per order placed,
# when the server has pg_stat_statements loaded (scripts/postgres.sh loads it). BEGIN and
# COMMIT sent in one batch with other statements (internal/pglazy) are not among them:
# pg_stat_statements counts such prepared transaction commands once, not per run.
# Exits with the load's status; 1 when a service does not start.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname -- "$here")

if [ -z "${TROUPE_AMQP_URL:-}" ] || [ -z "${TROUPE_POSTGRES_URL:-}" ]; then
	echo "$0: TROUPE_AMQP_URL and TROUPE_POSTGRES_URL must be set: run it as scripts/with-servers.sh bash $0 ARGS..." >&2
	exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shop-load-mp.XXXXXX")
pids=()
names=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	set +e
	# The CPU each service used (user + system), before stopping them.
	local tck stat cpu=()
	tck=$(getconf CLK_TCK)
	for i in "${!pids[@]}"; do
		if stat=$(cat "/proc/${pids[$i]}/stat" 2>/dev/null); then
			stat=${stat##*) }
			# shellcheck disable=SC2086 # split the fields
			set -- $stat
			cpu+=("${names[$i]} $(((${12} + ${13}) * 100 / tck / 100)).$(printf '%02d' $(((${12} + ${13}) * 100 / tck % 100)))s")
		fi
	done
	[ ${#cpu[@]} -eq 0 ] || echo "CPU used by the services: ${cpu[*]}"
	for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null; done
	for i in "${!pids[@]}"; do
		if ! wait "${pids[$i]}"; then
			echo "shop ${names[$i]} did not exit cleanly; its log (last lines):" >&2
			tail -n 20 "$work/${names[$i]}.log" >&2
		fi
	done
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building the shop binary"
(cd "$root" && go build -o "$work/shop" ./examples/ecommerce/cmd/shop)
bin=$work/shop

run=mpl$(date +%s%N)
# dburl NAME: TROUPE_POSTGRES_URL with database NAME.
dburl() {
	local base=${TROUPE_POSTGRES_URL%%\?*} query=""
	case $TROUPE_POSTGRES_URL in *\?*) query="?${TROUPE_POSTGRES_URL#*\?}" ;; esac
	printf '%s/%s%s\n' "${base%/*}" "$1" "$query"
}
declare -A db
for svc in order payment inventory notify saga-tracker; do
	name="${run}_${svc//-/_}"
	bash "$here/postgres.sh" psql -q -c "CREATE DATABASE $name" >/dev/null
	db[$svc]=$(dburl "$name")
done

# start SVC ARGS...: start a service, wait until /healthz answers; sets $addr.
start() {
	local svc=$1 log=$work/$1.log deadline=$((SECONDS + 60))
	shift
	: >"$log" # before the process opens it: sed reads it below
	if [ -n "${SHOP_PROFILE_DIR:-}" ]; then
		mkdir -p "$SHOP_PROFILE_DIR"
		set -- -cpuprofile "$SHOP_PROFILE_DIR/$svc.prof" "$@"
	fi
	local procs=()
	[ "${SHOP_GOMAXPROCS:-1}" = 0 ] || procs=("GOMAXPROCS=${SHOP_GOMAXPROCS:-1}")
	env -i PATH="$PATH" HOME="${HOME:-/tmp}" "${procs[@]}" "$bin" "$svc" -bus "$TROUPE_AMQP_URL" -db "${db[$svc]}" \
		-exchange "shop-$run" -queue-prefix "$run-" -quiet "$@" >"$log" 2>&1 &
	pids+=("$!")
	names+=("$svc")
	addr=""
	while [ $SECONDS -lt $deadline ]; do
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			echo "shop $svc exited while starting:" >&2
			cat "$log" >&2
			return 1
		fi
		if [ -z "$addr" ]; then
			addr=$(sed -n 's/.* on http:\/\/\([^;]*\);.*/\1/p' "$log" | head -n 1)
		fi
		if [ -n "$addr" ] && "$bin" healthcheck "http://$addr/healthz" >/dev/null 2>&1; then
			echo "shop $svc: healthy on $addr (pid ${pids[-1]})"
			return 0
		fi
		sleep 0.2
	done
	echo "shop $svc: not healthy within 60 s:" >&2
	cat "$log" >&2
	return 1
}

start payment -http 127.0.0.1:0
start inventory -http 127.0.0.1:0 -stock apple=100000000,pear=100000000,plum=50
start notify -http 127.0.0.1:0
start saga-tracker -http 127.0.0.1:0
tracker=$addr
# Last: the others' queues are bound before the first order.placed.
start order -addr 127.0.0.1:0
api=$addr

stats=0
if bash "$here/postgres.sh" psql -q -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null 2>&1; then
	stats=1
fi

echo "shop load: services in separate processes on RabbitMQ, one PostgreSQL database each"
rc=0
"$bin" load -url "http://$api" -sagas-url "http://$tracker" \
	-order-db "${db[order]}" -payment-db "${db[payment]}" -inventory-db "${db[inventory]}" "$@" || rc=$?

if [ $stats = 1 ]; then
	# The orders placed: the rows of the order service's orders table.
	placed=$(bash "$here/postgres.sh" psql -q -t -A -d "${run}_order" -c "SELECT count(*) FROM orders")
	if [ "${placed:-0}" -gt 0 ]; then
		echo "PostgreSQL statements per order placed ($placed orders):"
		bash "$here/postgres.sh" psql -q -t -A -F ' ' -c "SELECT substr(d.datname, length('${run}_') + 1),
			round(sum(s.calls) / $placed.0, 1) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
			WHERE d.datname LIKE '${run}\_%' GROUP BY 1 ORDER BY 2 DESC" | sed 's/^/  /'
	fi
fi
exit $rc
