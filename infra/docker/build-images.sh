#!/bin/sh
# `make images`: builds the images of docker-compose.yml with the classic builder, reaching only
# Debian's mirror and PyPI (docs/deployment.md, "Building without a registry").
#
#   sh infra/docker/build-images.sh [IMAGE...]      IMAGE: cpu postgres seaweedfs gpu prometheus
#                                                   (default: all but prometheus, the monitoring profile's)
#
#   ETFUSE_BASE=local      (default) bases from debootstrap (infra/docker/base-image.sh):
#                          local/python:3.11-bookworm and local/debian:bookworm
#   ETFUSE_BASE=registry   the usual registry bases (python:3.11.14-slim-bookworm, debian:12.12-slim)
#   ETFUSE_IMAGE_CPU, ETFUSE_IMAGE_GPU, ETFUSE_IMAGE_POSTGRES, ETFUSE_IMAGE_SEAWEEDFS,
#   ETFUSE_IMAGE_PROMETHEUS: the tags
#                          (defaults as in docker-compose.yml; .env sets them for compose)
#
# Build-time inputs go to infra/docker/build-context/ (ignored by git), which only the build stages
# read: the host's CA bundle (PIP_CERT, else /etc/ssl/certs/ca-certificates.crt) for pip behind an
# HTTPS proxy, and the torch CPU wheel from PIP_FIND_LINKS when a folder there holds it.  Each build's
# log and time go to .cache/logs/.
set -eu

cd "$(dirname "$0")/../.."
base=${ETFUSE_BASE:-local}
images=${*:-cpu postgres seaweedfs gpu}
torch_version=2.13.0
context=infra/docker/build-context
logs=.cache/logs
mkdir -p "$context/wheels" "$logs"

case "$base" in
    local)
        sh infra/docker/base-image.sh
        python_image=local/python:3.11-bookworm debian_image=local/debian:bookworm ;;
    registry)
        python_image=${ETFUSE_PYTHON_IMAGE:-python:3.11.14-slim-bookworm}
        debian_image=${ETFUSE_DEBIAN_IMAGE:-debian:12.12-slim} ;;
    *) echo "build-images: ETFUSE_BASE must be local or registry, not '$base'" >&2; exit 2 ;;
esac

ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [ -s "$ca" ]; then
    cmp -s "$ca" "$context/ca-certificates.crt" || cp "$ca" "$context/ca-certificates.crt"
else
    rm -f "$context/ca-certificates.crt"
fi
# the torch CPU wheel (not on PyPI) from the folders of PIP_FIND_LINKS; hard-linked when possible
for folder in ${PIP_FIND_LINKS:-}; do
    folder=${folder#file://}
    for wheel in "$folder"/torch-"$torch_version"+cpu-*.whl; do
        [ -f "$wheel" ] || continue
        target="$context/wheels/$(basename "$wheel")"
        [ -f "$target" ] || ln "$wheel" "$target" 2>/dev/null || cp "$wheel" "$target"
    done
done

build() {   # build NAME TAG DOCKERFILE BUILD-ARGS...
    name=$1 tag=$2 dockerfile=$3
    shift 3
    started=$(date +%s)
    echo "build-images: $tag ($dockerfile, base: $base) ..."
    if ! DOCKER_BUILDKIT=0 docker build --network host --pull=false "$@" -f "$dockerfile" -t "$tag" . \
            > "$logs/build-$name.log" 2>&1; then
        tail -30 "$logs/build-$name.log" >&2
        echo "build-images: $tag failed (whole log: $logs/build-$name.log)" >&2
        exit 1
    fi
    seconds=$(( $(date +%s) - started ))
    size=$(docker image inspect --format '{{.Size}}' "$tag")
    echo "build-images: $tag built in ${seconds} s, $(( size / 1000000 )) MB"
    echo "$(date -u +%FT%TZ) $tag ${seconds}s ${size}B base=$base" >> "$logs/build-times.txt"
}

for image in $images; do
    case "$image" in
        cpu) build cpu "${ETFUSE_IMAGE_CPU:-etfuse-cpu:0.1.0}" infra/docker/Dockerfile.cpu \
                   --build-arg PYTHON_IMAGE="$python_image" ;;
        gpu) build gpu "${ETFUSE_IMAGE_GPU:-etfuse-gpu:0.1.0}" infra/docker/Dockerfile.gpu \
                   --build-arg PYTHON_IMAGE="$python_image" ;;
        postgres) build postgres "${ETFUSE_IMAGE_POSTGRES:-etfuse-postgres:15}" infra/docker/Dockerfile.postgres \
                   --build-arg DEBIAN_IMAGE="$debian_image" ;;
        seaweedfs) build seaweedfs "${ETFUSE_IMAGE_SEAWEEDFS:-etfuse-seaweedfs:4.48}" infra/docker/Dockerfile.seaweedfs \
                   --build-arg PYTHON_IMAGE="$python_image" --build-arg DEBIAN_IMAGE="$debian_image" ;;
        prometheus) build prometheus "${ETFUSE_IMAGE_PROMETHEUS:-etfuse-prometheus:2.42}" \
                   infra/docker/Dockerfile.prometheus --build-arg DEBIAN_IMAGE="$debian_image" ;;
        *) echo "build-images: unknown image '$image' (cpu postgres seaweedfs gpu prometheus)" >&2; exit 2 ;;
    esac
done
