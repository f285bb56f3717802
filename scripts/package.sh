#!/usr/bin/env bash
# Builds the Debian package: target/package/bootc-image_<version>_<arch>.deb, with
#   /usr/bin/bootc-image, /usr/libexec/bootc-image/bootc-image-ostree (stripped; their debug info
#   split off into target/package/debug/), man pages for every command, bash/zsh/fish completions,
#   the licenses, and for bootc's seam (docs/bootc.md): `podman` and `skopeo` links to bootc-image in
#   /usr/libexec/bootc-image/bin/, an environment file and a systemd drop-in that point bootc there
#   (installed inactive: the administrator opts in). Needs the build packages of scripts/install-deps.sh and dpkg-deb.
# Usage: scripts/package.sh            (prints the path of the .deb)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
arch=$(dpkg --print-architecture)
out=target/package
root=$out/root
rm -rf "$root" "$out/debug"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/libexec/bootc-image" "$out/debug" \
    "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
    "$root/usr/share/doc/bootc-image" "$root/usr/libexec/bootc-image/bin" \
    "$root/usr/share/bootc-image/seam"

cargo build --release -p bootc-image-cli --features ostree --bin bootc-image --bin bootc-image-ostree >&2
install -m 0755 target/release/bootc-image "$root/usr/bin/bootc-image"
install -m 0755 target/release/bootc-image-ostree "$root/usr/libexec/bootc-image/bootc-image-ostree"
for bin in "$root/usr/bin/bootc-image" "$root/usr/libexec/bootc-image/bootc-image-ostree"; do
    name=$(basename "$bin")
    objcopy --only-keep-debug "$bin" "$out/debug/$name.debug"
    strip --strip-unneeded "$bin"
    objcopy --add-gnu-debuglink="$out/debug/$name.debug" "$bin"
done

tool=target/release/bootc-image
"$tool" generate-man "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
"$tool" completion bash >"$root/usr/share/bash-completion/completions/bootc-image"
"$tool" completion zsh >"$root/usr/share/zsh/vendor-completions/_bootc-image"
"$tool" completion fish >"$root/usr/share/fish/vendor_completions.d/bootc-image.fish"
cat LICENSE-MIT LICENSE-APACHE >"$root/usr/share/doc/bootc-image/copyright"

# bootc's seam: bootc runs $BOOTC_EXP_EXTERNAL_CONTAINER_TOOL, and PATH's literal `skopeo`.
ln -s ../../../bin/bootc-image "$root/usr/libexec/bootc-image/bin/podman"
ln -s ../../../bin/bootc-image "$root/usr/libexec/bootc-image/bin/skopeo"
cat >"$root/usr/share/bootc-image/seam/environment" <<'ENV'
# bootc with bootc-image behind its external-tool seam (docs/bootc.md). For a shell:
#   set -a; . /usr/share/bootc-image/seam/environment; set +a
BOOTC_EXP_EXTERNAL_CONTAINER_TOOL=/usr/libexec/bootc-image/bin/podman
PATH=/usr/libexec/bootc-image/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV
cat >"$root/usr/share/bootc-image/seam/50-bootc-image.conf" <<'DROPIN'
# bootc's updates with bootc-image behind its seam (docs/bootc.md). To opt in:
#   mkdir -p /etc/systemd/system/bootc-fetch-apply-updates.service.d
#   cp /usr/share/bootc-image/seam/50-bootc-image.conf /etc/systemd/system/bootc-fetch-apply-updates.service.d/
#   systemctl daemon-reload
[Service]
EnvironmentFile=/usr/share/bootc-image/seam/environment
DROPIN

cat >"$root/DEBIAN/control" <<CONTROL
Package: bootc-image
Version: $version
Architecture: $arch
Maintainer: bootc-image developers <bootc-image@localhost>
Depends: libc6, libglib2.0-0, libostree-1-1, util-linux
Recommends: golang-github-containers-common
Suggests: podman, skopeo
Section: admin
Priority: optional
Description: container images in containers-storage, natively (the bootc image commands)
 Reads and writes container images directly in containers-storage, the store
 podman, skopeo and buildah share: copy-to-storage (OCI layouts, archives, the
 OSTree host image), pull-from-default-storage, bound images, image
 exists/rm/tag, storage init/status/verify/gc. Also serves as the podman and
 skopeo stock bootc runs (BOOTC_EXP_EXTERNAL_CONTAINER_TOOL): the image proxy,
 copies, and bootc's store, natively.
CONTROL

deb=$out/bootc-image_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
