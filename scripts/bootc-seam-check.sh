#!/usr/bin/env bash
# Stock bootc 1.16.9, unpatched, doing its storage work through bootc-image (issue 24, docs/bootc.md):
# bootc-image is BOOTC_EXP_EXTERNAL_CONTAINER_TOOL and PATH's `podman` and `skopeo`, while the real
# podman and skopeo are made unusable (/bin/false bound over them in a private mount namespace).
# Real podman 4.3 judges the stores afterwards. The checks are the bootc commands that run off a
# booted host (docs/bootc.md lists which seam calls each makes):
#
#   encapsulate       bootc internals ostree-container encapsulate … containers-storage:…  (skopeo copy)
#   image-pull        bootc internals ostree-container image pull … ostree-unverified-image:containers-storage:…
#                     (the image proxy: GetLayerInfoPiped, GetBlob by DiffID)
#   composefs-digest  bootc container compute-composefs-digest-from-storage, with and without an
#                     image (the proxy through the seam with STORAGE_OPTS, and through PATH)
#   install-completion bootc internals bootc-install-completion on an `ostree admin` sysroot with a
#                     bound image (podman's images, image exists, image pull on bootc's store)
#   reexport          bootc internals ostree-container image reexport … containers-storage:… (the
#                     proxy, then skopeo copy): the same digest as with Debian's own skopeo
#   detached-metadata bootc internals ostree-container image replace-detached-metadata (skopeo copy
#                     into an OCI layout and back)
#   registry-native   … image pull ostree-unverified-registry:… from a loopback docker-registry, with
#                     PATH's skopeo ours reading the registry natively (BOOTC_IMAGE_VIA=native):
#                     no skopeo at all
#   cstor-0.7         composefs-storage at the revision bootc 1.16.9 pins (its unified composefs
#                     pull's reader) imports an image bootc-image built into a store: the same
#                     composefs image (EROFS id) as composefs-oci's import of its OCI export
#
# Each prints PASS or FAIL; the last line is `bootc-seam-check: N passed, M failed`. Also shown, not
# counted: the image pull with Debian's own skopeo (1.9.3), which fails ("skopeo too old").
# Needs root, ostree, podman, unshare. Builds bootc once (scripts/build-bootc.sh, ~5 minutes).
# Environment: BOOTC_BUILD (default /var/tmp/bootc-image-bootc, reused), SEAM_BASE (default
#   /var/tmp/bootc-seam, wiped), BOOTC_IMAGE_BIN (default target/debug/bootc-image, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build=${BOOTC_BUILD:-/var/tmp/bootc-image-bootc}
base=${SEAM_BASE:-/var/tmp/bootc-seam}
ours=${BOOTC_IMAGE_BIN:-$repo/target/debug/bootc-image}
bootc=$build/target/debug/bootc
passed=0
failed=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

[ -x "$ours" ] || cargo build -q --bin bootc-image
[ -x "$bootc" ] || scripts/build-bootc.sh "$build"

# podman leaves its overlay directory mounted on itself; deployments are immutable.
unmount_below() { awk -v b="$1" '$5 ~ "^"b {print $5}' /proc/self/mountinfo | sort -r | xargs -r umount -l; }
if [ -d "$base" ]; then
  unmount_below "$base"
  chattr -R -i "$base" 2>/dev/null || true
  rm -rf "$base"
fi
mkdir -p "$base"/{links,store/root,store/run,tree}
ln -s "$ours" "$base/links/podman"
ln -s "$ours" "$base/links/skopeo"
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
  "$base/store/root" "$base/store/run" >"$base/storage.conf"
real_podman() { /usr/bin/podman --root "$1" --runroot "$base/podman-run" "${@:2}"; }
# Whether real podman lists NAME in the store at ROOT. (Not `podman … | grep -q`: with pipefail,
# grep leaving early makes podman die of SIGPIPE and the pipeline fail.)
lists() { # ROOT NAME
  local names
  names=$(real_podman "$1" images --format '{{.Names}}') && grep -qF "$2" <<<"$names"
}

# A bootable-looking tree: a kernel and initramfs, os-release, a bound image, /boot, /sysroot, /var.
t=$base/tree
mkdir -p "$t"/{boot,sysroot,var,usr/bin,usr/etc,usr/lib/modules/6.1.0,usr/lib/bootc/bound-images.d,usr/share/containers/systemd}
cp /bin/true "$t/usr/bin/"
echo hello >"$t/usr/lib/hello"
echo kernel >"$t/usr/lib/modules/6.1.0/vmlinuz"
echo initramfs >"$t/usr/lib/modules/6.1.0/initramfs.img"
printf 'ID=debian\nVERSION_ID=12\nNAME=seam-check\n' >"$t/usr/lib/os-release"
cp "$t/usr/lib/os-release" "$t/usr/etc/os-release"
printf '[Image]\nImage=oci:%s/layout:bound\n' "$base" >"$t/usr/share/containers/systemd/b.image"
ln -s /usr/share/containers/systemd/b.image "$t/usr/lib/bootc/bound-images.d/b.image"
ostree --repo="$base/repo" init --mode=archive
ostree --repo="$base/repo" commit -b os --tree=dir="$t" -s seam >/dev/null

# Runs a command as bootc runs on such a machine, with bootc-image behind the seam and the real
# tools unusable (its own PID namespace: bootc reads /proc/1).
# shellcheck disable=SC2016 # the inner script expands its own variables
seam() {
  env BOOTC_EXP_EXTERNAL_CONTAINER_TOOL="$base/links/podman" PATH="$base/links:$PATH" \
    CONTAINERS_STORAGE_CONF="$base/storage.conf" RUST_LOG='' \
    unshare -m --pid --fork --mount-proc sh -c '
      for t in podman skopeo; do
        p=$(command -v -p "$t" || true)
        if [ -n "$p" ]; then mount --bind /bin/false "$p"; fi
      done
      exec "$@"' sh "$@"
}

# Whether the commit an `image pull` printed (its output OUT) checks out from REPO into DIR as the
# committed tree.
pulled_tree_is_ours() { # OUT REPO DIR
  local commit
  commit=$(sed -n 's/.* => //p' <<<"$1" | tail -1)
  ostree --repo="$2" checkout -U "$commit" "$3" && diff -r --no-dereference "$t/usr" "$3/usr" >/dev/null
}

echo "== encapsulate"
if out=$(seam "$bootc" internals ostree-container encapsulate --repo "$base/repo" os \
  containers-storage:localhost/enc:1 2>&1) &&
  lists "$base/store/root" localhost/enc:1; then
  pass encapsulate
else
  fail encapsulate "$out"
fi

echo "== image-pull"
ostree --repo="$base/repo2" init --mode=bare-user
if out=$(seam "$bootc" internals ostree-container image pull "$base/repo2" \
  ostree-unverified-image:containers-storage:localhost/enc:1 2>&1); then
  if pulled_tree_is_ours "$out" "$base/repo2" "$base/checkout"; then
    pass image-pull
  else
    fail image-pull "the checkout differs from the committed tree"
  fi
else
  fail image-pull "$out"
fi
echo "-- the same pull with Debian's skopeo (not counted):"
ostree --repo="$base/repo3" init --mode=bare-user
CONTAINERS_STORAGE_CONF=$base/storage.conf "$bootc" internals ostree-container image pull \
  "$base/repo3" ostree-unverified-image:containers-storage:localhost/enc:1 2>&1 | tail -1 || true

echo "== composefs-digest"
id=$(real_podman "$base/store/root" images -q --no-trunc localhost/enc:1 | sed 's/^sha256://')
# shellcheck disable=SC2016 # the inner script expands its own variables
digests=$(seam sh -c '
  mount -t tmpfs tmpfs /run
  mkdir -p /run/host-container-storage
  mount --bind "$1" /run/host-container-storage
  printf "engine=\"podman-4.3.1\"\nimageid=\"%s\"\n" "$2" >/run/.containerenv
  "$3" container compute-composefs-digest-from-storage
  "$3" container compute-composefs-digest-from-storage localhost/enc:1
' sh "$base/store/root" "$id" "$bootc" 2>&1) || true
if [ "$(grep -cE '^[0-9a-f]{128}$' <<<"$digests")" = 2 ] && [ "$(sort -u <<<"$digests" | wc -l)" = 1 ]; then
  pass composefs-digest
else
  fail composefs-digest "$digests"
fi

echo "== install-completion"
real_podman "$base/store/root" push -q localhost/enc:1 "oci:$base/layout:bound" >/dev/null 2>&1 ||
  /usr/bin/skopeo copy -q "containers-storage:[overlay@$base/store/root+$base/store/run]localhost/enc:1" "oci:$base/layout:bound"
sysroot=$base/sysroot
mkdir -p "$sysroot"
{
  ostree admin init-fs --modern "$sysroot"
  ostree admin --sysroot="$sysroot" os-init default
  ostree --repo="$sysroot/ostree/repo" pull-local "$base/repo" os
  ostree admin --sysroot="$sysroot" deploy --os=default os
} >/dev/null 2>&1
if out=$(seam "$bootc" internals bootc-install-completion "$sysroot" default 2>&1) &&
  lists "$sysroot/ostree/bootc/storage" localhost/bound:latest; then
  pass install-completion
else
  fail install-completion "$out"
fi

echo "== reexport"
# The pull above left the image in repo2; Debian's skopeo can do this one (no GetLayerInfo needed).
if out=$(seam "$bootc" internals ostree-container image reexport --repo "$base/repo2" \
  containers-storage:localhost/enc:1 containers-storage:localhost/re-seam:1 2>&1); then
  ours_digest=$(sed -n 's/^Exported: //p' <<<"$out")
  theirs=$(CONTAINERS_STORAGE_CONF=$base/storage.conf "$bootc" internals ostree-container image reexport \
    --repo "$base/repo2" containers-storage:localhost/enc:1 containers-storage:localhost/re-skopeo:1 2>&1 |
    sed -n 's/^Exported: //p')
  if [ -n "$ours_digest" ] && [ "$ours_digest" = "$theirs" ]; then
    pass reexport
  else
    fail reexport "through the seam $ours_digest, with Debian's skopeo ${theirs:-(failed)}"
  fi
else
  fail reexport "$out"
fi

echo "== detached-metadata"
if out=$(seam "$bootc" internals ostree-container image replace-detached-metadata \
  --src containers-storage:localhost/enc:1 --dest containers-storage:localhost/meta:1 2>&1) &&
  lists "$base/store/root" localhost/meta:1; then
  pass detached-metadata
else
  fail detached-metadata "$out"
fi

echo "== registry-native"
# bootc's ordinary pull from a registry with no skopeo at all: PATH's skopeo is ours, and it reads
# the registry with bootc-image's own client (BOOTC_IMAGE_VIA=native).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$base/registry/data"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$base/registry/data" "$port" >"$base/registry/config.yml"
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" >"$base/registries.conf"
docker-registry serve "$base/registry/config.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
ostree --repo="$base/repo5" init --mode=bare-user
if /usr/bin/skopeo copy -q --dest-tls-verify=false \
  "containers-storage:[overlay@$base/store/root+$base/store/run]localhost/enc:1" \
  "docker://127.0.0.1:$port/enc:1" &&
  out=$(
    export BOOTC_IMAGE_VIA=native CONTAINERS_REGISTRIES_CONF="$base/registries.conf"
    seam "$bootc" internals ostree-container image pull "$base/repo5" \
      "ostree-unverified-registry:127.0.0.1:$port/enc:1" 2>&1
  ); then
  if pulled_tree_is_ours "$out" "$base/repo5" "$base/checkout5"; then
    pass registry-native
  else
    fail registry-native "the checkout differs from the committed tree"
  fi
else
  fail registry-native "${out:-the image could not be pushed to the test registry}"
fi
kill "$registry_pid" 2>/dev/null || true

echo "== cstor-0.7"
# The fixture tool of tests/composefs-fixture, built against bootc's pinned composefs-rs (0.7.0),
# sharing bootc's lock file and target directory.
cstor_tool() {
  local dir=$build/cstor-0.7
  mkdir -p "$dir"
  cat >"$dir/Cargo.toml" <<TOML
[package]
name = "composefs-fixture"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

[[bin]]
name = "composefs-fixture"
path = "$repo/tests/composefs-fixture/src/main.rs"

[dependencies]
anyhow = "1"
composefs = { path = "../composefs-rs/crates/composefs" }
composefs-oci = { path = "../composefs-rs/crates/composefs-oci" }
hex = "0.4"
rustix = { version = "1", features = ["fs"] }
serde_json = "1"
sha2 = "0.10"
tokio = { version = "1", features = ["rt", "macros"] }
TOML
  [ -f "$dir/Cargo.lock" ] || cp "$build/bootc/Cargo.lock" "$dir/Cargo.lock"
  cargo build -q --manifest-path "$dir/Cargo.toml" --target-dir "$build/target" >&2
  echo "$build/target/debug/composefs-fixture"
}
if cfs=$(cstor_tool) &&
  CONTAINERS_STORAGE_CONF=$base/storage.conf "$ours" build-chunked --rootfs "$t" --target localhost/cfs:1 --quiet &&
  CONTAINERS_STORAGE_CONF=$base/storage.conf "$ours" export localhost/cfs:1 "oci:$base/cfs-layout:1" --quiet; then
  id=$(real_podman "$base/store/root" images -q --no-trunc localhost/cfs:1)
  a=$("$cfs" import "oci:$base/cfs-layout:1" "$base/cfs-a" t 2>&1) || true
  b=$("$cfs" import-cstor "$base/store/root" "$id" "$base/cfs-b" t 2>&1) || true
  # The export has a manifest of its own (compressed layers): the file systems are compared.
  ea=$("$cfs" erofs-id "$base/cfs-a" "$a" 2>/dev/null) || true
  eb=$("$cfs" erofs-id "$base/cfs-b" "$b" 2>/dev/null) || true
  if [[ $a == sha256:* ]] && [[ $b == sha256:* ]] && [ "${#ea}" -ge 64 ] && [ "$ea" = "$eb" ]; then
    pass cstor-0.7
  else
    fail cstor-0.7 "layout import: $a; containers-storage import: $b"
  fi
else
  fail cstor-0.7 "could not build the tool or write the image"
fi

unmount_below "$base"
echo "bootc-seam-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
