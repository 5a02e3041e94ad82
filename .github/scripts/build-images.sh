#!/usr/bin/env bash
# Builds (and with PUSH=true pushes) images from docker/Dockerfile with
# docker buildx, in one job so the builder stage is compiled once for all.
#
#   .github/scripts/build-images.sh NAME:TARGET...
#
# Tags as docker/metadata-action would: sha-<commit>, the branch name on a
# branch, the version without its "v" on a v* tag; TAG_SUFFIX (e.g. -cuda) is
# appended to each. CARGO_FEATURES goes to the builder (cuda for the GPU image).
set -euo pipefail

registry="${REGISTRY:-ghcr.io}/${GITHUB_REPOSITORY_OWNER,,}"
suffix="${TAG_SUFFIX:-}"
push=()
[ "${PUSH:-false}" = true ] && push=(--push)
for spec in "$@"; do
    name="${spec%%:*}"
    target="${spec#*:}"
    tags=(-t "$registry/$name:sha-${GITHUB_SHA}$suffix")
    case "${GITHUB_REF_TYPE:-}" in
        branch) tags+=(-t "$registry/$name:${GITHUB_REF_NAME//\//-}$suffix") ;;
        tag) [[ "$GITHUB_REF_NAME" == v* ]] && tags+=(-t "$registry/$name:${GITHUB_REF_NAME#v}$suffix") ;;
    esac
    echo "::group::$name ($target)"
    docker buildx build -f docker/Dockerfile --target "$target" \
        --build-arg "BINARY=$name" --build-arg "CARGO_FEATURES=${CARGO_FEATURES:-}" \
        --label "org.opencontainers.image.revision=$GITHUB_SHA" \
        --cache-from "type=gha,scope=imageflow$suffix" --cache-to "type=gha,mode=max,scope=imageflow$suffix" \
        "${tags[@]}" "${push[@]}" .
    echo "::endgroup::"
done
