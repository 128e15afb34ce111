#!/usr/bin/env bash
# Check the compose file(s) given (default: docker-compose.yml at the repository
# root) with `docker-compose -f FILE config -q`, which validates and interpolates
# the file without a Docker engine. Installs Debian's docker-compose package with
# apt-get the first time (one `apt-get update` first; needs root), and fails
# loudly when it cannot.
set -euo pipefail
TROUPE_NAME=compose-check
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

if ! command -v docker-compose >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || troupe_die "docker-compose is missing and installing it needs root (apt-get install docker-compose)"
	troupe_apt_install "dockerd containerd" docker-compose
	command -v docker-compose >/dev/null 2>&1 || troupe_die "docker-compose is still missing after apt-get install docker-compose"
fi

files=("$@")
[ ${#files[@]} -gt 0 ] || files=("$root/docker-compose.yml")
for f in "${files[@]}"; do
	[ -f "$f" ] || troupe_die "no such compose file: $f"
	# config resolves build contexts and bind mounts relative to the file.
	if ! out=$(cd -- "$(dirname -- "$f")" && docker-compose -f "$(basename -- "$f")" config -q 2>&1); then
		troupe_fail "$f is not a valid compose file:"
		printf '%s\n' "$out" >&2
		exit 1
	fi
	[ -z "$out" ] || printf '%s\n' "$out" >&2 # warnings
	troupe_say "$f: valid ($(docker-compose version --short 2>/dev/null || echo '?'))"
done
