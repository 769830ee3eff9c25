#!/bin/sh
# Builds the local base images of the stack without a registry (docs/deployment.md, "Building
# without a registry"): a Debian bookworm root file system made by debootstrap (minbase), imported
# as two images:
#
#   local/debian:bookworm        minbase + ca-certificates: base of the PostgreSQL image
#   local/python:3.11-bookworm   the same + Debian's python3.11 (venv, pip), `python` -> python3:
#                                stands in for python:3.11-slim-bookworm (etfuse, SeaweedFS, GPU)
#
# An image the engine already holds is kept while younger than ETFUSE_BASE_MAX_AGE_DAYS (default 30;
# then it is made again, for Debian's security updates): importing anew would change its id and make
# every build on it cold.  The root file systems are cached as tarballs in .cache/base/ (ignored by
# git) under the same age rule.  The mirror is the one this host's apt uses (ETFUSE_DEBIAN_MIRROR overrides it).
# Needs root and debootstrap.  Usage: sh infra/docker/base-image.sh [--force]
set -eu

cd "$(dirname "$0")/../.."
cache=.cache/base
max_age=${ETFUSE_BASE_MAX_AGE_DAYS:-30}
force=no
[ "${1:-}" = "--force" ] && force=yes

mirror=${ETFUSE_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    # the first bookworm main source of apt: deb822 (.sources) or one-line format
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '/^URIs:/ {uri=$2} /^Suites:/ && / bookworm( |$)/ && uri !~ /security/ {print uri; exit}')
    [ -n "$mirror" ] || mirror=$(grep -hE '^deb .* bookworm main' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                                 2>/dev/null | awk '{print $2; exit}')
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi

command -v debootstrap >/dev/null || { echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 2; }
mkdir -p "$cache"

# make_rootfs NAME PACKAGES: .cache/base/NAME.tar, made by debootstrap unless fresh enough
make_rootfs() {
    name=$1 packages=$2 tarball="$cache/$1.tar"
    if [ "$force" = no ] && [ -s "$tarball" ] && [ -n "$(find "$tarball" -mtime "-$max_age")" ]; then
        echo "base-image: $tarball is cached ($(du -h "$tarball" | cut -f1))"
        return
    fi
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/etfuse-rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    echo "base-image: debootstrap --variant=minbase bookworm from $mirror (+ $packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" > "$cache/$name.log" 2>&1 \
        || { tail -20 "$cache/$name.log" >&2; exit 1; }
    # slim it the way the registry's -slim images are: no apt lists, caches, docs or man pages
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    # apt inside builds reaches the same mirror (the build's network is the host's)
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" > "$rootfs/etc/apt/sources.list"
    [ -e "$rootfs/usr/bin/python3" ] && ln -sf python3 "$rootfs/usr/bin/python"
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
}

# fresh_image TAG: the engine holds TAG, made less than max_age days ago.  Importing again would give
# it a new id, and every image built on it would miss the layer cache (a cold build of all images).
fresh_image() {
    created=$(docker image inspect --format '{{.Created}}' "$1" 2>/dev/null) || return 1
    [ "$force" = no ] && [ $(( $(date +%s) - $(date -d "$created" +%s) )) -lt $(( max_age * 86400 )) ]
}

# import_base TAG NAME PACKAGES CMD
import_base() {
    if fresh_image "$1"; then
        echo "base-image: $1 is in the engine (made $(docker image inspect --format '{{.Created}}' "$1"))"
        return
    fi
    make_rootfs "$2" "$3"
    docker import --change "CMD [\"$4\"]" --change 'ENV LANG=C.UTF-8' "$cache/$2.tar" "$1" >/dev/null
    echo "base-image: $1 imported from $cache/$2.tar"
}

import_base local/debian:bookworm debian-bookworm ca-certificates /bin/bash
import_base local/python:3.11-bookworm python-bookworm ca-certificates,python3,python3-venv,python3-pip python3
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^local/'
