#!/usr/bin/env bash
# Builds tests/ostree-fixture (its own Cargo workspace) and runs a full demo of the bootc host-image
# fixture: a small rootfs → ostree commit → chunked encapsulated OCI image (tag "base") → a derived
# image with one plain tar layer on top (tag "derived") → both imported into ONE scratch sysroot and
# deployed (two deployments of stateroot "fixture-os", each with a bootc origin) → both exported
# again with ostree-ext's own exporter (the copy-to-storage oracle).
#
# Usage: scripts/ostree-fixture.sh [--twice] [--keep]
#   --twice  run the whole pipeline two times from scratch and compare the digests (determinism)
#   --keep   leave the work directory (and its sysroot) in place at the end
# Work directory: $OSTREE_FIXTURE_WORK, default /var/tmp/ostree-fixture (the sysroot and the build
# repository must share a filesystem). Needs root (ostree admin, chattr, file owners, setuid).
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

twice=0
keep=0
for arg in "$@"; do
    case $arg in
    --twice) twice=1 ;;
    --keep) keep=1 ;;
    *)
        echo "usage: $0 [--twice] [--keep]" >&2
        exit 2
        ;;
    esac
done

work=${OSTREE_FIXTURE_WORK:-/var/tmp/ostree-fixture}
manifest=tests/ostree-fixture/Cargo.toml
bin=$PWD/tests/ostree-fixture/target/release/ostree-fixture
stateroot=fixture-os
base_name=localhost/ostree-fixture:base
derived_name=localhost/ostree-fixture:derived

step() { printf '\n== %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "ostree-fixture.sh: run as root (ostree admin deploy, chattr, owners, setuid)" >&2
    exit 1
fi

step "packages"
packages=(ostree libostree-dev libzstd-dev libssl-dev pkg-config libglib2.0-dev skopeo attr e2fsprogs jq)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
    echo "all present"
fi

step "build the tool"
start=$(date +%s)
cargo build --release --manifest-path "$manifest"
echo "build: $(($(date +%s) - start)) s"

# A small root filesystem (< 5 MB) exercising what an ostree commit keeps: owners, modes
# (setuid, a 0750 directory), a user xattr, a symlink, a hard link pair, usr-merge symlinks,
# /usr/etc, the kernel placeholder `ostree admin deploy` needs, an empty /var.
make_rootfs() {
    local r=$1
    mkdir -p "$r"/usr/{bin,lib/modules/6.0.0,share/fixture/private,share/doc/fixture,etc} "$r"/var
    chmod 0755 "$r"
    printf '#!/bin/sh\necho hello from the ostree fixture\n' >"$r/usr/bin/hello"
    chmod 0755 "$r/usr/bin/hello"
    ln -s hello "$r/usr/bin/hi"
    printf '#!/bin/sh\nid\n' >"$r/usr/bin/suid-tool"
    chmod 4755 "$r/usr/bin/suid-tool"
    seq 1 40000 >"$r/usr/lib/libfixture.so.1"          # ~230 KB
    printf 'placeholder kernel for ostree admin deploy\n' >"$r/usr/lib/modules/6.0.0/vmlinuz"
    seq 1 120000 | sed 's/$/ fixture data line/' >"$r/usr/share/fixture/data.bin" # ~2.9 MB
    ln "$r/usr/share/fixture/data.bin" "$r/usr/share/fixture/data-hardlink.bin"
    seq 1 1000 >"$r/usr/share/fixture/small.txt"
    : >"$r/usr/share/fixture/empty"
    printf 'x' >"$r/usr/share/fixture/one-byte"
    printf 'has a user xattr\n' >"$r/usr/share/fixture/xattr.txt"
    setfattr -n user.fixture -v hello "$r/usr/share/fixture/xattr.txt"
    printf 'owned by 1000:1000\n' >"$r/usr/share/fixture/private/owned"
    chown -R 1000:1000 "$r/usr/share/fixture/private"
    chmod 0750 "$r/usr/share/fixture/private"
    seq 1 5000 >"$r/usr/share/doc/fixture/README"
    printf 'NAME="ostree fixture"\nID=fixture\nVERSION_ID=1\n' >"$r/usr/etc/os-release"
    ln -s usr/bin "$r/bin"
    ln -s usr/lib "$r/lib"
}

# A plain (non-ostree) layer as a `FROM base` build would add: a file under /usr and one under /etc.
make_derived_tar() {
    local src=$1 out=$2
    mkdir -p "$src/usr/share/derived" "$src/etc"
    chmod 0755 "$src" "$src/usr" "$src/usr/share" "$src/usr/share/derived" "$src/etc"
    printf 'added by the derived layer\n' >"$src/usr/share/derived/hello-derived.txt"
    printf 'derived=1\n' >"$src/etc/derived.conf"
    tar --create --file "$out" --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 \
        --numeric-owner -C "$src" usr etc
}

# Digests of an image in an OCI layout, read from the layout itself (no tool involved; DiffIDs are
# recomputed from the blobs). Writes "stable" lines (must not change between runs) to $3 and
# "volatile" ones to $4. With $5 = oracle, layers after the `ostree.final-diffid` one (derived
# layers, which ostree-ext re-exports with `ostree export`: mtimes = the import time) and the
# manifest/config digests (history is stamped with the export time) count as volatile.
image_summary() {
    local dir=$1 tag=$2 stable=$3 volatile=$4 mode=${5:-built} m cfg final derived=0 d s t id line
    m=$(jq -r --arg t "$tag" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$dir/index.json")
    cfg=$(jq -r '.config.digest' "$dir/blobs/sha256/${m#sha256:}")
    final=$(jq -r '.config.Labels["ostree.final-diffid"] // ""' "$dir/blobs/sha256/${cfg#sha256:}")
    if [[ $mode == oracle ]]; then
        printf '%s manifest %s\n%s config %s\n' "$tag" "$m" "$tag" "$cfg" >>"$volatile"
    else
        printf '%s manifest %s\n%s config %s\n' "$tag" "$m" "$tag" "$cfg" >>"$stable"
    fi
    while read -r d s t; do
        id=sha256:$(gzip -dc "$dir/blobs/sha256/${d#sha256:}" | sha256sum | cut -d' ' -f1)
        line="$tag layer $d size=$s diff_id=$id ($t)"
        if [[ $mode == oracle ]] && ((derived)); then
            echo "$line [derived]" >>"$volatile"
        else
            echo "$line" >>"$stable"
        fi
        if [[ $id == "$final" ]]; then derived=1; fi
    done < <(jq -r '.layers[] | "\(.digest) \(.size) \(.mediaType)"' "$dir/blobs/sha256/${m#sha256:}")
    if [[ $mode == oracle ]]; then
        jq -r '.rootfs.diff_ids[]' "$dir/blobs/sha256/${cfg#sha256:}" |
            sed "s/^/$tag config diff_id /" >>"$volatile"
    else
        jq -r '.rootfs.diff_ids[]' "$dir/blobs/sha256/${cfg#sha256:}" |
            sed "s/^/$tag config diff_id /" >>"$stable"
    fi
}

run_once() {
    local out=$1
    step "fresh work directory $work"
    if [[ -d $work/sysroot ]]; then
        "$bin" cleanup --sysroot "$work/sysroot"
    fi
    rm -rf "$work"
    mkdir -p "$work"

    step "rootfs"
    make_rootfs "$work/rootfs"
    du -sh --apparent-size "$work/rootfs"

    step "build: commit + encapsulate (chunked)"
    "$bin" build --rootfs "$work/rootfs" --repo "$work/repo" --oci "$work/oci" --tag base

    step "add-derived"
    make_derived_tar "$work/derived-src" "$work/derived.tar"
    "$bin" add-derived --oci "$work/oci" --tag base --layer-tar "$work/derived.tar" --new-tag derived

    step "deploy base and derived into one sysroot (two deployments of $stateroot)"
    "$bin" deploy --sysroot "$work/sysroot" --oci "$work/oci" --tag base \
        --imgref-name "$base_name" --stateroot "$stateroot"
    "$bin" deploy --sysroot "$work/sysroot" --oci "$work/oci" --tag derived \
        --imgref-name "$derived_name" --stateroot "$stateroot"

    step "list"
    "$bin" list --sysroot "$work/sysroot"

    step "export (oracle: ostree-ext container::store::export, as copy-to-storage)"
    "$bin" export --sysroot "$work/sysroot" --imgref "ostree-unverified-registry:$base_name" \
        --oci "$work/export" --tag base
    "$bin" export --sysroot "$work/sysroot" --imgref "ostree-unverified-registry:$derived_name" \
        --oci "$work/export" --tag derived

    step "summary"
    : >"$out"
    : >"$out.volatile"
    echo "commit fixture/base $(ostree --repo="$work/repo" rev-parse fixture/base)" >>"$out"
    image_summary "$work/oci" base "$out" "$out.volatile"
    image_summary "$work/oci" derived "$out" "$out.volatile"
    image_summary "$work/export" base "$out" "$out.volatile" oracle
    image_summary "$work/export" derived "$out" "$out.volatile" oracle
    echo "# stable: built images (oci:base, oci:derived) and the ostree layers of the oracle exports"
    cat "$out"
    echo "# volatile: oracle manifest/config digests, config diff_ids, derived layers"
    cat "$out.volatile"
}

summaries=$(mktemp -d)
trap 'rm -rf "$summaries"' EXIT
run_once "$summaries/1"
if ((twice)); then
    sleep 1 # make sure the second run's wall clock differs
    run_once "$summaries/2"
    step "determinism"
    if diff -u "$summaries/1" "$summaries/2"; then
        echo "deterministic: built images and exported layers are identical across the two runs"
    else
        echo "NOT deterministic (diff above)" >&2
        exit 1
    fi
    echo "volatile part (expected to differ: export/import wall-clock times):"
    diff "$summaries/1.volatile" "$summaries/2.volatile" || true
fi

if ((keep)); then
    echo "kept $work"
else
    step "cleanup"
    "$bin" cleanup --sysroot "$work/sysroot"
    rm -rf "$work"
fi
