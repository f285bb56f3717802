#!/usr/bin/env bash
# Builds stock bootc 1.16.9 (tests/bootc-oracle) for the seam checks: DIR/target/debug/bootc.
# Usage: scripts/build-bootc.sh DIR   (about five minutes on two cores; DIR is reused)
#
# bootc's workspace names a GitHub-only crate (bcvk) for crates/tests-integration alone: that
# member is left out. composefs-rs, a git dependency, is patched to the vendored copy. Debian 12 has
# libostree 2022.7 where bootc asks for 2025.3: the version check is skipped and five newer
# symbols get test-only stand-ins (see tests/bootc-oracle/README.md).
set -euo pipefail
oracle=$(cd "$(dirname "$0")/../tests/bootc-oracle" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
pkgs=(libostree-dev libssl-dev libzstd-dev pkg-config gcc)
dpkg -s "${pkgs[@]}" >/dev/null 2>&1 ||
  { apt-get update -q >/dev/null; apt-get install -y -q "${pkgs[@]}" >/dev/null; }
cd "$out"
[ -d bootc ] || tar xzf "$oracle/bootc-534c76ea.tar.gz"
[ -d composefs-rs ] || tar xzf "$oracle/composefs-rs-0fbc8533.tar.gz"
if ! grep -q '^exclude = \["crates/tests-integration"\]' bootc/Cargo.toml; then
  sed -i '0,/^members = \["crates\/\*"\]/s//members = ["crates\/*"]\nexclude = ["crates\/tests-integration"]/' bootc/Cargo.toml
  printf '\n[patch."https://github.com/composefs/composefs-rs"]\ncomposefs-ctl = { path = "../composefs-rs/crates/composefs-ctl" }\n' >>bootc/Cargo.toml
fi
cat >stand-ins.c <<'C'
/* Test-only: libostree symbols newer than Debian 12's 2022.7, none of them on a container path. */
#include <gio/gio.h>
typedef struct _OstreeSysroot OstreeSysroot;
typedef struct _OstreeDeployment OstreeDeployment;
static gboolean no (GError **error)
{
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "needs libostree >= 2025.3");
  return FALSE;
}
void ostree_sepolicy_set_null_log (void) {}
gboolean ostree_sysroot_change_finalization (OstreeSysroot *s, OstreeDeployment *d, GError **error) { return no (error); }
gboolean ostree_deployment_is_finalization_locked (OstreeDeployment *d) { return FALSE; }
gboolean ostree_sysroot_deployment_can_soft_reboot (OstreeSysroot *s, OstreeDeployment *d) { return FALSE; }
gboolean ostree_sysroot_deployment_set_soft_reboot (OstreeSysroot *s, OstreeDeployment *d, gboolean allow, GCancellable *c, GError **error) { return no (error); }
C
read -ra cflags <<<"$(pkg-config --cflags gio-2.0)"
gcc -c -fPIC "${cflags[@]}" stand-ins.c -o stand-ins.o
ar rcs libstandins.a stand-ins.o
cd bootc
SYSTEM_DEPS_OSTREE_1_NO_PKG_CONFIG=1 SYSTEM_DEPS_OSTREE_1_LIB=ostree-1 \
  SYSTEM_DEPS_OSTREE_1_SEARCH_NATIVE=/usr/lib/x86_64-linux-gnu \
  RUSTFLAGS="-C link-arg=$out/libstandins.a" \
  cargo build -q -p bootc --target-dir "$out/target"
"$out/target/debug/bootc" --version
