#!/bin/sh
# sd-server's integration test (tests/server/server_test.mjs) as tests/run.sh runs it: installs the
# OpenAI client from package-lock.json the first time (npm ci), then runs the test against
# $SD_BIN_DIR/sd-server. Its last line is "N passed, N failed".
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/node_modules/openai" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2 || {
        echo "npm ci failed in $here"; echo "0 passed, 1 failed"; exit 1; }
fi
exec node "$here/server_test.mjs" "${SD_BIN_DIR:-bin}"
