#!/usr/bin/env bash
# Checks, with podman 5 and skopeo 1.18 from a Debian 13 (trixie) chroot, that the
# containers-storage stores bootc-image writes are right: `copy-to-storage` into an overlay and a
# vfs store (from an OCI layout, a registry and a composefs repository), and
# `pull-from-default-storage` into bootc's store. Docs: docs/podman5.md.
#
# Two test images (one OCI layout): localhost/p5, which every store must hold with no damage
# reported by `podman system check`; and localhost/p5-implied, whose second layer deletes a file
# without an entry for the file's directory. c/storage (skopeo 1.9 and 1.18 alike) recreates that
# directory in the layer with the current time (overlay: also as root 0755), and podman 5's own
# check then reports the layer as damaged; for it the check is that our stores are exactly what
# skopeo 1.18 writes.
#
# Needs root, debootstrap, umoci, jq, unshare and a reachable Debian mirror the first time (the
# chroot is then reused). Exits non-zero if any check fails. Usage:
#   scripts/podman5-check.sh
# Environment: P5_CHROOT (default /var/tmp/trixie), P5_BASE (default /var/tmp/p5; wiped at start),
#   P5_MIRROR (default http://deb.debian.org/debian).
#
# The script also runs itself in two internal modes: `__ns` (inside `unshare -m`: mounts /proc,
# /sys, /dev, a tmpfs /run and P5_BASE at the same path into the chroot, then chroots) and
# `__chroot PHASE` (the podman 5 / skopeo 1.18 steps, run inside the chroot from a copy of this
# file in P5_BASE). Results go to P5_BASE/results, one `PASS name` or `FAIL name` per line.
set -euo pipefail

chroot_dir=${P5_CHROOT:-/var/tmp/trixie}
base=${P5_BASE:-/var/tmp/p5}
mirror=${P5_MIRROR:-http://deb.debian.org/debian}
results=$base/results
oci=$base/oci
tag=p5
image=localhost/p5
implied_tag=p5-implied
implied_image=localhost/p5-implied
bootc_store=$base/sysroot/ostree/bootc/storage
drivers=(overlay vfs)

# ---------------------------------------------------------------------------------------- helpers

say() { printf '\n== %s\n' "$*"; }

record() { # STATUS NAME
    printf '%s %s\n' "$1" "$2" >>"$results"
    printf -- '-> %s: %s\n' "$1" "$2"
}

# check NAME CMD...: runs CMD, shows it, records PASS or FAIL (never stops the script).
check() {
    local name=$1 rc=0
    shift
    printf '\n-- %s\n$ %s\n' "$name" "$*"
    "$@" || rc=$?
    if ((rc == 0)); then
        record PASS "$name"
    else
        record FAIL "$name (exit $rc)"
    fi
    return 0
}

# Unmount everything mounted at or below $1, deepest first.
unmount_under() {
    findmnt -rn -o TARGET | awk -v p="$1" '$0 == p || index($0, p "/") == 1' | sort -r |
        while read -r m; do umount -l "$m" || true; done
}

# A listing of the tree under $1 that does not depend on the filesystem it is on: type, mode,
# owner, size of regular files, symlink target and a content hash of regular files.
tree_listing() {
    (
        cd "$1" || exit 1
        find . -printf '%p\t%y %m %U:%G %l\n' | LC_ALL=C sort >"$2.meta"
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum >"$2.sums"
        cat "$2.meta" "$2.sums" >"$2"
        rm -f "$2.meta" "$2.sums"
    )
}

# ------------------------------------------------------------------ inside the chroot (podman 5)

p5() { # DRIVER ROOT RUNROOT ARGS...: podman 5 on one store
    local driver=$1 root=$2 runroot=$3
    shift 3
    podman --root "$root" --runroot "$runroot" --storage-driver "$driver" \
        --cgroup-manager cgroupfs --events-backend file "$@"
}

# podman system check, its output printed; fails on a non-zero exit or any output that reports
# damage (podman prints nothing for a clean store).
system_check() {
    local out rc=0
    out=$(p5 "$@" system check 2>&1) || rc=$?
    printf '%s\n' "${out:-(no output: no damage found)}"
    [[ $rc -eq 0 ]] || return "$rc"
    ! grep -qiE 'damage|error' <<<"$out"
}

# The mounted tree must equal the one umoci unpacks from the same OCI image, except for the
# mode of the root directory (c/storage's overlay driver ignores a layer's "./" entry and gives a
# base layer's root 0555, skopeo 1.9 and 1.18 alike, where umoci applies the entry: 0755); it must
# equal, root included, the tree of the same image in the store skopeo 1.18 wrote (when that one
# was listed already); and the hardlink pair must share an inode.
compare_tree() { # MOUNTPOINT LABEL DRIVER
    local mnt=$1 got=$base/trees/$2.list ref=$base/trees/ref-$3-image.list rc=0
    show_tree "$mnt"
    tree_listing "$mnt" "$got" || return 1
    echo "root directory: $(grep -P '^\.\t' "$got")"
    if diff -u <(grep -vP '^\.\t' "$base/trees/expected.list") <(grep -vP '^\.\t' "$got"); then
        echo "tree below the root matches umoci's unpack of the same image"
    else
        echo "tree differs from umoci's unpack of the same image (diff above)"
        rc=1
    fi
    if [[ $got != "$ref" && -e $ref ]]; then
        if diff -u "$ref" "$got"; then
            echo "whole tree, root included, matches the same image in skopeo 1.18's $3 store"
        else
            echo "tree differs from the same image in skopeo 1.18's $3 store (diff above)"
            rc=1
        fi
    fi
    if [[ $(stat -c %i "$mnt/data/file") != "$(stat -c %i "$mnt/data/hard")" ]]; then
        echo "data/file and data/hard are not one inode"
        rc=1
    fi
    return "$rc"
}

show_tree() { # DIR
    echo "tree at $1:"
    (cd "$1" && find . -printf '%M %4U:%-4G %6s %i %TF %p %l\n' | LC_ALL=C sort -k7)
}

image_mount_tree() { # DRIVER ROOT RUNROOT LABEL [podman args...]
    local driver=$1 root=$2 runroot=$3 label=$4 mnt rc=0
    shift 4
    mnt=$(p5 "$driver" "$root" "$runroot" "$@" image mount "$image") || return 1
    compare_tree "$mnt" "$label" "$driver" || rc=1
    p5 "$driver" "$root" "$runroot" "$@" image unmount "$image" >/dev/null || rc=1
    return "$rc"
}

container_cycle() { # DRIVER ROOT RUNROOT LABEL [podman args...]
    local driver=$1 root=$2 runroot=$3 label=$4 ctr mnt rc=0
    shift 4
    local s=("$driver" "$root" "$runroot" "$@")
    ctr=$(p5 "${s[@]}" create --network none --name p5-ctr "$image" /bin/tool) || return 1
    echo "created $ctr"
    if mnt=$(p5 "${s[@]}" mount "$ctr"); then
        echo "mounted at $mnt"
        compare_tree "$mnt" "$label" "$driver" || rc=1
        p5 "${s[@]}" umount "$ctr" >/dev/null || rc=1
    else
        rc=1
    fi
    p5 "${s[@]}" rm "$ctr" || rc=1
    return "$rc"
}

# After `podman rmi`: no image, no layer record, no layer directory left.
rmi_then_empty() { # DRIVER ROOT RUNROOT
    p5 "$@" rmi "$image" && store_empty "$@"
}

store_empty() { # DRIVER ROOT RUNROOT
    local driver=$1 root=$2 left rc=0
    p5 "$@" images -a
    for f in "$root/$driver-layers/layers.json" "$root/$driver-layers/volatile-layers.json" \
        "$root/$driver-images/images.json"; do
        [[ -e $f ]] || continue
        printf '%s: %s\n' "$f" "$(tr -d '\n' <"$f" | cut -c1-200)"
        if grep -q '"id"' "$f"; then
            echo "records left in $f"
            rc=1
        fi
    done
    if [[ $driver == overlay ]]; then
        # (overlay/.has-mount-program is c/storage's marker file, not a layer)
        left=$(find "$root/overlay" -mindepth 1 -maxdepth 1 -type d ! -name l)
        left+=$(find "$root/overlay/l" -mindepth 1)
    else
        left=$(find "$root/vfs/dir" -mindepth 1 -maxdepth 1)
    fi
    if [[ -n $left ]]; then
        printf 'layer directories left:\n%s\n' "$left"
        rc=1
    fi
    ((rc == 0)) && echo "store has no images, no layer records, no layer directories"
    return "$rc"
}

# For localhost/p5-implied in one store: `podman system check` (output printed, and saved with
# the extraction times replaced by "(now)" and the lines sorted) and the image's tree.
implied_probe() { # DRIVER ROOT RUNROOT OUT
    local s=("$1" "$2" "$3") out=$4 mnt rc=0 text
    text=$(p5 "${s[@]}" system check 2>&1) || rc=$?
    printf '%s\n(exit %s)\n' "${text:-(no output: no damage found)}" "$rc"
    printf '%s\nexit %s\n' "$text" "$rc" |
        sed -E 's/(mtime:0x[0-9a-f]+)[^0-9]+0x[0-9a-f]+/\1 -> (now)/g' | LC_ALL=C sort >"$out.check"
    mnt=$(p5 "${s[@]}" image mount "$implied_image") || return 1
    show_tree "$mnt"
    tree_listing "$mnt" "$out.list"
    p5 "${s[@]}" image unmount "$implied_image" >/dev/null
}

# localhost/p5-implied: our store must give the same `podman system check` report and the same
# tree as skopeo 1.18's store (both differ from umoci's unpack; see the header).
implied_case() { # DRIVER
    local driver=$1 t=$base/trees rc=0
    echo "skopeo 1.18's store:"
    implied_probe "$driver" "$base/ref-implied-$driver" "/run/p5-ref-implied-$driver" \
        "$t/ref-implied-$driver" || return 1
    echo "our store:"
    implied_probe "$driver" "$base/implied-$driver" "/run/p5-implied-$driver" \
        "$t/implied-$driver" || return 1
    echo "the tree against umoci's unpack of the same image (- umoci, + skopeo 1.18):"
    diff -u "$t/expected-implied.list" "$t/ref-implied-$driver.list" || true
    if diff -u "$t/ref-implied-$driver.check" "$t/implied-$driver.check"; then
        echo "same podman system check report as skopeo 1.18's store"
    else
        echo "podman system check reports differ (- skopeo 1.18, + ours)"
        rc=1
    fi
    if diff -u "$t/ref-implied-$driver.list" "$t/implied-$driver.list"; then
        echo "same tree as skopeo 1.18's store"
    else
        echo "trees differ (- skopeo 1.18, + ours)"
        rc=1
    fi
    return "$rc"
}

# The check must be able to fail: in a copy of ours where etc/hello.txt of the base layer was
# changed (same size) after the copy, podman system check must report that file.
corrupt_check() {
    local out rc=0
    out=$(p5 overlay "$base/corrupt" /run/p5-corrupt system check 2>&1) || rc=$?
    printf '%s\n(exit %s)\n' "$out" "$rc"
    ((rc != 0)) && grep -q 'etc/hello.txt' <<<"$out"
}

# podman 5's `system check --repair` on one copy of the damaged store; our `storage verify
# --repair` ran on another on the host. Both must leave a store podman 5 finds clean, holding the
# same images.
repair_compare() {
    local mine=(overlay "$base/corrupt-ours" /run/p5-corrupt-ours)
    local theirs=(overlay "$base/corrupt-p5" /run/p5-corrupt-p5)
    p5 "${theirs[@]}" system check --repair || return 1
    system_check "${theirs[@]}" || return 1
    system_check "${mine[@]}" || return 1
    local a b
    a=$(p5 "${mine[@]}" images -a --format '{{.ID}}' | sort)
    b=$(p5 "${theirs[@]}" images -a --format '{{.ID}}' | sort)
    printf 'images after our repair: [%s]; after podman 5 system check --repair: [%s]\n' "$a" "$b"
    [[ $a == "$b" ]]
}

phase_versions_and_reference() {
    say "podman 5 and skopeo 1.18 in the chroot"
    check "podman 5 version" podman version
    check "skopeo version" skopeo --version
    say "reference stores written by skopeo 1.18 from the same OCI image"
    local driver
    for driver in "${drivers[@]}"; do
        check "skopeo 1.18 copy into a $driver store (reference)" \
            skopeo copy -q "oci:$oci:$tag" \
            "containers-storage:[$driver@$base/ref-$driver+/run/p5-ref-$driver]$image"
        check "skopeo 1.18 copy of $implied_image into a $driver store (reference)" \
            skopeo copy -q "oci:$oci:$implied_tag" \
            "containers-storage:[$driver@$base/ref-implied-$driver+/run/p5-ref-implied-$driver]$implied_image"
    done
    say "the test image pushed as zstd:chunked by skopeo 1.18"
    check "zstd:chunked: skopeo 1.18 pushes the test image as zstd:chunked" \
        skopeo copy -q --insecure-policy --dest-tls-verify=false --dest-compress-format zstd:chunked \
        "oci:$oci:$tag" "docker://127.0.0.1:$(cat "$base/registry/port")/p5-zc:$tag"
}

# podman 5 on STORE with partial pulls on (a storage.conf of its own).
p5_partial() { # STORE ARGS...
    local store=$1
    shift
    printf '[storage]\ndriver = "overlay"\nrunroot = "/run/p5-partial-%s"\ngraphroot = "%s"\n[storage.options.pull_options]\nenable_partial_images = "true"\n' \
        "$(basename "$store")" "$store" >"$store.conf"
    CONTAINERS_STORAGE_CONF=$store.conf podman --cgroup-manager cgroupfs --events-backend file "$@"
}

phase_podman5() {
    local driver root runroot
    for driver in "${drivers[@]}"; do
        root=$base/$driver runroot=/run/p5-$driver
        local s=("$driver" "$root" "$runroot") r=("$driver" "$base/ref-$driver" "/run/p5-ref-$driver")
        say "podman 5 on the $driver store skopeo 1.18 wrote (baseline)"
        check "$driver reference: podman system check" system_check "${r[@]}"
        check "$driver reference: podman image mount + tree" \
            image_mount_tree "${r[@]}" "ref-$driver-image"

        say "podman 5 on the $driver store bootc-image wrote: $root"
        check "$driver: podman images" p5 "${s[@]}" images
        check "$driver: podman image inspect" p5 "${s[@]}" image inspect "$image"
        check "$driver: podman system check" system_check "${s[@]}"
        check "$driver: podman image mount + tree" image_mount_tree "${s[@]}" "$driver-image"
        check "$driver: podman create + mount + rm" container_cycle "${s[@]}" "$driver-container"
        check "$driver: podman rmi" p5 "${s[@]}" rmi "$image"
        check "$driver: store empty after rmi" store_empty "${s[@]}"
        check "$driver: podman system check after rmi" system_check "${s[@]}"

        say "$implied_image ($driver): ours against skopeo 1.18's"
        check "$driver: $implied_image same check report and tree as skopeo 1.18" \
            implied_case "$driver"
    done

    say "bootc-image copy-to-storage from the registry, through skopeo 1.18's image proxy"
    local port g=(overlay "$base/registry-ours" /run/p5-registry)
    port=$(cat "$base/registry/port")
    check "registry: bootc-image copy-to-storage --source docker:// (skopeo $(skopeo --version | awk '{print $3}'))" \
        env BOOTC_IMAGE_VIA=skopeo "$base/bootc-image" --root "$base/registry-ours" --runroot /run/p5-registry \
        --storage-driver overlay copy-to-storage --source "docker://127.0.0.1:$port/p5:$tag" \
        --target "$image" --tls-verify=false --progress none
    check "registry: podman image inspect" p5 "${g[@]}" image inspect "$image"
    check "registry: podman system check" system_check "${g[@]}"
    check "registry: podman image mount + tree" image_mount_tree "${g[@]}" registry-image
    check "registry: podman rmi, then the store is empty" rmi_then_empty "${g[@]}"

    say "podman 5 pulls what bootc-image pushed natively (export docker://), and pushes for us"
    local q=(overlay "$base/p5-pulled" /run/p5-pulled)
    local pushed=127.0.0.1:$port/p5-pushed:$tag
    check "registry: podman 5 pulls the image bootc-image pushed" \
        p5 "${q[@]}" pull -q --tls-verify=false "$pushed"
    check "registry: podman 5 sees the digest bootc-image printed" \
        digest_is "$(cat "$base/registry/pushed-digest")" p5 "${q[@]}" image inspect --format '{{.Digest}}' "$pushed"
    check "registry: podman 5 tags it $image" p5 "${q[@]}" tag "$pushed" "$image"
    check "registry: podman 5 image mount + tree of what bootc-image pushed" \
        image_mount_tree "${q[@]}" registry-pushed
    check "registry: podman 5 pushes it to another repository" \
        p5 "${q[@]}" push -q --tls-verify=false --digestfile "$base/registry/p5-digest" \
        "$pushed" "docker://127.0.0.1:$port/p5-by-podman:$tag"

    say "a signed image: our pull has skopeo 1.18's proxy verify its signatures (policy.json)"
    check "registry: sigstore-signed image pulled natively after skopeo 1.18 verified it; another key refused" \
        signed_pull "$port"

    say "a zstd:chunked image: our import keeps its TOC as podman 5's partial pull does"
    local zc=127.0.0.1:$port/p5-zc:$tag
    check "zstd:chunked: podman 5 (partial pulls on) pulls it into its own store" \
        p5_partial "$base/zc-p5" pull -q --tls-verify=false "$zc"
    check "zstd:chunked: podman 5 image inspect of our import" p5_partial "$base/zc-ours" image inspect "$zc"
    check "zstd:chunked: podman 5 system check of our import" system_check overlay "$base/zc-ours" /run/p5-partial-zc-ours
    check "zstd:chunked: podman 5 tags our import $image" p5_partial "$base/zc-ours" tag "$zc" "$image"
    check "zstd:chunked: podman 5 image mount + tree of our import" \
        image_mount_tree overlay "$base/zc-ours" /run/p5-partial-zc-ours zc-ours

    say "podman 5 pulls bootc-image's zstd:chunked export partially"
    local ourzc=127.0.0.1:$port/p5-ourzc:$tag zc=127.0.0.1:$port/p5-zc:$tag
    check "zstd:chunked: podman 5 (partial pulls on) pulls our zstd:chunked export" \
        p5_partial "$base/ourzc-p5" pull -q --tls-verify=false "$ourzc"
    check "zstd:chunked: the tree podman 5 pulled partially from our export equals the one it pulled partially from skopeo 1.18's" \
        partial_trees_equal "$ourzc" "$zc"
    check "zstd:chunked: podman 5 pulls our chunked 3 MiB file partially, byte for byte" \
        big_partial_pull "127.0.0.1:$port/p5-bigzc:$tag"

    local pair what
    for pair in reuse rchunks; do
        what="files of a layer bootc-image imported from gzip (our own TOC)"
        [[ $pair == rchunks ]] && what="chunks of a file bootc-image pulled as zstd:chunked"
        say "podman 5 reuses the $what"
        check "$pair: podman 5 (partial pulls on) pulls v2 over our v1, fetching under 10 % of the blob" \
            fetches_under_10_percent "$pair" p5_partial "$base/$pair-ours" pull -q --tls-verify=false \
            "127.0.0.1:$port/p5-$pair:v2"
        check "$pair: podman 5 system check finds nothing wrong in our layer it took from" \
            system_check_spares "$base/$pair-ours" "$(cat "$base/$pair-v1.layer")"
        check "$pair: podman 5 image mount, v2's files byte for byte" reuse_tree_ok "$pair"
        check "$pair: podman 5 pulls v1 partially into a store of its own (bootc-image pulls v2 over it next)" \
            p5_partial "$base/$pair-p5" pull -q --tls-verify=false "127.0.0.1:$port/p5-$pair:v1"
    done

    say "podman 5 on the image bootc-image build-chunked wrote"
    local k=(overlay "$base/built" /run/p5-built)
    check "build-chunked: podman image inspect" p5 "${k[@]}" image inspect localhost/p5-built
    check "build-chunked: podman system check" system_check "${k[@]}"
    check "build-chunked: podman image mount, tree equal to the rootfs" built_tree "${k[@]}"
    check "build-chunked: podman rmi, then the store is empty" rmi_built_then_empty "${k[@]}"

    say "podman 5 on the store bootc-image wrote from a composefs repository"
    local c=(overlay "$base/composefs-ours" /run/p5-composefs)
    check "composefs: podman image inspect" p5 "${c[@]}" image inspect "$image"
    check "composefs: podman system check" system_check "${c[@]}"
    check "composefs: podman image mount + tree" image_mount_tree "${c[@]}" composefs-image
    check "composefs: podman rmi, then the store is empty" rmi_then_empty "${c[@]}"

    say "podman 5 on the stores bootc-image wrote as bootc's podman"
    local st
    for st in seam seam-push; do
        local m=(overlay "$base/$st" "/run/p5-$st")
        check "$st: podman image inspect" p5 "${m[@]}" image inspect "$image"
        check "$st: podman system check" system_check "${m[@]}"
        check "$st: podman image mount + tree" image_mount_tree "${m[@]}" "$st-image"
        check "$st: podman rmi, then the store is empty" rmi_then_empty "${m[@]}"
    done

    say "podman 5 on stores where our copy was killed"
    local point k
    for point in import:layers-written image:big-data:2; do
        k=(overlay "$base/killed-${point//:/-}" "/run/p5-killed-${point//:/-}")
        check "killed at $point: podman images" p5 "${k[@]}" images
        check "killed at $point: podman system check" system_check "${k[@]}"
    done

    say "negative control: a store of ours with one file changed after the copy"
    check "podman system check reports the changed file" corrupt_check
    check "podman 5 system check --repair and bootc-image storage verify --repair agree" \
        repair_compare

    say "podman 5 on bootc's store (pull-from-default-storage; the default store's copy is gone)"
    local b=(overlay "$bootc_store" /run/p5-bootc)
    check "bootc store: podman images" p5 "${b[@]}" images
    check "bootc store: podman system check" system_check "${b[@]}"
    check "bootc store: podman image mount + tree" image_mount_tree "${b[@]}" bootc-image
    local e=(overlay "$base/empty" /run/p5-empty --storage-opt "additionalimagestore=$bootc_store")
    check "bootc store as additionalimagestore: podman images" p5 "${e[@]}" images
    check "bootc store as additionalimagestore: podman image inspect" \
        p5 "${e[@]}" image inspect --format '{{.Id}} {{.Digest}} {{.RepoTags}}' "$image"
    # (podman refuses `image mount` of an image in a read-only store; a container works)
    check "bootc store as additionalimagestore: podman create + mount + rm" \
        container_cycle "${e[@]:0:3}" bootc-additional-container "${e[@]:3}"
    check "bootc store: podman system check after use as additionalimagestore" \
        system_check "${b[@]}"
}

# --------------------------------------------------------------- on the host: records compared

# The fields of a store's layer and image records, minus what differs from run to run.
records() { # STORE DRIVER
    jq -S 'map(del(.created)) | sort_by(.id)' "$1/$2-layers/layers.json"
    jq -S 'map(del(.created)) | sort_by(.id)' "$1/$2-images/images.json"
}

# The identity of an image in a store: layer IDs, parents, DiffIDs, compressed digests, sizes,
# ID sets, tar-split contents; image ID, digest(s), names, big-data names/sizes/digests.
identity() { # STORE DRIVER
    local l
    jq -S 'map({id, parent, "diff-digest", "diff-size", "compressed-diff-digest",
                "compressed-size", uidset, gidset}) | sort_by(.id)' "$1/$2-layers/layers.json"
    jq -S 'map({id, digest, digests, names, layer, "big-data-names", "big-data-sizes",
                "big-data-digests"}) | sort_by(.id)' "$1/$2-images/images.json"
    for l in $(jq -r '.[].id' "$1/$2-layers/layers.json" | sort); do
        printf 'tar-split %s %s\n' "$l" "$(zcat "$1/$2-layers/$l.tar-split.gz" | sha256sum)"
    done
}

compare_with_reference() { # OURS DRIVER REF
    local ours=$1 driver=$2 ref=$3 rc=0
    echo "full records, 'created' dropped (- skopeo 1.18, + ours):"
    diff -u <(records "$ref" "$driver") <(records "$ours" "$driver") && echo "(identical)"
    echo "identity fields and tar-splits (- skopeo 1.18, + ours):"
    if diff -u <(identity "$ref" "$driver") <(identity "$ours" "$driver"); then
        echo "(identical)"
    else
        rc=1
    fi
    return "$rc"
}

# ------------------------------------------------------------------------- on the host: setup

ensure_chroot() {
    if [[ -x $chroot_dir/usr/bin/podman && -x $chroot_dir/usr/bin/skopeo ]]; then
        echo "reusing $chroot_dir ($(cat "$chroot_dir/.p5-debootstrap" 2>/dev/null ||
            echo 'made elsewhere'))"
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
    fi
    local start secs
    start=$(date +%s)
    rm -rf "$chroot_dir.partial"
    echo "debootstrap --variant=minbase --include=podman,skopeo trixie $chroot_dir ($mirror)"
    debootstrap --variant=minbase --include=podman,skopeo trixie "$chroot_dir.partial" "$mirror" \
        >"$base.debootstrap.log" 2>&1 || {
        tail -20 "$base.debootstrap.log"
        echo "debootstrap failed; full log: $base.debootstrap.log" >&2
        exit 1
    }
    mv "$chroot_dir.partial" "$chroot_dir"
    secs=$(($(date +%s) - start))
    echo "debootstrap took ${secs}s on $(date -u +%FT%TZ)" | tee "$chroot_dir/.p5-debootstrap"
}

# Appends to the image TAG a layer made by GNU tar of the ENTRIES (in that order, no recursion)
# of DIR, all with the same old mtime.
add_tar_layer() { # TAG DIR ENTRIES...
    local t=$1 dir=$2
    shift 2
    find "$dir" -exec touch -h -d @1577836800 {} +
    tar -C "$dir" --format=ustar --numeric-owner --no-recursion -cf "$dir.tar" "$@"
    umoci raw add-layer --image "$oci:$t" "$dir.tar"
}

# The test images. localhost/p5: layer 1 (umoci) has files, an executable, a symlink, a hardlink,
# a file and a 0750 directory (data/) owned by 1000:1000, a directory tree and a "./" entry;
# layer 2 (tar) has data/ unchanged and the whiteout data/.wh.gone.txt; layer 3 (umoci) replaces
# opq/ by rm -rf + mkdir, which umoci writes as "./", opq/ and per-entry whiteouts (.wh.a,
# .wh.sub); layer 4 (tar) makes opq/ opaque (.wh..wh..opq) and adds opq/d. localhost/p5-implied:
# layer 1, then a layer with only data/.wh.gone.txt. All mtimes are in 2020 or 2021.
make_image() {
    local work=$base/work r
    mkdir -p "$work"
    umoci init --layout "$oci"
    umoci new --image "$oci:$tag"

    umoci unpack --image "$oci:$tag" "$work/b" >/dev/null
    r=$work/b/rootfs
    mkdir -p "$r/etc" "$r/bin" "$r/data/keep" "$r/opq/sub" "$r/usr"
    echo hello >"$r/etc/hello.txt"
    printf '#!/bin/sh\necho hi\n' >"$r/bin/tool"
    chmod 755 "$r/bin/tool"
    ln -s ../etc/hello.txt "$r/bin/hello-link"
    echo "some data" >"$r/data/file"
    ln "$r/data/file" "$r/data/hard"
    echo owned >"$r/data/owned"
    chown 1000:1000 "$r/data/owned"
    echo gone >"$r/data/gone.txt"
    echo o1 >"$r/opq/a"
    echo o2 >"$r/opq/sub/b"
    chown 1000:1000 "$r/data"
    chmod 750 "$r/data"
    # Old mtimes, so that extraction never happens within the same second as the times in the
    # layers (a directory that a store recreates "now" then shows up in `podman system check`).
    find "$r" -exec touch -h -d @1577836800 {} +
    umoci repack --image "$oci:$tag" "$work/b" >/dev/null
    rm -rf "$work/b"

    # localhost/p5-implied: layer 1, then a layer with only the whiteout and no entry for its
    # directory data/ (umoci writes such a layer when data/'s mtime did not change).
    umoci tag --image "$oci:$tag" "$implied_tag"
    mkdir -p "$work/l2i/data"
    : >"$work/l2i/data/.wh.gone.txt"
    add_tar_layer "$implied_tag" "$work/l2i" data/.wh.gone.txt

    # Layer 2: the whiteout, after an entry for data/ with its attributes unchanged (as build
    # tools write it).
    mkdir -p "$work/l2/data"
    chown 1000:1000 "$work/l2/data"
    chmod 750 "$work/l2/data"
    : >"$work/l2/data/.wh.gone.txt"
    add_tar_layer "$tag" "$work/l2" data data/.wh.gone.txt

    umoci unpack --image "$oci:$tag" "$work/b" >/dev/null
    rm -rf "$work/b/rootfs/opq"
    mkdir "$work/b/rootfs/opq"
    echo c >"$work/b/rootfs/opq/c"
    # (fixed times here too: umoci then always writes entries for ./ and opq/)
    touch -h -d @1609459200 "$work/b/rootfs" "$work/b/rootfs/opq" "$work/b/rootfs/opq/c"
    umoci repack --image "$oci:$tag" "$work/b" >/dev/null
    rm -rf "$work/b"

    # Layer 4, by hand: opq/ made opaque (.wh..wh..opq) with one new file.
    mkdir -p "$work/l4/opq"
    : >"$work/l4/opq/.wh..wh..opq"
    echo d >"$work/l4/opq/d"
    add_tar_layer "$tag" "$work/l4" opq opq/.wh..wh..opq opq/d
    umoci config --image "$oci:$tag" --config.cmd /bin/tool

    umoci config --image "$oci:$implied_tag" --config.cmd /bin/tool
    umoci gc --layout "$oci"

    local t manifest
    for t in "$tag" "$implied_tag"; do
        manifest=$(jq -r --arg t "$t" \
            '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)
             | .digest' "$oci/index.json")
        echo "OCI layout $oci, tag $t, manifest $manifest; layers:"
        for l in $(jq -r '.layers[].digest' "$oci/blobs/sha256/${manifest#sha256:}"); do
            echo "  $l"
            zcat "$oci/blobs/sha256/${l#sha256:}" | tar --numeric-owner -tvf - | sed 's/^/    /'
        done
    done

    # What the images' trees must be: umoci applies the layers, whiteouts and opaque marker.
    mkdir -p "$base/trees"
    umoci unpack --image "$oci:$tag" "$work/expect" >/dev/null
    tree_listing "$work/expect/rootfs" "$base/trees/expected.list"
    echo "expected tree of $image:"
    sed 's/^/    /' "$base/trees/expected.list"
    umoci unpack --image "$oci:$implied_tag" "$work/expect-implied" >/dev/null
    tree_listing "$work/expect-implied/rootfs" "$base/trees/expected-implied.list"
}

# A store of ours whose base layer's etc/hello.txt is then changed (same size).
make_corrupt_store() {
    local layer f
    "$bin" --root "$base/corrupt" --runroot /run/p5-corrupt --storage-driver overlay \
        copy-to-storage --source "oci:$oci:$tag" --target "$image" || return 1
    layer=$(jq -r '.[] | select(.parent == null) | .id' "$base/corrupt/overlay-layers/layers.json")
    f=$base/corrupt/overlay/$layer/diff/etc/hello.txt
    [[ -n $layer && -f $f ]] || return 1
    echo jello >"$f"
    echo "changed $f: hello -> jello"
}

# A copy that kills itself at write event $1 into $base/killed-<event>: it must die by SIGKILL.
killed_copy() { # POINT
    local rc=0
    BOOTC_IMAGE_CRASH_AT=$1 "$bin" --root "$base/killed-${1//:/-}" --runroot "/run/p5-killed" \
        --storage-driver overlay copy-to-storage --source "oci:$oci:$tag" --target "$image" || rc=$?
    echo "(exit $rc)"
    ((rc == 137))
}

# Starts docker-registry on 127.0.0.1 (a free port, written to $base/registry/port; its pid to
# $base/registry/pid) and pushes the test image as 127.0.0.1:PORT/p5:$tag.
start_registry() {
    local dir=$base/registry port
    mkdir -p "$dir/data"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$dir/data" "$port" >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    echo "$port" >"$dir/port"
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$oci:$tag" \
        "docker://127.0.0.1:$port/p5:$tag"
}

# A small tree with two dpkg packages, a hardlink and a setuid file, built with build-chunked into
# $base/built as localhost/p5-built.
make_built_image() {
    local r=$base/work/rootfs
    rm -rf "$r"
    mkdir -p "$r/usr/bin" "$r/etc" "$r/var/lib/dpkg/info"
    ln -s usr/bin "$r/bin"
    printf '#!/bin/sh\necho a\n' >"$r/usr/bin/a"
    ln "$r/usr/bin/a" "$r/usr/bin/a2"
    printf 'b\n' >"$r/usr/bin/b"
    chmod 4755 "$r/usr/bin/b"
    echo p5 >"$r/etc/hostname"
    printf '/.\n/bin/a\n/bin/a2\n' >"$r/var/lib/dpkg/info/pkg-a.list"
    printf '/.\n/usr/bin/b\n' >"$r/var/lib/dpkg/info/pkg-b.list"
    find "$r" -exec touch -h -d @1577836800 {} +
    "$bin" --root "$base/built" --runroot /run/p5-built --storage-driver overlay \
        build-chunked --rootfs "$r" --target localhost/p5-built --progress none
}

# The mounted build-chunked image against the tree it was built from (type, mode, owner, size,
# mtime, target; the root directory aside), and its hardlink kept.
built_tree() { # DRIVER ROOT RUNROOT
    local mnt rc=0 list='%P\t%y\t%m\t%U\t%G\t%s\t%T@\t%l\n'
    mnt=$(p5 "$@" image mount localhost/p5-built) || return 1
    # (Directories' mtimes are the epoch in the image, by design: see docs/build-chunked.md.)
    # shellcheck disable=SC2016 # an awk program, not shell
    local dirs_at_epoch='BEGIN { FS = OFS = "\t" } $2 == "d" { $7 = "0.0000000000" } 1'
    if diff -u <(cd "$base/work/rootfs" && find . -mindepth 1 -printf "$list" | awk "$dirs_at_epoch" | sort) \
        <(cd "$mnt" && find . -mindepth 1 -printf "$list" | sort); then
        echo "the mounted tree equals the rootfs (directories' mtimes at the epoch)"
    else
        rc=1
    fi
    if [[ $(stat -c %i "$mnt/usr/bin/a") != "$(stat -c %i "$mnt/usr/bin/a2")" ]]; then
        echo "usr/bin/a and usr/bin/a2 are not one inode"
        rc=1
    fi
    p5 "$@" image unmount localhost/p5-built >/dev/null || rc=1
    return "$rc"
}

# Pulls IMAGE natively into a fresh store and prints its digest as podman 4.3 reads it.
native_pull_digest() { # IMAGE
    "$bin" --root "$base/native-pull" --runroot /run/p5-native-pull --storage-driver overlay \
        pull --tls-verify=false --progress none "$1" >/dev/null || return 1
    podman --root "$base/native-pull" --runroot /run/p5-native-pull --storage-driver overlay \
        image inspect --format '{{.Digest}}' "$1"
}

# A signed image (sigstore, signatures as registry attachments) pulled by our binary with a policy
# that requires them: skopeo 1.18's proxy verifies, our native client fetches what it verified.
# With a policy naming another key, the pull is refused and the store keeps nothing.
signed_pull() { # PORT
    local port=$1 d=$base/sigstore rc=0
    rm -rf "$d" "$base/signed"
    mkdir -p "$d" /etc/containers/registries.d
    printf 'docker:\n  127.0.0.1:%s:\n    use-sigstore-attachments: true\n' "$port" \
        >/etc/containers/registries.d/p5-sigstore.yaml
    for k in good other; do
        (cd "$d" && skopeo generate-sigstore-key --output-prefix "$k" --passphrase-file /dev/null) >/dev/null || return 1
        printf '{"default":[{"type":"reject"}],"transports":{"docker":{"127.0.0.1:%s/p5-signed":[{"type":"sigstoreSigned","keyPath":"%s","signedIdentity":{"type":"matchRepository"}}]}}}\n' \
            "$port" "$d/$k.pub" >"$d/$k.json"
    done
    skopeo copy -q --insecure-policy --dest-tls-verify=false --sign-by-sigstore-private-key "$d/good.private" \
        --sign-passphrase-file /dev/null "oci:$oci:$tag" "docker://127.0.0.1:$port/p5-signed:$tag" || return 1
    local pull=("$base/bootc-image" --root "$base/signed" --runroot /run/p5-signed --storage-driver overlay
        pull --tls-verify=false --progress none)
    if "${pull[@]}" --signature-policy "$d/other.json" "127.0.0.1:$port/p5-signed:$tag" 2>"$d/err"; then
        echo "accepted with a policy naming another key"
        rc=1
    fi
    echo "another key: $(cat "$d/err")"
    "${pull[@]}" --signature-policy "$d/good.json" "127.0.0.1:$port/p5-signed:$tag" || rc=1
    p5 overlay "$base/signed" /run/p5-signed image inspect --format '{{.Digest}}' "127.0.0.1:$port/p5-signed:$tag" || rc=1
    rm -f /etc/containers/registries.d/p5-sigstore.yaml
    return "$rc"
}

# Our overlay store's image exported as zstd:chunked and pushed as 127.0.0.1:PORT/p5-ourzc:$tag.
export_zstd_chunked() {
    "$bin" --root "$base/overlay" --runroot /run/p5-overlay --storage-driver overlay \
        export "$image" "oci:$base/oci-zc:zc" --compression zstd:chunked || return 1
    skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$base/oci-zc:zc" \
        "docker://127.0.0.1:$(cat "$base/registry/port")/p5-ourzc:$tag"
}

# An image with one 3 MiB file of noise (many rolling-checksum chunks), copied into a store of
# ours, exported as zstd:chunked and pushed as 127.0.0.1:PORT/p5-bigzc:$tag.
export_big_zstd_chunked() {
    local d=$base/work/big
    rm -rf "$d" "$base/oci-big" "$base/big-ours"
    mkdir -p "$d/data"
    head -c 3145728 /dev/urandom >"$d/data/noise"
    umoci init --layout "$base/oci-big" && umoci new --image "$base/oci-big:big" || return 1
    find "$d" -exec touch -h -d @1577836800 {} +
    tar -C "$d" --format=ustar --numeric-owner -cf "$d.tar" data || return 1
    umoci raw add-layer --image "$base/oci-big:big" "$d.tar" || return 1
    sha256sum "$d/data/noise" | cut -d' ' -f1 >"$base/big-noise.sha256"
    "$bin" --root "$base/big-ours" --runroot /run/p5-big-ours --storage-driver overlay \
        copy-to-storage --source "oci:$base/oci-big:big" --target localhost/big || return 1
    "$bin" --root "$base/big-ours" --runroot /run/p5-big-ours --storage-driver overlay \
        export localhost/big "oci:$base/oci-bigzc:zc" --compression zstd:chunked || return 1
    skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$base/oci-bigzc:zc" \
        "docker://127.0.0.1:$(cat "$base/registry/port")/p5-bigzc:$tag"
}

# v1 and v2 of an image as gzip OCI layouts ($base/oci-NAME:v1, :v2), both exported by us as
# zstd:chunked and pushed as 127.0.0.1:PORT/p5-NAME:v1, :v2 (v2's blob digest and size in
# $base/NAME-v2.blob, v2's tree in $base/work/NAME); v1 then stored by us in $base/NAME-ours
# (runroot /run/p5-partial-NAME-ours; its layer ID in $base/NAME-v1.layer).
# NAME reuse: forty 100 KB files of noise and one that differs; v1 copied from the gzip layout
# (its layer gets our own TOC, whole files only).
# NAME rchunks: a 3 MiB file of noise (dozens of chunks), 100 bytes in its middle changed in v2;
# v1 pulled natively from the registry (the zstd:chunked TOC kept, with its chunks).
make_reuse_pair() { # NAME
    local name=$1 d=$base/work/$1 v i port
    local s=(--root "$base/$1-src" --runroot "/run/p5-$1-src" --storage-driver overlay)
    local o=(--root "$base/$1-ours" --runroot "/run/p5-partial-$1-ours" --storage-driver overlay)
    port=$(cat "$base/registry/port")
    rm -rf "$d" "$base/oci-$name" "$base/$name-src" "$base/$name-ours"
    mkdir -p "$d/data"
    if [[ $name == reuse ]]; then
        for i in $(seq -w 1 40); do head -c 100000 /dev/urandom >"$d/data/f$i"; done
    else
        head -c 3145728 /dev/urandom >"$d/data/noise"
        head -c 1000 /dev/urandom >"$d/data/small"
    fi
    umoci init --layout "$base/oci-$name" || return 1
    for v in 1 2; do
        if [[ $name == reuse ]]; then
            head -c 100000 /dev/urandom >"$d/data/changed"
        elif ((v == 2)); then
            head -c 100 /dev/urandom | dd of="$d/data/noise" bs=1 seek=1572864 conv=notrunc status=none
        fi
        find "$d" -exec touch -h -d @1577836800 {} +
        tar -C "$d" --format=ustar --numeric-owner -cf "$d-v$v.tar" data || return 1
        umoci new --image "$base/oci-$name:v$v" || return 1
        umoci raw add-layer --image "$base/oci-$name:v$v" "$d-v$v.tar" || return 1
        "$bin" "${s[@]}" copy-to-storage --source "oci:$base/oci-$name:v$v" --target "localhost/$name:v$v" || return 1
        "$bin" "${s[@]}" export "localhost/$name:v$v" "docker://127.0.0.1:$port/p5-$name:v$v" \
            --compression zstd:chunked --tls-verify=false || return 1
    done
    skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$port/p5-$name:v2" |
        jq -r '.layers[0] | "\(.digest) \(.size)"' >"$base/$name-v2.blob" || return 1
    if [[ $name == reuse ]]; then
        "$bin" "${o[@]}" copy-to-storage --source "oci:$base/oci-$name:v1" --target "localhost/$name:v1" || return 1
    else
        "$bin" "${o[@]}" pull --tls-verify=false --progress none "127.0.0.1:$port/p5-$name:v1" || return 1
    fi
    jq -r '.[0].id' "$base/$name-ours/overlay-layers/layers.json" >"$base/$name-v1.layer"
}

# podman 5's system check of STORE reports no damage in LAYER... (written by bootc-image).
# podman 5.4's own partial pulls leave directory mtimes that its system check then reports as
# damage in the layers it pulled (seen too on skopeo 1.18's zstd:chunked image pulled partially
# into an empty store): those lines are shown, not counted.
system_check_spares() { # STORE LAYER...
    local store=$1 out l rc=0
    shift
    out=$(p5_partial "$store" system check 2>&1)
    echo "$out"
    for l in "$@"; do
        if grep -q "layer $l" <<<"$out"; then
            echo "damage reported in our layer $l"
            rc=1
        fi
    done
    ((rc == 0)) && echo "nothing reported in our layers: $*"
    return "$rc"
}

# Bytes the registry sent for GETs of blob DIGEST (its access log, combined format).
blob_bytes_sent() { # DIGEST
    awk -v d="/blobs/$1" 'index($0, "\"GET /v2/") && index($0, d) {
        split($0, a, "HTTP/1.1\" "); split(a[2], b, " "); s += b[2] } END { print s + 0 }' \
        "$base/registry/log"
}

# PULL... (a command pulling v2 of the pair NAME) fetches at most 10 % of v2's blob.
fetches_under_10_percent() { # NAME PULL...
    local digest size before after
    read -r digest size <"$base/$1-v2.blob"
    shift
    before=$(blob_bytes_sent "$digest")
    "$@" || return 1
    after=$(blob_bytes_sent "$digest")
    echo "fetched $((after - before)) bytes of the $size-byte blob"
    ((after > before && (after - before) * 10 <= size))
}

# The files of v2 of the pair NAME in the image podman 5 mounts from $base/NAME-ours, byte for
# byte.
reuse_tree_ok() { # NAME
    local mnt rc=0 image store=$base/$1-ours
    image=127.0.0.1:$(cat "$base/registry/port")/p5-$1:v2
    mnt=$(p5_partial "$store" image mount "$image") || return 1
    diff <(cd "$mnt" && sha256sum data/*) <(cd "$base/work/$1" && sha256sum data/*) || rc=1
    p5_partial "$store" image unmount "$image" >/dev/null || rc=1
    ((rc == 0)) && echo "$(find "$base/work/$1/data" -type f | wc -l) files byte for byte"
    return "$rc"
}

# podman 5 pulls the big zstd:chunked image partially: the noise file byte for byte.
big_partial_pull() { # IMAGE
    local mnt rc=0
    p5_partial "$base/bigzc-p5" pull -q --tls-verify=false "$1" || return 1
    mnt=$(p5_partial "$base/bigzc-p5" image mount "$1") || return 1
    echo "noise: $(sha256sum "$mnt/data/noise" | cut -d' ' -f1), expected $(cat "$base/big-noise.sha256")"
    [[ $(sha256sum "$mnt/data/noise" | cut -d' ' -f1) == "$(cat "$base/big-noise.sha256")" ]] || rc=1
    p5_partial "$base/bigzc-p5" image unmount "$1" >/dev/null || rc=1
    return "$rc"
}

# podman 5's record of each layer it pulled from our zstd:chunked push: partially (a TOC digest,
# no compressed digest: it never had the whole blob).
pulled_partially() { # STORE
    python3 - "$1" <<'PY'
import json, os, sys
layers = json.load(open(os.path.join(sys.argv[1], "overlay-layers/layers.json")))
for l in layers:
    print(l["id"], "toc-digest" in l, "compressed-diff-digest" in l)
sys.exit(0 if layers and all("toc-digest" in l and "compressed-diff-digest" not in l for l in layers) else 1)
PY
}

# The trees podman 5 mounts for OURS (in ourzc-p5) and THEIRS (in zc-p5), both pulled partially
# (a partial pull makes the root directory 755 where a whole one leaves c/storage's 555).
partial_trees_equal() { # OURS THEIRS
    local a b rc=0
    a=$(p5_partial "$base/ourzc-p5" image mount "$1") || return 1
    b=$(p5_partial "$base/zc-p5" image mount "$2") || return 1
    tree_listing "$a" "$base/trees/ourzc-partial.list" || rc=1
    tree_listing "$b" "$base/trees/zc-partial.list" || rc=1
    diff -u "$base/trees/zc-partial.list" "$base/trees/ourzc-partial.list" || rc=1
    p5_partial "$base/ourzc-p5" image unmount "$1" >/dev/null || rc=1
    p5_partial "$base/zc-p5" image unmount "$2" >/dev/null || rc=1
    ((rc == 0)) && echo "the same tree"
    return "$rc"
}

# Our layers of the zstd:chunked image against podman 5's partial pull of it: the same IDs,
# toc-digest and big-data names, and the same big-data files byte for byte.
compare_zc_records() { # OURS THEIRS
    python3 - "$1" "$2" <<'PY'
import json, os, sys
ours, theirs = sys.argv[1], sys.argv[2]
load = lambda s: json.load(open(os.path.join(s, "overlay-layers/layers.json")))
a, b = load(ours), load(theirs)
ok = len(a) == len(b)
for x, y in zip(a, b):
    same = all(x.get(k) == y.get(k) for k in ("id", "parent", "diff-digest", "toc-digest"))
    # c/storage lists the names in no fixed order.
    same = same and sorted(x.get("big-data-names", [])) == sorted(y.get("big-data-names", []))
    for name in y.get("big-data-names", []):
        f = lambda s, r: os.path.join(s, "overlay-layers", r["id"])
        files = sorted(os.listdir(f(theirs, y)))
        same = same and files == sorted(os.listdir(f(ours, x))) and all(
            open(os.path.join(f(ours, x), n), "rb").read() == open(os.path.join(f(theirs, y), n), "rb").read()
            for n in files)
    print(("same" if same else "DIFFERENT"), x.get("id"), x.get("toc-digest"))
    ok = ok and same and x.get("toc-digest") is not None
sys.exit(0 if ok else 1)
PY
}

# The digest COMMAND... prints (first line) is DIGEST.
digest_is() { # DIGEST COMMAND...
    local want=$1 got
    shift
    got=$("$@" | head -n1) || return 1
    echo "expected $want, got $got"
    [[ -n $want && $got == "$want" ]]
}

rmi_built_then_empty() { # DRIVER ROOT RUNROOT
    p5 "$@" rmi localhost/p5-built && store_empty "$@"
}

# Our check of the damaged store must fail and name the changed file, like podman 5's.
verify_reports() {
    local out rc=0
    out=$("$bin" --root "$base/corrupt" --runroot /run/p5-corrupt --storage-driver overlay \
        storage verify --store default 2>&1) || rc=$?
    printf '%s\n(exit %s)\n' "$out" "$rc"
    ((rc != 0)) && grep -q 'etc/hello.txt' <<<"$out"
}

# Runs this script's copy in P5_BASE inside the chroot, in a private mount namespace. A failure
# of the namespace or chroot setup is recorded as a failed check.
# skopeo 1.18 of the chroot as a program the proxy client can spawn (its socket on fd 0): a
# private mount namespace with /proc, /dev and $base (at its own path) in the chroot.
write_chroot_skopeo() {
    cat >"$base/skopeo-1.18" <<SCRIPT
#!/bin/sh
exec unshare -m sh -c '
  mount -t proc proc "$chroot_dir/proc"
  mount --bind /dev "$chroot_dir/dev"
  mkdir -p "$chroot_dir$base" && mount --bind "$base" "$chroot_dir$base"
  exec chroot "$chroot_dir" skopeo "\$@"' - "\$@"
SCRIPT
    chmod +x "$base/skopeo-1.18"
}

# The image proxy driven by bootc's client (containers-image-proxy 0.11.0) through SEQUENCE on REF:
# skopeo 1.18's answers and ours must be the same (manifest digest, layer digests and sizes, the
# SHA-256 of every blob that arrived).
proxy_parity() { # SEQUENCE REF
    local theirs ours client=tests/proxy-client/target/release/proxy-client
    theirs=$("$client" "$1" "$2" "$base/skopeo-1.18") || return 1
    ours=$(BOOTC_EXP_EXTERNAL_CONTAINER_TOOL=$bin "$client" "$1" "$2" "$bin") || return 1
    echo "skopeo 1.18: $theirs"
    echo "ours:        $ours"
    [[ $theirs == "$ours" ]]
}

in_chroot() { # PHASE
    local rc=0
    unshare -m --propagation private -- bash "$base/podman5-check.sh" __ns "$@" || rc=$?
    ((rc == 0)) || record FAIL "chroot phase $1 (exit $rc)"
}

# ------------------------------------------------------------------------------------ the modes

if [[ ${1:-} == __ns ]]; then
    shift
    # The chroot's / must be a mount point: c/storage's chrooted layer extraction remounts it.
    mount --bind "$chroot_dir" "$chroot_dir"
    mount -t proc proc "$chroot_dir/proc"
    mount -t sysfs sysfs "$chroot_dir/sys" 2>/dev/null || mount --rbind /sys "$chroot_dir/sys"
    mount --rbind /dev "$chroot_dir/dev"
    mount -t tmpfs tmpfs "$chroot_dir/run"
    mkdir -p "$chroot_dir$base"
    mount --bind "$base" "$chroot_dir$base"
    exec chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        PODMAN_IGNORE_CGROUPSV1_WARNING=1 P5_BASE="$base" \
        /bin/bash "$base/podman5-check.sh" __chroot "$@"
fi

if [[ ${1:-} == __chroot ]]; then
    case ${2:-} in
    reference) phase_versions_and_reference ;;
    podman5) phase_podman5 ;;
    *)
        echo "unknown phase ${2:-}" >&2
        exit 2
        ;;
    esac
    exit 0
fi

if [[ $# -gt 0 ]]; then
    awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" >&2
    exit 2
fi

[[ $(id -u) -eq 0 ]] || {
    echo "run as root" >&2
    exit 1
}
for tool in umoci jq unshare findmnt cargo; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing (scripts/install-deps.sh installs the packages)" >&2
        exit 1
    }
done
cd "$(dirname "$0")/.."
bin=$PWD/target/debug/bootc-image

cleanup() {
    if [[ -s $base/registry/pid ]]; then
        kill "$(cat "$base/registry/pid")" 2>/dev/null || true
        rm -f "$base/registry/pid"
    fi
    unmount_under "$base"
    local d
    for d in proc sys dev run "${base#/}"; do unmount_under "$chroot_dir/$d"; done
}
trap cleanup EXIT

say "a fresh $base"
cleanup
rm -rf "$base"
mkdir -p "$base/empty"
: >"$results"
cp "$0" "$base/podman5-check.sh"

say "the trixie chroot: $chroot_dir"
ensure_chroot

say "building bootc-image"
cargo build
"$bin" --version

say "the OCI test image"
make_image

for driver in "${drivers[@]}"; do
    say "bootc-image copy-to-storage, $driver"
    check "$driver: bootc-image copy-to-storage" \
        "$bin" --root "$base/$driver" --runroot "/run/p5-$driver" --storage-driver "$driver" \
        copy-to-storage --source "oci:$oci:$tag" --target "$image"
    check "$driver: bootc-image copy-to-storage $implied_image" \
        "$bin" --root "$base/implied-$driver" --runroot "/run/p5-implied-$driver" \
        --storage-driver "$driver" copy-to-storage --source "oci:$oci:$implied_tag" \
        --target "$implied_image"
done
say "negative control: $base/corrupt, a copy of ours with one file changed afterwards"
check "overlay: bootc-image copy-to-storage + change a file (negative control)" make_corrupt_store

say "bootc-image storage verify on the damaged store, and --repair on a copy of it"
check "bootc-image storage verify reports the changed file" verify_reports
cp -a "$base/corrupt" "$base/corrupt-ours"
cp -a "$base/corrupt" "$base/corrupt-p5"
check "bootc-image storage verify --repair" \
    "$bin" --root "$base/corrupt-ours" --runroot /run/p5-corrupt-ours --storage-driver overlay \
    storage verify --store default --repair

say "bootc-image copy-to-storage killed (SIGKILL) at two write events"
for point in import:layers-written image:big-data:2; do
    check "overlay: bootc-image copy-to-storage killed at $point" killed_copy "$point"
done

say "bootc-image pull-from-default-storage (from the overlay store)"
check "overlay: bootc-image pull-from-default-storage" \
    "$bin" --root "$base/overlay" --runroot /run/p5-overlay --storage-driver overlay \
    --sysroot "$base/sysroot" pull-from-default-storage "$image"

say "bootc-image build-chunked from a small tree with dpkg lists"
check "build-chunked: a chunked image from a root filesystem" make_built_image

say "bootc-image copy-to-storage from a composefs repository made from the test image"
cargo build --release --quiet --manifest-path tests/composefs-fixture/Cargo.toml
check "composefs: a repository made with composefs-oci" \
    tests/composefs-fixture/target/release/composefs-fixture import "oci:$oci:$tag" "$base/composefs" "$tag"
check "composefs: bootc-image copy-to-storage --source composefs:" \
    "$bin" --root "$base/composefs-ours" --runroot /run/p5-composefs --storage-driver overlay \
    copy-to-storage --source "composefs:$base/composefs:$tag" --target "$image" --progress none

say "bootc-image as bootc's podman (docs/bootc.md): pull into a store, push from it into another"
check "seam: pull oci: as bootc's podman" \
    env BOOTC_EXP_EXTERNAL_CONTAINER_TOOL="$bin" "$bin" --root "$base/seam" --runroot /run/p5-seam \
    pull "oci:$oci:$tag"
check "seam: image push into another store as bootc's podman" \
    env BOOTC_EXP_EXTERNAL_CONTAINER_TOOL="$bin" "$bin" --root "$base/seam" --runroot /run/p5-seam \
    image push --remove-signatures "$image" \
    "containers-storage:[overlay@$base/seam-push+/run/p5-seam-push]$image"

say "a registry (Debian's docker-registry) holding the test image, for skopeo 1.18's image proxy"
check "registry: docker-registry started and the image pushed (skopeo 1.9)" start_registry
check "zstd:chunked: bootc-image export --compression zstd:chunked, pushed with skopeo 1.9" \
    export_zstd_chunked
check "zstd:chunked: a 3 MiB file of noise exported as zstd:chunked (chunks), pushed" \
    export_big_zstd_chunked
check "reuse: v1 and v2 (one file changed) pushed as zstd:chunked; v1 imported from gzip by bootc-image" \
    make_reuse_pair reuse
check "rchunks: v1 and v2 (100 bytes of a 3 MiB file changed) pushed as zstd:chunked; v1 pulled by bootc-image" \
    make_reuse_pair rchunks
check "registry: bootc-image export docker:// (a native push from the overlay store)" \
    "$bin" --root "$base/overlay" --runroot /run/p5-overlay --storage-driver overlay \
    export "$image" "docker://127.0.0.1:$(cat "$base/registry/port")/p5-pushed:$tag" \
    --tls-verify=false --digestfile "$base/registry/pushed-digest"
cp "$bin" "$base/bootc-image"

in_chroot reference

say "the zstd:chunked image, imported by bootc-image (its TOC kept)"
check "zstd:chunked: bootc-image pull" \
    "$bin" --root "$base/zc-ours" --runroot /run/p5-partial-zc-ours --storage-driver overlay \
    pull --tls-verify=false --progress none "127.0.0.1:$(cat "$base/registry/port")/p5-zc:$tag"

say "our records against skopeo 1.18's (same OCI image)"
for driver in "${drivers[@]}"; do
    check "$driver: records match skopeo 1.18's" \
        compare_with_reference "$base/$driver" "$driver" "$base/ref-$driver"
done
check "bootc store: records match skopeo 1.18's" \
    compare_with_reference "$bootc_store" overlay "$base/ref-overlay"
check "composefs: records match skopeo 1.18's" \
    compare_with_reference "$base/composefs-ours" overlay "$base/ref-overlay"
for driver in "${drivers[@]}"; do
    check "$driver: $implied_image records match skopeo 1.18's" \
        compare_with_reference "$base/implied-$driver" "$driver" "$base/ref-implied-$driver"
done

say "the image proxy: ours against skopeo 1.18's, driven by bootc's own client version"
cargo build --release --quiet --manifest-path tests/proxy-client/Cargo.toml
write_chroot_skopeo
for ref in "containers-storage:[overlay@$base/overlay+/run/p5-overlay]$image" "oci:$oci:$tag"; do
    for sequence in ostree-ext composefs; do
        check "proxy $sequence, $ref: the same answers as skopeo 1.18" proxy_parity "$sequence" "$ref"
    done
done

in_chroot podman5

say "zstd:chunked: podman 5 pulled our export partially"
check "zstd:chunked: every layer of our export pulled partially by podman 5 (TOC digest, no blob digest)" \
    pulled_partially "$base/ourzc-p5"
check "zstd:chunked: the chunked 3 MiB file's layer pulled partially by podman 5" \
    pulled_partially "$base/bigzc-p5"

say "zstd:chunked: our records against podman 5's partial pull"
check "zstd:chunked: layer IDs, toc-digest, big-data names and TOC bytes equal podman 5's" \
    compare_zc_records "$base/zc-ours" "$base/zc-p5"

for pair in reuse rchunks; do
    if [[ $pair == reuse ]]; then
        say "bootc-image reuses the files of podman 5's partial pull"
    else
        say "bootc-image reuses the chunks of podman 5's partial pull"
    fi
    check "$pair: bootc-image pulls v2 partially over podman 5's partial pull of v1, fetching under 10 % of the blob" \
        fetches_under_10_percent "$pair" "$bin" --root "$base/$pair-p5" --runroot "/run/p5-partial-$pair-p5" \
        --storage-driver overlay pull --tls-verify=false --progress none \
        "127.0.0.1:$(cat "$base/registry/port")/p5-$pair:v2"
    check "$pair: bootc-image storage verify of podman 5's store after our partial pull" \
        "$bin" --root "$base/$pair-p5" --runroot "/run/p5-partial-$pair-p5" --storage-driver overlay storage verify
done

say "what podman 5 pushed, pulled by bootc-image natively"
check "registry: bootc-image pull (native) of podman 5's push, the digest podman 5 wrote" \
    digest_is "$(cat "$base/registry/p5-digest" 2>/dev/null)" native_pull_digest \
    "127.0.0.1:$(cat "$base/registry/port")/p5-by-podman:$tag"

say "summary"
cat "$results"
passed=$(grep -c '^PASS' "$results" || true)
failed=$(grep -c '^FAIL' "$results" || true)
echo "podman5-check: $passed passed, $failed failed"
((failed == 0))
