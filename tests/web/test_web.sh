#!/bin/sh
# The web page test (page.test.mjs: sd-server's page in headless Chromium through puppeteer-core),
# run by tests/run.sh in `make test`. Installs puppeteer-core from package-lock.json (npm ci) when
# node_modules is missing or older than the lock file. Needs Debian's nodejs, npm and chromium;
# CHROMIUM=/path/to/chrome picks another browser. Ends with "N passed, N failed" like every test.
cd "$(dirname "$0")" || exit 1
fail() {
    echo "FAIL tests/web: $*"
    echo "0 passed, 1 failed"
    exit 1
}
command -v node >/dev/null 2>&1 || fail "node is missing (sudo apt-get install nodejs npm)"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || fail "Chromium is missing at $CHROMIUM (sudo apt-get install chromium, or set CHROMIUM)"
export CHROMIUM
if [ ! -d node_modules/puppeteer-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    command -v npm >/dev/null 2>&1 || fail "npm is missing (sudo apt-get install npm)"
    npm ci --no-audit --no-fund --loglevel=error || fail "npm ci failed in tests/web (puppeteer-core from the npm registry)"
fi
exec node page.test.mjs
