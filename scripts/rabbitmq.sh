#!/usr/bin/env bash
# Private RabbitMQ node for integration tests.
#
#   scripts/rabbitmq.sh start        install rabbitmq-server if missing, start a node,
#                                    print its AMQP URL on stdout (one line)
#   scripts/rabbitmq.sh stop         stop the node and its epmd, remove its files
#   scripts/rabbitmq.sh status       print the URL and exit 0 if the node answers AMQP
#   scripts/rabbitmq.sh url          print the URL of the running node
#   scripts/rabbitmq.sh ctl ARGS...  run rabbitmqctl ARGS against the node
#
# The node runs as the `rabbitmq` user with everything (config, data, logs, Erlang
# cookie) in $TROUPE_SERVERS_DIR/rabbitmq (default ${TMPDIR:-/tmp}/troupe-servers):
# AMQP on 127.0.0.1:<free port>, Erlang distribution on 127.0.0.1:<free port>, its own
# epmd on 127.0.0.1:<free port>, node name troupe-<pid>-<random>@localhost, no plugins.
# Log in as guest/guest (allowed from loopback only). Use a distinct TROUPE_SERVERS_DIR
# for each concurrent run (scripts/with-servers.sh does that).
#
#   export TROUPE_AMQP_URL=$(scripts/rabbitmq.sh start)
#
# Env: TROUPE_RABBITMQ_START_TIMEOUT (seconds, default 120).
set -euo pipefail
TROUPE_NAME=rabbitmq
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

RMQ_BIN=/usr/lib/rabbitmq/bin
START_TIMEOUT=${TROUPE_RABBITMQ_START_TIMEOUT:-120}

root=$(troupe_state_root)
dir=$root/rabbitmq # root's bookkeeping: ports, pids, url, console output
node=$dir/node     # owned by rabbitmq: HOME (cookie), config, mnesia, logs

nodename='' amqp_port='' dist_port='' epmd_port='' ctl_port='' url=''
load_state() {
	[ -f "$dir/state" ] || return 1
	# shellcheck disable=SC1091
	. "$dir/state"
}

# NODE_ENV: the complete environment of the node, its epmd and the CLI tools.
node_env() {
	NODE_ENV=(
		PATH="$TROUPE_PATH" HOME="$node/home" LANG=C.UTF-8 LC_ALL=C.UTF-8
		TROUPE_SERVER_OWNER="$dir"
		RABBITMQ_NODENAME="$nodename"
		RABBITMQ_CONF_ENV_FILE="$node/rabbitmq-env.conf"
		RABBITMQ_CONFIG_FILE="$node/rabbitmq.conf"
		RABBITMQ_ADVANCED_CONFIG_FILE="$node/advanced.config"
		RABBITMQ_ENABLED_PLUGINS_FILE="$node/enabled_plugins"
		RABBITMQ_MNESIA_BASE="$node/mnesia"
		RABBITMQ_LOG_BASE="$node/log"
		RABBITMQ_PID_FILE="$node/rabbit.pid"
		ERL_EPMD_ADDRESS=127.0.0.1
		ERL_EPMD_PORT="$epmd_port"
		ERL_CRASH_DUMP="$node/erl_crash.dump"
		RABBITMQ_CTL_DIST_PORT_MIN="$ctl_port"
		RABBITMQ_CTL_DIST_PORT_MAX="$ctl_port"
		RABBITMQ_CTL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
	)
}

# as_rabbit CMD...: run CMD as rabbitmq, in the node's directory, with NODE_ENV.
as_rabbit() {
	troupe_as_cmd rabbitmq
	node_env
	(cd "$node" && exec "${TROUPE_AS[@]}" "${NODE_ENV[@]}" "$@")
}

rabbitmqctl() { as_rabbit "$RMQ_BIN/rabbitmqctl" -n "$nodename" "$@"; }
# rabbitmqctl_timeout SECONDS ARGS...: rabbitmqctl ARGS, killed after SECONDS.
rabbitmqctl_timeout() {
	local secs=$1
	shift
	as_rabbit timeout "$secs" "$RMQ_BIN/rabbitmqctl" -n "$nodename" "$@"
}

installed() { troupe_pkg_installed rabbitmq-server && [ -x "$RMQ_BIN/rabbitmq-server" ]; }

ensure_installed() {
	installed && return 0
	troupe_apt_install "beam.smp epmd erl_child_setup inet_gethost heart" rabbitmq-server ||
		troupe_die "could not install rabbitmq-server"
	installed || troupe_die "rabbitmq-server is still not installed after apt-get install"
}

beam_pid() { cat "$node/rabbit.pid" 2>/dev/null || true; }

running() {
	load_state || return 1
	troupe_owned "$(beam_pid)" "$dir" && troupe_amqp_probe "$amqp_port"
}

print_logs() {
	local f
	troupe_tail "$dir/server.out" 40
	for f in "$node"/log/*.log; do troupe_tail "$f" 60; done
	troupe_tail "$dir/wait.out" 20
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
	troupe_fail "RabbitMQ did not start (exit $rc)${nodename:+; node $nodename}; logs follow, then it is stopped"
	print_logs
	stop >/dev/null 2>&1 || stop || true
	exit $((rc == 0 ? 1 : rc))
}

start() {
	local t0 epmd_bin i deadline rc
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
		troupe_say "cleaning up a node that is no longer running in $dir"
		stop
	fi
	ensure_installed
	troupe_ensure_user rabbitmq /var/lib/rabbitmq
	epmd_bin=$(PATH=$TROUPE_PATH:/usr/lib/erlang/bin command -v epmd) || troupe_die "epmd not found (erlang-base missing?)"

	troupe_make_state_root "$root"
	troupe_check_reachable rabbitmq "$root"
	mkdir -m 0711 -- "$dir"

	amqp_port=$(troupe_reserve_port "$dir")
	dist_port=$(troupe_reserve_port "$dir")
	epmd_port=$(troupe_reserve_port "$dir")
	ctl_port=$(troupe_reserve_port "$dir")
	nodename=troupe-$$-$((${SRANDOM:-$RANDOM} % 100000))@localhost
	url="amqp://guest:guest@127.0.0.1:$amqp_port/"
	cat >"$dir/state" <<-EOF
		nodename='$nodename'
		amqp_port=$amqp_port
		dist_port=$dist_port
		epmd_port=$epmd_port
		ctl_port=$ctl_port
		url='$url'
	EOF

	install -d -o rabbitmq -g "$(id -g rabbitmq)" -m 0700 "$node" "$node/home" "$node/mnesia" "$node/log"
	(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$node/home/.erlang.cookie")
	chmod 0400 "$node/home/.erlang.cookie"
	: >"$node/rabbitmq-env.conf" # keeps /etc/rabbitmq/rabbitmq-env.conf out
	printf '[].\n' >"$node/enabled_plugins"
	cat >"$node/rabbitmq.conf" <<-EOF
		listeners.tcp.default = 127.0.0.1:$amqp_port
		loopback_users.guest = true
		log.console = false
		log.file.level = info
	EOF
	chown -R rabbitmq: "$node"

	troupe_as_cmd rabbitmq
	node_env
	# epmd of our own, on a port nobody else uses; started first so that neither the
	# node nor the CLI ever starts a shared one (-start_epmd false).
	(cd "$node" && exec setsid "${TROUPE_AS[@]}" "${NODE_ENV[@]}" "$epmd_bin" -port "$epmd_port" -address 127.0.0.1) \
		</dev/null >"$dir/epmd.out" 2>&1 &
	echo $! >"$dir/epmd.pid"
	for ((i = 0; i < 100; i++)); do
		troupe_port_busy "$epmd_port" && break
		troupe_alive "$(cat "$dir/epmd.pid")" || break
		sleep 0.05
	done
	troupe_port_busy "$epmd_port" || {
		troupe_tail "$dir/epmd.out"
		troupe_die "epmd did not start on 127.0.0.1:$epmd_port"
	}

	# The node, in a session of its own (a Ctrl-C of the caller does not reach it).
	(cd "$node" && exec setsid "${TROUPE_AS[@]}" "${NODE_ENV[@]}" \
		RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT="$amqp_port" \
		RABBITMQ_DIST_PORT="$dist_port" \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}" \
		"$RMQ_BIN/rabbitmq-server") </dev/null >"$dir/server.out" 2>&1 &
	echo $! >"$dir/server.pid"

	# `rabbitmqctl wait` returns once the pid file exists and the node has booted.
	# Meanwhile watch the node: if it dies, fail now rather than at the timeout.
	rabbitmqctl_timeout "$START_TIMEOUT" wait "$node/rabbit.pid" --timeout "$START_TIMEOUT" \
		</dev/null >"$dir/wait.out" 2>&1 &
	TROUPE_CHILD=$!
	deadline=$((SECONDS + START_TIMEOUT))
	while troupe_alive "$TROUPE_CHILD"; do
		troupe_alive "$(cat "$dir/server.pid")" || troupe_die "node $nodename exited during start-up"
		((SECONDS < deadline)) || troupe_die "node $nodename not ready after ${START_TIMEOUT}s"
		sleep 0.2
	done
	rc=0
	wait "$TROUPE_CHILD" || rc=$?
	TROUPE_CHILD=
	[ "$rc" = 0 ] || troupe_die "node $nodename did not boot (rabbitmqctl wait: exit $rc)"
	for ((i = 0; i < 100; i++)); do
		troupe_amqp_probe "$amqp_port" && break
		sleep 0.1
	done
	troupe_amqp_probe "$amqp_port" || troupe_die "node $nodename booted but 127.0.0.1:$amqp_port does not answer AMQP"

	printf '%s\n' "$url" >"$dir/url"
	started=1
	troupe_say "node $nodename ready at $url in $(troupe_since "$t0")"
	printf '%s\n' "$url"
}

stop() {
	local t0 beam
	[ -d "$dir" ] || return 0
	t0=$(troupe_clock)
	troupe_require_root
	load_state || true
	# SIGTERM makes RabbitMQ shut down cleanly; then everything else carrying our marker
	# (the rabbitmq-server wrapper, epmd, CLI tools still running) is stopped.
	beam=$(beam_pid)
	troupe_stop_server TERM "$beam" rabbitmq || return 1
	troupe_say "stopped ${nodename:-node} in $(troupe_since "$t0")"
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
ctl)
	shift
	load_state || troupe_die "not running (no state in $dir)"
	rabbitmqctl "$@"
	;;
*)
	echo "usage: $0 start|stop|status|url|ctl ARGS..." >&2
	exit 2
	;;
esac
