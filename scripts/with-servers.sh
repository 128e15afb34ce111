#!/usr/bin/env bash
# Run a command with private RabbitMQ and PostgreSQL servers, e.g.
#
#   scripts/with-servers.sh go test -count=1 ./...
#
# Starts both servers in parallel (installing rabbitmq-server / postgresql with apt
# the first time), exports
#
#   TROUPE_AMQP_URL       amqp://guest:guest@127.0.0.1:PORT/
#   TROUPE_POSTGRES_URL   postgres://troupe:troupe@127.0.0.1:PORT/troupe?sslmode=disable
#   TROUPE_SERVERS_DIR    their state directory (scripts/rabbitmq.sh ctl ... and
#                         scripts/postgres.sh psql ... work inside CMD)
#
# runs CMD, then always stops both servers and removes their files (also when CMD
# fails, a server fails to start, or on INT/TERM). Exits with CMD's status; exits 1
# without running CMD if a server cannot be installed or started, and 1 if CMD
# succeeded but a server could not be stopped. Every run uses its own directory,
# ports and node name, so concurrent runs do not clash.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

if [ $# -eq 0 ]; then
	echo "usage: $0 CMD [ARGS...]" >&2
	exit 2
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/troupe-servers.XXXXXX")
chmod 0711 "$state"
export TROUPE_SERVERS_DIR=$state

starting=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local rc=$? pid stop_rc=0 r_pid p_pid
	trap - EXIT INT TERM
	set +e
	# Interrupted while starting: end the start scripts first (they exit promptly).
	for pid in "${starting[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${starting[@]}"; do wait "$pid" 2>/dev/null; done
	"$here/rabbitmq.sh" stop &
	r_pid=$!
	"$here/postgres.sh" stop &
	p_pid=$!
	wait "$r_pid" || stop_rc=1
	wait "$p_pid" || stop_rc=1
	rm -rf -- "$state"
	if [ "$stop_rc" != 0 ]; then
		echo "with-servers: ERROR: a server could not be stopped cleanly (see above)" >&2
		[ "$rc" != 0 ] || rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$here/rabbitmq.sh" start >"$state/amqp.url" &
starting+=($!)
"$here/postgres.sh" start >"$state/postgres.url" &
starting+=($!)
r_rc=0 p_rc=0
wait "${starting[0]}" || r_rc=$?
wait "${starting[1]}" || p_rc=$?
starting=()
failed=()
[ "$r_rc" = 0 ] && [ -s "$state/amqp.url" ] || failed+=("RabbitMQ (exit $r_rc)")
[ "$p_rc" = 0 ] && [ -s "$state/postgres.url" ] || failed+=("PostgreSQL (exit $p_rc)")
if [ ${#failed[@]} -gt 0 ]; then
	echo "with-servers: ERROR: could not start ${failed[*]}; not running: $*" >&2
	exit 1
fi

TROUPE_AMQP_URL=$(<"$state/amqp.url")
TROUPE_POSTGRES_URL=$(<"$state/postgres.url")
export TROUPE_AMQP_URL TROUPE_POSTGRES_URL

rc=0
"$@" || rc=$?
exit "$rc"
