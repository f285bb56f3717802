//! The Debian package (`scripts/package.sh`): it builds, holds the binary, the OSTree helper in
//! libexec, man pages and completions, and the binary runs from the unpacked tree.

use std::path::Path;
use std::process::Command;

use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::util::{Driver, TestStore, describe, run, run_ok};

#[test]
fn debian_package_builds_and_runs() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let deb = run_ok(&mut Command::new(repo.join("scripts/package.sh")));
    let deb = repo.join(deb.trim());
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for want in [
        "./usr/bin/bootc-image",
        "./usr/libexec/bootc-image/bootc-image-ostree",
        "./usr/share/man/man1/bootc-image.1.gz",
        "./usr/share/man/man1/bootc-image-copy-to-storage.1.gz",
        "./usr/share/man/man1/bootc-image-storage-gc.1.gz",
        "./usr/share/bash-completion/completions/bootc-image",
        "./usr/share/zsh/vendor-completions/_bootc-image",
        "./usr/share/fish/vendor_completions.d/bootc-image.fish",
        "./usr/share/doc/bootc-image/copyright",
        "./usr/libexec/bootc-image/bin/podman -> ../../../bin/bootc-image",
        "./usr/libexec/bootc-image/bin/skopeo -> ../../../bin/bootc-image",
        "./usr/share/bootc-image/seam/environment",
        "./usr/share/bootc-image/seam/50-bootc-image.conf",
    ] {
        assert!(
            listing.contains(want),
            "{want} missing from the package:\n{listing}"
        );
    }
    let store = TestStore::new(Driver::Overlay);
    let tree = store.scratch("unpacked");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    let bin = tree.join("usr/bin/bootc-image");
    let version = run_ok(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("bootc-image "), "{version}");
    // The seam's skopeo link: skopeo's help, with the option the proxy crate probes for.
    let help = run_ok(Command::new(tree.join("usr/libexec/bootc-image/bin/skopeo")).arg("--help"));
    assert!(help.contains("--user-agent-prefix"), "{help}");
    // The demo's kind of copy, with the unpacked binary.
    let mut oci = OciDir::create(&store.scratch("oci"));
    let spec = ImageSpec::from_tars("pkg", &[fixture::small_tar(401)], Compression::Gzip);
    oci.add_image(Some("t"), &spec);
    let out = run(Command::new(&bin)
        .arg("--root")
        .arg(&store.root)
        .arg("--runroot")
        .arg(&store.runroot)
        .args(["copy-to-storage", "--source", &oci.source(Some("t"))])
        .args(["--target", "localhost/pkg:latest"]));
    assert!(out.status.success(), "{}", describe(&out));
    store.inspect("localhost/pkg:latest");
    // Host images go to the helper in libexec (here it finds no OSTree repository: not exit 5).
    let empty = store.scratch("sysroot");
    std::fs::create_dir_all(empty.join("ostree/repo")).expect("mkdir");
    let out = run(Command::new(&bin)
        .arg("--sysroot")
        .arg(&empty)
        .arg("--root")
        .arg(&store.root)
        .args([
            "copy-to-storage",
            "--source",
            "ostree-unverified-registry:quay.io/x/y:1",
        ]));
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(5),
        "the helper was not found: {}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("needs"),
        "{}",
        describe(&out)
    );
}
