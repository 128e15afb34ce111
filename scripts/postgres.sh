#!/usr/bin/env bash
# Private PostgreSQL server for integration tests.
#
#   scripts/postgres.sh start    install postgresql if missing, start a server, print
#                                its URL on stdout (one line)
#   scripts/postgres.sh stop     stop the server, remove its files
#   scripts/postgres.sh status   print the URL and exit 0 if the server accepts logins
#   scripts/postgres.sh url      print the URL of the running server
#   scripts/postgres.sh psql ARGS...   psql as superuser `postgres` into database troupe
#
# The server runs as the `postgres` user with a fresh cluster in
# $TROUPE_SERVERS_DIR/postgres (default ${TMPDIR:-/tmp}/troupe-servers), listening on
# 127.0.0.1:<free port> and on a unix socket in that directory, with fsync=off (never
# use it to measure durability). Database `troupe`, owned by role `troupe` (password
# `troupe`, superuser); TCP logins use scram-sha-256:
#
#   export TROUPE_POSTGRES_URL=$(scripts/postgres.sh start)
#   # postgres://troupe:troupe@127.0.0.1:PORT/troupe?sslmode=disable
#
# Env: TROUPE_POSTGRES_START_TIMEOUT (seconds, default 60).
set -euo pipefail
TROUPE_NAME=postgres
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT=${TROUPE_POSTGRES_START_TIMEOUT:-60}

root=$(troupe_state_root)
dir=$root/postgres # root's bookkeeping: ports, url
pg=$dir/pg         # owned by postgres: data dir, log, unix socket

port='' url='' bindir=''
load_state() {
	[ -f "$dir/state" ] || return 1
	# shellcheck disable=SC1091
	. "$dir/state"
}

# find_bindir: PostgreSQL 15 preferred, else the newest installed major version.
find_bindir() {
	local d
	bindir=
	if [ -x /usr/lib/postgresql/15/bin/postgres ] && [ -x /usr/lib/postgresql/15/bin/initdb ]; then
		bindir=/usr/lib/postgresql/15/bin
		return 0
	fi
	for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4,4n); do
		if [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then bindir=$d; fi
	done
	[ -n "$bindir" ]
}

ensure_installed() {
	find_bindir && [ -x "$bindir/psql" ] && return 0
	troupe_apt_install "postgres" postgresql || troupe_die "could not install postgresql"
	if ! find_bindir || [ ! -x "$bindir/psql" ]; then
		troupe_die "no PostgreSQL server under /usr/lib/postgresql after apt-get install postgresql"
	fi
}

# as_pg CMD...: run CMD as postgres with a clean environment.
as_pg() {
	troupe_as_cmd postgres
	(cd "$pg" && exec "${TROUPE_AS[@]}" PATH="$bindir:$TROUPE_PATH" HOME="$pg" LANG=C.UTF-8 LC_ALL=C.UTF-8 \
		TROUPE_SERVER_OWNER="$dir" "$@")
}

# psql_super ARGS...: psql as superuser postgres over the unix socket (trust).
psql_super() {
	env -i PATH="$bindir:$TROUPE_PATH" LANG=C.UTF-8 LC_ALL=C.UTF-8 TROUPE_SERVER_OWNER="$dir" \
		"$bindir/psql" -X -v ON_ERROR_STOP=1 -h "$pg" -p "$port" -U postgres "$@"
}

postmaster_pid() { head -n 1 "$pg/data/postmaster.pid" 2>/dev/null || true; }

# login_ok: the URL the tests get works (TCP, password).
login_ok() {
	env -i PATH="$bindir:$TROUPE_PATH" LC_ALL=C.UTF-8 TROUPE_SERVER_OWNER="$dir" \
		"$bindir/psql" -X -q -t -A -c 'select 1' "$url" 2>/dev/null | grep -qx 1
}

running() {
	load_state || return 1
	troupe_owned "$(postmaster_pid)" "$dir" && login_ok
}

print_logs() {
	troupe_tail "$dir/initdb.log" 30
	troupe_tail "$dir/pg_ctl.out" 20
	troupe_tail "$pg/postgres.log" 60
	troupe_tail "$dir/setup.log" 20
}

started=
on_start_exit() {
	local rc=$?
	[ -z "$TROUPE_CHILD" ] || kill -TERM "$TROUPE_CHILD" 2>/dev/null || true
	[ -z "$started" ] || return 0
	trap - EXIT INT TERM
	if [ "$rc" = 130 ] || [ "$rc" = 143 ]; then
		troupe_fail "start interrupted; stopping"
		stop >/dev/null 2>&1 || stop || true
		exit "$rc"
	fi
	troupe_fail "PostgreSQL did not start (exit $rc); logs follow, then it is stopped"
	print_logs
	stop >/dev/null 2>&1 || stop || true
	exit $((rc == 0 ? 1 : rc))
}

start() {
	local t0 deadline
	t0=$(troupe_clock)
	trap on_start_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	troupe_require_root
	if [ -d "$dir" ]; then
		if running; then
			started=1
			troupe_say "already running: $url"
			printf '%s\n' "$url"
			return 0
		fi
		troupe_say "cleaning up a server that is no longer running in $dir"
		stop
	fi
	ensure_installed
	troupe_ensure_user postgres /var/lib/postgresql

	troupe_make_state_root "$root"
	troupe_check_reachable postgres "$root"
	mkdir -m 0711 -- "$dir"

	port=$(troupe_reserve_port "$dir")
	url="postgres://troupe:troupe@127.0.0.1:$port/troupe?sslmode=disable"
	cat >"$dir/state" <<-EOF
		port=$port
		bindir='$bindir'
		url='$url'
	EOF
	install -d -o postgres -g "$(id -g postgres)" -m 0700 "$pg"

	troupe_run "$dir/initdb.log" as_pg "$bindir/initdb" -D "$pg/data" -U postgres \
		--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale --no-sync ||
		troupe_die "initdb failed"
	as_pg tee -a "$pg/data/postgresql.conf" >/dev/null <<-EOF

		# troupe scripts/postgres.sh: private test server
		listen_addresses = '127.0.0.1'
		port = $port
		unix_socket_directories = '$pg'
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		max_connections = 200
		logging_collector = off
	EOF
	# Statement counts for the load scripts (scripts/shop-load-multiprocess.sh).
	if [ -f "$bindir/../lib/pg_stat_statements.so" ]; then
		echo "shared_preload_libraries = 'pg_stat_statements'" | as_pg tee -a "$pg/data/postgresql.conf" >/dev/null
	fi

	# pg_ctl starts the postmaster in the background and waits until it accepts
	# connections; setsid keeps a Ctrl-C of the caller away from it (stop shuts it down).
	deadline=$((SECONDS + START_TIMEOUT))
	troupe_run "$dir/pg_ctl.out" as_pg setsid "$bindir/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" \
		-w -t "$START_TIMEOUT" -s start || troupe_die "pg_ctl start failed or timed out after ${START_TIMEOUT}s"
	until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 -d postgres; do
		if ((SECONDS >= deadline)); then troupe_die "not ready after ${START_TIMEOUT}s (pg_isready)"; fi
		if [ -f "$pg/data/postmaster.pid" ] && ! troupe_alive "$(postmaster_pid)"; then
			troupe_die "postgres exited during start-up"
		fi
		sleep 0.1
	done

	psql_super -q -d postgres -c "CREATE ROLE troupe LOGIN SUPERUSER PASSWORD 'troupe'" \
		-c "CREATE DATABASE troupe OWNER troupe" >"$dir/setup.log" 2>&1 ||
		troupe_die "could not create role and database troupe"
	login_ok || troupe_die "cannot log in with $url"

	printf '%s\n' "$url" >"$dir/url"
	started=1
	troupe_say "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') ready at $url in $(troupe_since "$t0")"
	printf '%s\n' "$url"
}

stop() {
	local t0 pid
	[ -d "$dir" ] || return 0
	t0=$(troupe_clock)
	troupe_require_root
	load_state || true
	# Immediate shutdown (SIGQUIT): the data directory is thrown away anyway.
	pid=$(postmaster_pid)
	troupe_stop_server QUIT "$pid" postgres || return 1
	troupe_say "stopped${port:+ server on port $port} in $(troupe_since "$t0")"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status)
	if running; then printf '%s\n' "$url"; else
		troupe_say "not running"
		exit 1
	fi
	;;
url)
	if ! load_state || [ ! -f "$dir/url" ]; then troupe_die "not running (no state in $dir)"; fi
	cat "$dir/url"
	;;
psql)
	shift
	load_state || troupe_die "not running (no state in $dir)"
	psql_super -d troupe "$@"
	;;
*)
	echo "usage: $0 start|stop|status|url|psql ARGS..." >&2
	exit 2
	;;
esac
