#!/usr/bin/env bash
# Installs the Debian 12 packages that the build, the tests, the bench and the demo need.
# Does nothing when they are all there; otherwise needs root (apt-get update + install).
set -euo pipefail

packages=(
    build-essential pkg-config zlib1g-dev libzstd-dev # the C parts of the zstd/zlib crates
    libostree-dev libglib2.0-dev ostree libssl-dev    # the ostree feature (host images), its tests and fixture tool
    podman skopeo umoci                               # the peers the tests and the bench compare with
    jq attr zstd python3 busybox-static               # fixtures, demo, lock tests
    time util-linux e2fsprogs                         # bench: GNU time, losetup/mount, mkfs.ext4
    shellcheck                                        # lint of scripts/ and .ci/run
    debootstrap                                       # podman 5 check: a Debian 13 chroot
    docker-registry apache2-utils                     # registry tests: distribution 2.8, htpasswd -B
    xfsprogs                                          # composefs reflink test and BENCH_FS=xfs
    curl                                              # seam test: bootc's libpod pull over a Unix socket
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all packages present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: run as root to install: ${missing[*]}" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
