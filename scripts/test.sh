#!/usr/bin/env bash
# The whole suite, as CI runs it: packages, formatting, lints, the bench's build, shellcheck,
# then every test of the workspace (they drive real podman and skopeo, so run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo bench --no-run"
cargo bench --no-run
echo "== shellcheck"
shellcheck scripts/*.sh .ci/run
echo "== architecture rules (no import cycle, no file over 650 lines, no exit in the library, …)"
python3 scripts/check-architecture.py

echo "== build the OSTree fixture tool (ostree-ext 0.15, its own workspace)"
cargo build --release --manifest-path tests/ostree-fixture/Cargo.toml
echo "== build the composefs fixture tool (composefs-oci, its own workspace)"
cargo build --release --manifest-path tests/composefs-fixture/Cargo.toml

echo "== build the image proxy client (containers-image-proxy 0.11.0, bootc's; its own workspace)"
cargo build --release --manifest-path tests/proxy-client/Cargo.toml

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?

# podman 5 (Debian 13 chroot, built on first use) reads, checks, mounts and removes what we wrote.
echo "== podman 5 check"
./scripts/podman5-check.sh 2>&1 | tee -a "$log" || status=1

# Stock bootc 1.16.9 (built from tests/bootc-oracle on first use) with bootc-image behind its seam.
echo "== stock bootc through the seam"
./scripts/bootc-seam-check.sh 2>&1 | tee -a "$log" || status=1

# One closing line for the whole workspace (cargo prints one "test result:" per test binary).
awk '/^test result:/ || /^podman5-check: [0-9]+ passed/ || /^bootc-seam-check: [0-9]+ passed/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
            if ($(i + 1) ~ /^ignored/) s += $i
        }
    }
    END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
