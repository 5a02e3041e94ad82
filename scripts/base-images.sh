#!/usr/bin/env bash
# The hooks below are shell snippets mmdebstrap runs with the new root as $1.
# shellcheck disable=SC2016
# Builds local stand-ins for the base images docker/Dockerfile names, for a
# machine that reaches Debian's packages but no container registry. Each is
# made with mmdebstrap from Debian bookworm and stored in buildah's image store
# under localhost/imageflow-base/..., once: a second run only checks them.
#
#   rust        bookworm + what the official rust:slim image adds (ca-certificates,
#               gcc, libc6-dev, wget) + this machine's Rust toolchain (rustc, cargo,
#               rust-std; docs left out) at the official image's paths
#   python      bookworm + python3.11, pip and venv as `python`/`pip` (no PEP 668
#               marker, as in the official image)
#   node        bookworm + this machine's Node.js 20 and npm (Debian's own node is
#               18, too old for Vite 7) at the official image's paths
#   distroless  libc, libgcc, libstdc++, libssl3, ca-certificates, tzdata, netbase
#               and user 65532 (nonroot), unpacked without a shell or dpkg, as
#               gcr.io/distroless/cc-debian12:nonroot has them
#
# Prints the build arguments that select them, one --build-arg per line.
# No CA bundle of this machine goes into any of them: builds mount it (see
# scripts/build-images.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Each recipe's version, bumped when it changes so that stand-in is made
# again (and only that one: a new rust stand-in means a cold Rust build).
declare -A RECIPE=([rust]=2 [python]=2 [node]=2 [distroless]=4)
PREFIX=localhost/imageflow-base
RUST_VERSION="$(rustc --version | awk '{print $2}')"
RUST_TAG="$PREFIX/rust:$RUST_VERSION-slim-bookworm"
PYTHON_TAG="$PREFIX/python:3.11-slim-bookworm"
NODE_TAG="$PREFIX/node:20-bookworm-slim"
DISTROLESS_TAG="$PREFIX/distroless-cc-debian12:nonroot"
SOURCES='deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main'

apt_ensure buildah=buildah mmdebstrap=mmdebstrap

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

current() { # tag recipe -> true when the image exists and was made by this recipe
    [ "$(buildah inspect --type image --format '{{index .ImageAnnotations "org.imageflow.base-recipe"}}' "$1" 2>/dev/null)" = "${RECIPE[$2]}" ]
}

# rootfs tarball + image settings -> an image in buildah's store.
commit() { # tag recipe tarball [buildah config args...]
    local tag="$1" recipe="$2" tarball="$3" ctr
    shift 3
    ctr="$(buildah from scratch)"
    buildah add --quiet "$ctr" "$tarball" / >/dev/null
    buildah config --annotation "org.imageflow.base-recipe=${RECIPE[$recipe]}" \
        --label "org.opencontainers.image.description=local stand-in made by scripts/base-images.sh" \
        "$@" "$ctr"
    buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
    log "made $tag ($(buildah images --format '{{.Size}}' "$tag"))"
}

debootstrap() { # tarball variant packages [mmdebstrap options...]
    local tarball="$1" variant="$2" packages="$3"
    shift 3
    # Documentation, man pages and locales are what the slim images drop too.
    mmdebstrap --quiet --variant="$variant" --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$@" bookworm "$tarball" - <<<"$SOURCES"
}

if ! current "$RUST_TAG" rust; then
    log "making $RUST_TAG (bookworm + this machine's Rust $RUST_VERSION)"
    toolchain="$(rustc --print sysroot)"
    tar -C "$toolchain" --exclude=./share/doc --exclude=./share/man -cf "$work/toolchain.tar" .
    debootstrap "$work/rust.tar" minbase ca-certificates,gcc,libc6-dev,wget \
        --customize-hook='mkdir -p "$1/usr/local/rustup/toolchain" "$1/usr/local/cargo/bin"' \
        --customize-hook="tar -C \"\$1/usr/local/rustup/toolchain\" -xf $work/toolchain.tar" \
        --customize-hook='for b in cargo rustc rustdoc; do ln -s ../../rustup/toolchain/bin/$b "$1/usr/local/cargo/bin/$b"; done'
    commit "$RUST_TAG" rust "$work/rust.tar" \
        --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
        --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env RUST_VERSION="$RUST_VERSION" --cmd /bin/bash
    rm -f "$work/toolchain.tar" "$work/rust.tar"
fi

if ! current "$PYTHON_TAG" python; then
    log "making $PYTHON_TAG"
    debootstrap "$work/python.tar" minbase ca-certificates,python3,python3-pip,python3-venv \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='ln -s /usr/bin/python3 "$1/usr/local/bin/python"; ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"'
    commit "$PYTHON_TAG" python "$work/python.tar" --env LANG=C.UTF-8 --cmd python3
    rm -f "$work/python.tar"
fi

if ! current "$NODE_TAG" node; then
    node_version="$(node --version 2>/dev/null || true)"
    case "$node_version" in
        v2[0-9].*) ;;
        *) die "the node stand-in is made from this machine's Node.js 20 or newer (found '${node_version:-none}')" ;;
    esac
    log "making $NODE_TAG (node $node_version, npm $(npm --version))"
    # Where the official image keeps them: /usr/local/bin/node and npm's tree.
    node_bin="$(readlink -f "$(command -v node)")"
    npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
    mkdir -p "$work/node/usr/local/bin" "$work/node/usr/local/lib/node_modules"
    cp "$node_bin" "$work/node/usr/local/bin/node"
    cp -a "$npm_dir" "$work/node/usr/local/lib/node_modules/npm"
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/node/usr/local/bin/npm"
    ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/node/usr/local/bin/npx"
    tar -C "$work/node" -cf "$work/node-tree.tar" .
    debootstrap "$work/node.tar" minbase ca-certificates,libstdc++6 \
        --customize-hook="tar -C \"\$1\" -xf $work/node-tree.tar" \
        --customize-hook='chroot "$1" useradd --uid 1000 --create-home --shell /bin/bash node'
    commit "$NODE_TAG" node "$work/node.tar" --env NODE_VERSION="${node_version#v}" --cmd node
    rm -rf "$work/node" "$work/node-tree.tar" "$work/node.tar"
fi

if ! current "$DISTROLESS_TAG" distroless; then
    log "making $DISTROLESS_TAG"
    # extract: packages unpacked, no maintainer scripts; mmdebstrap runs no
    # hooks for it, so what the scripts would have made is made here, and what
    # came in as dependencies (debconf, perl, openssl's tools, shells) goes.
    debootstrap "$work/distroless.tar" extract \
        base-files,libc6,libgcc-s1,libstdc++6,libssl3,zlib1g,ca-certificates,tzdata,netbase
    root="${work:?}/distroless"
    mkdir -p "$root"
    tar -C "$root" -xf "$work/distroless.tar"
    cat "${root:?}"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
    printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin" \
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >"$root/etc/passwd"
    printf '%s\n' "root:x:0:" "nobody:x:65534:" "nonroot:x:65532:" >"$root/etc/group"
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
    rm -rf "${root:?}"/usr/share/ca-certificates "${root:?}"/usr/share/doc "${root:?}"/usr/share/man "${root:?}"/usr/share/info \
        "${root:?}"/usr/share/lintian "${root:?}"/usr/share/perl5 "${root:?}"/usr/share/debconf "${root:?}"/usr/share/locale \
        "${root:?}"/usr/lib/x86_64-linux-gnu/gconv "${root:?}"/usr/lib/x86_64-linux-gnu/perl* "${root:?}"/usr/lib/ssl/misc \
        "${root:?}"/usr/bin/* "${root:?}"/usr/sbin/* "${root:?}"/bin/* "${root:?}"/sbin/* \
        "${root:?}"/var/lib/dpkg "${root:?}"/var/cache/* "${root:?}"/var/log/* "${root:?}"/etc/apt "${root:?}"/etc/debconf.conf
    mkdir -p "$root/home/nonroot" "$root/tmp" "$root/var/lib/dpkg"
    chown 65532:65532 "$root/home/nonroot"
    chmod 1777 "$root/tmp"
    tar -C "$root" -cf "$work/distroless.tar" .
    rm -rf "$root"
    commit "$DISTROLESS_TAG" distroless "$work/distroless.tar" --user 65532:65532 --workingdir /home/nonroot \
        --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    rm -f "$work/distroless.tar"
fi

printf -- '--build-arg=RUST_IMAGE=%s\n--build-arg=PYTHON_IMAGE=%s\n--build-arg=NODE_IMAGE=%s\n--build-arg=RUNTIME_IMAGE=%s\n' \
    "$RUST_TAG" "$PYTHON_TAG" "$NODE_TAG" "$DISTROLESS_TAG"
