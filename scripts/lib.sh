# shellcheck shell=bash
# Helpers shared by scripts/rabbitmq.sh, scripts/postgres.sh and scripts/with-servers.sh.
# This file is sourced, not executed. The sourcing script sets TROUPE_NAME (a log prefix).
#
# Conventions:
#   * State of one set of servers lives under $TROUPE_SERVERS_DIR (default
#     ${TMPDIR:-/tmp}/troupe-servers); each server uses a sub-directory of it.
#   * Every process a script starts gets TROUPE_SERVER_OWNER=<its state dir> in its
#     environment. `stop` only ever signals processes carrying its own marker, so it
#     cannot hit another run's servers (or a recycled pid).
#   * A TCP port is reserved by creating /tmp/troupe-port-<port> (holding the owner's
#     state dir) before use, so two concurrent runs never pick the same port.

# shellcheck disable=SC2034 # TROUPE_PATH, TROUPE_AS: used by the sourcing scripts
TROUPE_NAME=${TROUPE_NAME:-troupe}
TROUPE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TROUPE_CHILD=

troupe_say() { printf '%s: %s\n' "$TROUPE_NAME" "$*" >&2; }
troupe_fail() { printf '%s: ERROR: %s\n' "$TROUPE_NAME" "$*" >&2; }
troupe_die() {
	troupe_fail "$@"
	exit 1
}

# troupe_tail FILE [LINES]: print the end of a log file to stderr.
troupe_tail() {
	local f=$1 n=${2:-60}
	[ -s "$f" ] || return 0
	printf -- '----- %s: last %s lines of %s -----\n' "$TROUPE_NAME" "$n" "$f" >&2
	tail -n "$n" -- "$f" >&2 || true
	printf -- '----- end of %s -----\n' "$f" >&2
}

# Wall clock in microseconds, and the time elapsed since such a reading ("3.2s").
troupe_clock() { printf '%s\n' "${EPOCHREALTIME//[!0-9]/}"; }
troupe_since() {
	local us=$(($(troupe_clock) - $1))
	printf '%d.%ds' $((us / 1000000)) $(((us % 1000000) / 100000))
}

troupe_require_root() {
	[ "$(id -u)" = 0 ] || troupe_die "must run as root (it installs packages with apt-get and runs the server as its own system user)"
	command -v setpriv >/dev/null || troupe_die "setpriv (util-linux) is missing"
}

# troupe_run LOG CMD...: run CMD in the background with its output in LOG and wait
# for it, so that a TERM/INT trap of the calling script runs at once instead of after
# CMD ends (and with the script's own stderr, not LOG). The EXIT trap of the caller
# should kill "$TROUPE_CHILD" if it is set.
troupe_run() {
	local rc=0 log=$1
	shift
	"$@" </dev/null >"$log" 2>&1 &
	TROUPE_CHILD=$!
	wait "$TROUPE_CHILD" || rc=$?
	TROUPE_CHILD=
	return "$rc"
}

# ---------------------------------------------------------------- state directories

troupe_state_root() { printf '%s\n' "${TROUPE_SERVERS_DIR:-${TMPDIR:-/tmp}/troupe-servers}"; }

# troupe_make_state_root DIR: create DIR if needed (remembering that we did, so the
# last stop removes it) and let the service users traverse it.
troupe_make_state_root() {
	local root=$1
	if [ ! -d "$root" ]; then
		mkdir -p -- "$root"
		: >"$root/.created-by-troupe"
	fi
	chmod go+x -- "$root"
}

# troupe_cleanup_state_root DIR: remove DIR if a start created it and it is now empty.
troupe_cleanup_state_root() {
	local root=$1
	[ -f "$root/.created-by-troupe" ] || return 0
	if [ -z "$(find "$root" -mindepth 1 -maxdepth 1 ! -name .created-by-troupe -print -quit 2>/dev/null)" ]; then
		rm -f -- "$root/.created-by-troupe"
		rmdir -- "$root" 2>/dev/null || true
	fi
}

# troupe_check_reachable USER DIR: fail clearly if USER cannot enter DIR (e.g. a
# TMPDIR under /root).
troupe_check_reachable() {
	setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups test -x "$2" ||
		troupe_die "user $1 cannot enter $2: set TROUPE_SERVERS_DIR (or TMPDIR) to a directory under /tmp"
}

# ---------------------------------------------------------------- users and processes

# troupe_ensure_user USER HOME: create a system user (and group) if it does not exist.
troupe_ensure_user() {
	id -u "$1" >/dev/null 2>&1 && return 0
	useradd --system --user-group --home-dir "$2" --no-create-home --shell /usr/sbin/nologin "$1" ||
		troupe_die "could not create user $1"
}

# troupe_as_cmd USER: set the array TROUPE_AS to a command prefix that runs a command
# as USER with an empty environment (append VAR=value words, then the command).
troupe_as_cmd() {
	# shellcheck disable=SC2034
	TROUPE_AS=(setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups env -i)
}

# troupe_alive PID: true if PID runs and is not a zombie.
troupe_alive() {
	local pid=${1:-} stat
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

# troupe_owner_pids OWNER USER: pids of live processes of USER started with
# TROUPE_SERVER_OWNER=OWNER. (Only USER's processes are read: reading the environment
# of busy processes of others can stall on a loaded machine.)
troupe_owner_pids() {
	local pid
	for pid in $(ps -u "$2" -o pid= 2>/dev/null); do
		troupe_owned "$pid" "$1" && printf '%s\n' "$pid"
	done
	return 0
}

# troupe_owned PID OWNER: true if PID carries OWNER's marker.
troupe_owned() {
	troupe_alive "${1:-}" && grep -qzxF -e "TROUPE_SERVER_OWNER=$2" "/proc/$1/environ" 2>/dev/null
}

# troupe_wait_gone SECONDS PID...: wait until all PIDs have exited.
troupe_wait_gone() {
	local n=$(($1 * 20)) pid busy
	shift
	while :; do
		busy=
		for pid in "$@"; do troupe_alive "$pid" && busy=1 && break; done
		[ -z "$busy" ] && return 0
		((n-- > 0)) || return 1
		sleep 0.05
	done
}

# troupe_kill_owner OWNER USER [GRACE]: TERM every process of OWNER (run as USER), KILL
# what survives GRACE seconds; repeated, since a dying process may start another (the
# RabbitMQ CLI starts an epmd when it finds none). Fails if some are still there.
troupe_kill_owner() {
	local owner=$1 user=$2 grace=${3:-5} pids _
	for _ in 1 2 3 4 5; do
		pids=$(troupe_owner_pids "$owner" "$user")
		[ -n "$pids" ] || return 0
		# shellcheck disable=SC2086
		kill -TERM $pids 2>/dev/null || true
		# shellcheck disable=SC2086
		troupe_wait_gone "$grace" $pids && continue
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		# shellcheck disable=SC2086
		troupe_wait_gone 5 $pids || true
	done
	[ -z "$(troupe_owner_pids "$owner" "$user")" ]
}

# ---------------------------------------------------------------- ports

# troupe_port_busy PORT: true if any TCP socket (IPv4 or IPv6, any state) uses PORT locally.
troupe_port_busy() {
	local hex files=() f
	hex=$(printf ':%04X' "$1")
	for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && files+=("$f"); done
	awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1; exit } END { exit !found }' "${files[@]}"
}

# troupe_reserve_port OWNER: print a free TCP port and reserve it for OWNER (a state dir)
# until troupe_release_ports OWNER. Ports are taken below the kernel's ephemeral range.
troupe_reserve_port() {
	local owner=$1 lo=32768 hi=60999 min max port f prev i
	read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
	if ((lo > 12000)); then
		min=10000 max=$((lo - 1))
	else
		min=$((hi + 1)) max=65000
		((max - min > 1000)) || min=10000
	fi
	for ((i = 0; i < 500; i++)); do
		port=$((min + ${SRANDOM:-$((RANDOM << 15 | RANDOM))} % (max - min + 1)))
		troupe_port_busy "$port" && continue
		f=/tmp/troupe-port-$port
		if ! (set -o noclobber && printf '%s\n' "$owner" >"$f") 2>/dev/null; then
			# Reserved already: take it over only if its owner is gone.
			prev=$(cat "$f" 2>/dev/null) || continue
			[ -n "$prev" ] && [ -d "$prev" ] && continue
			printf '%s\n' "$owner" >"$f" || continue
		fi
		printf '%s\n' "$port" >>"$owner/ports"
		printf '%s\n' "$port"
		return 0
	done
	troupe_fail "found no free TCP port between $min and $max"
	return 1
}

troupe_release_ports() {
	local owner=$1 port f
	[ -f "$owner/ports" ] || return 0
	while read -r port; do
		f=/tmp/troupe-port-$port
		[ "$(cat "$f" 2>/dev/null)" = "$owner" ] && rm -f -- "$f"
	done <"$owner/ports"
	rm -f -- "$owner/ports"
}

# ---------------------------------------------------------------- packages

troupe_pkg_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# troupe_apt_install PROCS PKG...: install the missing PKGs with apt-get (one
# `apt-get update` first) without letting their maintainer scripts start services:
# a temporary /usr/sbin/policy-rc.d that exits 101 is put in place (unless one that
# already refuses is there) and removed afterwards. PROCS is a space-separated list
# of process names (as in /proc/PID/comm) the packages could start; any such new
# process not started by these scripts is stopped after the install. Installs are
# serialised with a lock, so parallel starts do not fight over dpkg.
troupe_apt_install() {
	local procs=$1 lock=/run/lock/troupe-apt-install.lock
	shift
	[ -d /run/lock ] || lock=/tmp/troupe-apt-install.lock
	(
		policy=/usr/sbin/policy-rc.d
		saved='' ours=''
		log=$(mktemp "${TMPDIR:-/tmp}/troupe-apt.XXXXXX")
		# shellcheck disable=SC2317 # run by the EXIT trap
		restore() {
			if [ -n "$ours" ]; then
				rm -f -- "$policy"
				[ -z "$saved" ] || mv -f -- "$saved" "$policy"
			fi
			rm -f -- "$log"
		}
		trap restore EXIT
		trap 'exit 130' INT
		trap 'exit 143' TERM

		flock -w 1800 9 || troupe_die "timed out waiting for $lock (another package install)"
		missing=()
		for p in "$@"; do troupe_pkg_installed "$p" || missing+=("$p"); done
		[ ${#missing[@]} -gt 0 ] || exit 0 # another run installed them meanwhile

		troupe_say "installing ${missing[*]} with apt-get (first use on this machine)"
		t0=$(troupe_clock)
		if [ -e "$policy" ]; then
			rc=0
			"$policy" "${missing[0]}" start >/dev/null 2>&1 || rc=$?
			if [ "$rc" != 101 ]; then
				saved=$policy.troupe-saved
				mv -f -- "$policy" "$saved"
			fi
		fi
		if [ ! -e "$policy" ]; then
			ours=1
			printf '#!/bin/sh\n# Temporary, from troupe scripts/lib.sh: keep package installs from starting services.\nexit 101\n' >"$policy"
			chmod 0755 "$policy"
		fi
		before=" $(ps -e -o pid= | tr -s ' \n' '  ') "

		export DEBIAN_FRONTEND=noninteractive
		apt_opts=(-q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
		if ! apt-get "${apt_opts[@]}" update >>"$log" 2>&1; then
			troupe_fail "apt-get update failed"
			troupe_tail "$log" 40
			exit 1
		fi
		if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
			troupe_fail "apt-get install ${missing[*]} failed"
			troupe_tail "$log" 40
			exit 1
		fi

		# Stop anything the install started anyway (it must not hold ports or epmd).
		strays=()
		while read -r pid comm; do
			[[ " $procs " == *" $comm "* ]] || continue
			[[ $before == *" $pid "* ]] && continue
			grep -qz -e '^TROUPE_SERVER_OWNER=' "/proc/$pid/environ" 2>/dev/null && continue
			strays+=("$pid")
		done < <(ps -e -o pid=,comm=)
		if [ ${#strays[@]} -gt 0 ]; then
			troupe_say "stopping processes started by the package install: ${strays[*]}"
			kill -TERM "${strays[@]}" 2>/dev/null || true
			troupe_wait_gone 15 "${strays[@]}" || kill -KILL "${strays[@]}" 2>/dev/null || true
		fi
		troupe_say "installed ${missing[*]} in $(troupe_since "$t0")"
	) 9>"$lock"
}

# ---------------------------------------------------------------- protocol probes

# troupe_amqp_probe PORT: true if an AMQP 0-9-1 broker answers on 127.0.0.1:PORT with
# a Connection.Start frame (type 1, channel 0, class 10, method 10).
troupe_amqp_probe() {
	local fd reply
	# (a plain `exec ... 2>/dev/null` would silence the whole script's stderr)
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
	{ printf 'AMQP\x00\x00\x09\x01' >&"$fd"; } 2>/dev/null || {
		exec {fd}>&-
		return 1
	}
	reply=$(timeout 5 head -c 11 <&"$fd" | od -An -tx1 | tr -d ' \n') || true
	exec {fd}>&-
	[[ $reply == 010000????????000a000a ]]
}

# troupe_stop_server SIGNAL PID USER: stop a server whose state is in $dir —
# signal its main process, wait for it (then SIGKILL), stop whatever else
# runs as USER for $dir, release its ports and remove $dir. Uses the
# caller's $dir and $root.
troupe_stop_server() {
	local sig=$1 pid=$2 user=$3
	if troupe_owned "$pid" "$dir"; then
		kill -"$sig" "$pid" 2>/dev/null || true
		troupe_wait_gone 20 "$pid" || kill -KILL "$pid" 2>/dev/null || true
	fi
	if ! troupe_kill_owner "$dir" "$user" 5; then
		troupe_fail "could not stop processes $(troupe_owner_pids "$dir" "$user" | tr '\n' ' ')of $dir"
		return 1
	fi
	troupe_release_ports "$dir"
	rm -rf -- "$dir"
	troupe_cleanup_state_root "$root"
}
