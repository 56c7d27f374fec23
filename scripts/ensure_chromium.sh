#!/usr/bin/env bash
# Makes sure Debian's Chromium is there when the suite has browser tests
# (tests/e2e/*.py). Playwright drives /usr/bin/chromium; `playwright install`
# downloads its own browser build and cannot work here, so it is never used.
set -euo pipefail

cd "$(dirname "$0")/.."
CHROMIUM=/usr/bin/chromium

# No browser tests, or the browser is already there: nothing to do.
if ! compgen -G "tests/e2e/*.py" >/dev/null; then
    exit 0
fi
if [[ -x $CHROMIUM ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    echo "ensure_chromium: $CHROMIUM missing; installing Debian's chromium" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    [[ -x $CHROMIUM ]] || { echo "ensure_chromium: chromium installed but $CHROMIUM is missing" >&2; exit 1; }
else
    echo "ensure_chromium: warning: $CHROMIUM is missing, browser tests in tests/e2e will fail;" \
        "install it with: sudo apt-get update && sudo apt-get install -y chromium" >&2
fi
