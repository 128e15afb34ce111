#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (the *_integration_test.go
# files that drive a headless Chromium with chromedp) when it is missing:
# one `apt-get update`, then `apt-get install chromium` (needs root). Quiet
# when chromium is there already; fails loudly when it cannot install it.
set -euo pipefail
TROUPE_NAME=browser-deps
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v chromium >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || troupe_die "chromium is missing and installing it needs root (apt-get install chromium)"
	troupe_apt_install "chromium" chromium
	command -v chromium >/dev/null 2>&1 || troupe_die "chromium is still missing after apt-get install chromium"
fi
