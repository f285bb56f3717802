//! Integration tests of `bootc-image copy-to-storage` against podman 4.3 and skopeo 1.9.3.
//!
//! One test binary (to keep link time down); the modules live in `tests/suite/`:
//! `util` (throw-away stores, podman/skopeo/bootc-image runners, tree walking), `fixture`
//! (deterministic OCI layouts, including broken ones), and the tests in `interop`, `errors`,
//! `locking` and `bootc_storage` (bootc's own store and the `bootc image` commands). The tests
//! need root, podman and skopeo.

// Benchmarks and tests report on the terminal and stop on the first broken fixture.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "suite/util.rs"]
mod util;

#[path = "suite/fixture.rs"]
mod fixture;

#[path = "suite/interop.rs"]
mod interop;

#[path = "suite/registry.rs"]
mod registry;

#[path = "suite/registry_token.rs"]
mod registry_token;

#[path = "suite/registry_push.rs"]
mod registry_push;

#[path = "suite/registry_faults.rs"]
mod registry_faults;

#[path = "suite/registry_partial.rs"]
mod registry_partial;

#[path = "suite/zstd_chunked.rs"]
mod zstd_chunked;

#[path = "suite/composefs.rs"]
mod composefs;

#[path = "suite/build_chunked.rs"]
mod build_chunked;

#[path = "suite/errors.rs"]
mod errors;

#[path = "suite/locking.rs"]
mod locking;

#[path = "suite/selfcheck.rs"]
mod selfcheck;

#[path = "suite/bootc_storage.rs"]
mod bootc_storage;

#[path = "suite/recovery.rs"]
mod recovery;

#[path = "suite/ostree_host.rs"]
mod ostree_host;

#[path = "suite/store_safety.rs"]
mod store_safety;

#[path = "suite/tar_parity.rs"]
mod tar_parity;

#[path = "suite/seam.rs"]
mod seam;

#[path = "suite/full_disk.rs"]
mod full_disk;

#[path = "suite/fuzz_smoke.rs"]
mod fuzz_smoke;

#[path = "suite/cli.rs"]
mod cli;

#[path = "suite/package.rs"]
mod package;

#[path = "suite/examples.rs"]
mod examples;

#[path = "suite/round2.rs"]
mod round2;
