#!/usr/bin/env bash
# Builds the images of backend-api, resize-svc, filter-svc, ai-detect-svc (CPU)
# and imageflowctl from docker/Dockerfile with buildah (no Docker engine is
# needed). The Dockerfile's builder stage compiles all five binaries in one
# cargo run; buildah's layer cache hands that stage to the other four images,
# and its cache mounts keep cargo's registry and target folder, so a rebuild
# after a source change recompiles only the workspace's own crates.
#
#   scripts/build-images.sh [--bases standin|upstream] [--tag TAG] [--registry REGISTRY] [--save DIR]
#
#   --bases standin    (default) base images made locally from Debian packages by
#                      scripts/base-images.sh, for machines without a registry
#   --bases upstream   the Dockerfile's own FROM images (rust, python, node,
#                      distroless), pulled from their registries
#   --registry         image names are REGISTRY/<binary>:TAG, as the chart names
#                      them (default: the chart's global.imageRegistry)
#   --tag              default: the chart's appVersion
#   --only-if-warm     build only when an earlier build left its caches (stand-in
#                      bases, cargo's cache mount, the images); else say so and
#                      exit 3. scripts/test.sh uses it: a cold build (~35 min on 2
#                      cores) does not fit in CI beside the suite.
#   --save DIR         also write each image as DIR/<name>.tar (docker-archive), what
#                      `k3s ctr images import` and scripts/setup-k3s.sh --images DIR take
#
# Progress: each Dockerfile step and cargo's progress as they happen, the full
# log in $IMAGEFLOW_CACHE/images/build.log; at the end a table of image sizes.
# The machine's CA bundle (SSL_CERT_FILE) is mounted into the build's RUN steps
# for cargo, pip and npm, never copied into a layer.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

bases=standin
save_dir=""
only_if_warm=false
chart_image_defaults
while [ $# -gt 0 ]; do
    case "$1" in
        --bases) bases="${2:?}"; shift 2 ;;
        --tag) tag="${2:?}"; shift 2 ;;
        --registry) registry="${2:?}"; shift 2 ;;
        --save) save_dir="${2:?}"; shift 2 ;;
        --only-if-warm) only_if_warm=true; shift ;;
        *) die "usage: scripts/build-images.sh [--bases standin|upstream] [--tag TAG] [--registry REGISTRY] [--save DIR] [--only-if-warm]" ;;
    esac
done

# image name : Dockerfile target : binary
IMAGES=(
    "backend-api:backend-api:backend-api"
    "resize-svc:service:resize-svc"
    "filter-svc:service:filter-svc"
    "ai-detect-svc:ai-detect-cpu:ai-detect-svc"
    "imageflowctl:service:imageflowctl"
)

if "$only_if_warm"; then
    warm=true
    command -v buildah >/dev/null || warm=false
    # Where buildah keeps RUN --mount=type=cache folders (root's).
    [ -d "${TMPDIR:-/var/tmp}/buildah-cache/imageflow-target/release" ] || warm=false
    for entry in "${IMAGES[@]}"; do
        IFS=: read -r name _ _ <<<"$entry"
        "$warm" && { buildah inspect --type image "$registry/$name:$tag" >/dev/null 2>&1 || warm=false; }
    done
    if ! "$warm"; then
        log "the image build cache is cold: images not built here (a first build takes about 35 min on 2 cores; scripts/build-images.sh makes it warm)"
        exit 3
    fi
fi

apt_ensure buildah=buildah

base_args=()
case "$bases" in
    standin) mapfile -t base_args < <("$REPO_ROOT/scripts/base-images.sh") ;;
    upstream) ;;
    *) die "--bases is standin or upstream, not '$bases'" ;;
esac

# cargo and pip read the system bundle; npm reads the cafile of its global
# npmrc ($PREFIX/etc/npmrc, /usr/local/etc/npmrc in the node image).
mounts=()
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
log_dir="$IMAGEFLOW_CACHE/images"
mkdir -p "$log_dir"
if [ -f "$ca_bundle" ]; then
    printf 'cafile=/etc/ssl/certs/ca-certificates.crt\n' >"$log_dir/npmrc"
    mounts=(--volume "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro"
        --volume "$log_dir/npmrc:/usr/local/etc/npmrc:ro")
fi

build_log="$log_dir/build.log"
: >"$build_log"
started=$SECONDS
# The binaries report it as service.version (GIT_REVISION: the build context
# has no .git); empty outside a checkout, and they fall back to their version.
revision="$(git rev-parse --short=12 HEAD 2>/dev/null || true)"
for entry in "${IMAGES[@]}"; do
    IFS=: read -r name target binary <<<"$entry"
    image="$registry/$name:$tag"
    log "building $image (target $target; log: $build_log)"
    step_started=$SECONDS
    # Steps and cargo's progress lines go to the terminal; everything to the log.
    if ! buildah bud --isolation chroot --layers --quiet=false \
        -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore \
        --target "$target" --build-arg "BINARY=$binary" --build-arg "GIT_REVISION=$revision" \
        "${base_args[@]}" "${mounts[@]}" \
        --label "org.opencontainers.image.revision=${revision:-unknown}" \
        --label "org.opencontainers.image.version=$tag" \
        --label "org.opencontainers.image.description=ImageFlowCanvas $name" \
        -t "$image" . 2>&1 | tee -a "$build_log" \
        | grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] STEP [0-9]+/[0-9]+|COMMIT|--> Using cache)|^ *(Compiling|Finished) |^(error|warning: unused)|npm (ERR|error)|^ERROR'; then
        die "building $image failed; the last lines of $build_log:
$(tail -n 30 "$build_log")"
    fi
    buildah inspect --type image "$image" >/dev/null 2>&1 || die "$image is not in buildah's store after its build (see $build_log)"
    log "built $image in $((SECONDS - step_started)) s"
done

log "images built in $((SECONDS - started)) s"
printf '\n%-48s %10s  %s\n' IMAGE SIZE "BINARY (stripped of debug info)"
for entry in "${IMAGES[@]}"; do
    IFS=: read -r name _ _ <<<"$entry"
    image="$registry/$name:$tag"
    size="$(buildah images --format '{{.Size}}' "$image" | head -n 1)"
    ctr="$(buildah from --quiet "$image")"
    mnt="$(buildah mount "$ctr")"
    binary_size="$(du -h "$mnt/usr/local/bin/app" | cut -f1)"
    buildah umount "$ctr" >/dev/null
    buildah rm "$ctr" >/dev/null
    printf '%-48s %10s  %s\n' "$image" "$size" "$binary_size"
done

if [ -n "$save_dir" ]; then
    mkdir -p "$save_dir"
    for entry in "${IMAGES[@]}"; do
        IFS=: read -r name _ _ <<<"$entry"
        image="$registry/$name:$tag"
        rm -f "$save_dir/$name.tar"
        buildah push --quiet "$image" "docker-archive:$save_dir/$name.tar:$image" >/dev/null
        log "saved $image as $save_dir/$name.tar ($(du -h "$save_dir/$name.tar" | cut -f1))"
    done
fi
