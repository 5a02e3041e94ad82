#!/usr/bin/env bash
# Builds the web UI (web/, Preact + TypeScript with Vite) into web/dist, which
# backend-api serves at / (its UI_DIR setting). Installs the locked npm
# packages into web/node_modules when package-lock.json changed, with npm's
# cache under ~/.cache/imageflow/npm so a re-run on the same machine is fast.
#   --if-stale   do nothing when web/dist is newer than every source file
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT/web"

if_stale=false
[ "${1:-}" = "--if-stale" ] && if_stale=true

if "$if_stale" && [ -f dist/index.html ] \
    && [ -z "$(find index.html package.json package-lock.json tsconfig.json vite.config.ts src \
        -newer dist/index.html -print -quit)" ]; then
    exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    die "the web UI needs Node.js 20 and npm to build (Debian: apt-get install nodejs npm)"
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
    || die "Vite 7 needs Node.js 20.19 or newer; found $(node --version)"

export npm_config_cache="$IMAGEFLOW_CACHE/npm"
export npm_config_update_notifier=false
stamp=node_modules/.imageflow-package-lock.json
if ! cmp -s package-lock.json "$stamp"; then
    log "installing the web UI's npm packages (npm ci)"
    # npm ci only, no npm install fallback: a lock file out of step with
    # package.json (e.g. missing other platforms' optional rollup builds) must
    # fail here, not be papered over on one machine and refused on the next.
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$stamp"
fi
log "building the web UI into web/dist"
npm run --silent build -- --logLevel warn
