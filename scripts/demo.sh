#!/usr/bin/env bash
# Demo: build a tiny busybox image as an OCI layout (locally, no network), copy it into a fresh
# containers-storage store with bootc-image, then look at it with podman.
# Needs root (apt-get for missing packages, podman image mount, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."

demo=$PWD/demo-store
root=$demo/root
runroot=/tmp/bootc-demo-run # podman refuses runroots of 50 characters or more
oci=$demo/oci
store=(--root "$root" --runroot "$runroot" --storage-driver overlay)

step() { printf '\n== %s\n' "$*"; }
show() {
    printf '$ %s\n' "$*"
    "$@"
}
# podman leaves a store's overlay/ bind-mounted onto itself: unmount everything below $1.
unmount_under() {
    findmnt -rn -o TARGET | awk -v p="$1" 'index($0, p) == 1' | sort -r |
        while read -r m; do umount -l "$m"; done
}

step "packages and build"
./scripts/install-deps.sh
cargo build --release
bin=$PWD/target/release/bootc-image

step "a fresh demo directory: $demo"
unmount_under "$demo"
unmount_under "$runroot"
rm -rf "$demo" "$runroot"
mkdir -p "$demo"

step "building the demo image (busybox + /etc/os-release) as the OCI layout $oci:demo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$oci"
umoci new --image "$oci:demo"
umoci unpack --image "$oci:demo" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cat ls echo uname; do
    ln -s busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/os-release" <<'OS'
NAME="bootc-image demo"
ID=bootc-demo
VERSION_ID=1
PRETTY_NAME="bootc-image demo (busybox)"
OS
umoci repack --image "$oci:demo" "$work/bundle" >/dev/null
umoci config --image "$oci:demo" --config.cmd /bin/sh --config.env PATH=/bin
umoci gc --layout "$oci"
show jq -c '.manifests[] | {digest, tag: .annotations["org.opencontainers.image.ref.name"]}' "$oci/index.json"

step "copying it into the store with bootc-image"
show "$bin" "${store[@]}" copy-to-storage --source "oci:$oci:demo" --target localhost/demo

step "what podman sees"
show podman "${store[@]}" images
printf '$ podman %s image mount localhost/demo\n' "${store[*]}"
mnt=$(podman "${store[@]}" image mount localhost/demo)
echo "$mnt"
show chroot "$mnt" /bin/busybox cat /etc/os-release
show chroot "$mnt" /bin/ls -l /bin
show podman "${store[@]}" image unmount localhost/demo
unmount_under "$root"

step "done"
echo "The store is $root (runroot $runroot); use it with: podman ${store[*]} …"
echo "Remove it with: rm -rf '$demo' '$runroot'"
