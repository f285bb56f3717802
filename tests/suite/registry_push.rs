//! Pushes natively (`export IMAGE docker://NAME`): podman pulls what we push with the digest we
//! printed, an image pulled from a registry goes back (to its repository, or mounted into another)
//! with the digest it had, and a refused push says so in one line.

use std::fs;
use std::process::Command;

use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::registry::{Registry, failed, ours, v_digest};
use crate::util::{Driver, TestStore, describe, run, run_ok};

/// The digest a registry holds for `image` (`HOST/REPO:TAG`), as skopeo sees it.
fn remote_digest(image: &str) -> String {
    v_digest(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ])))
}

/// `export IMAGE docker://DEST` on `store`; the digest printed.
fn push(store: &TestStore, reg: &Registry, image: &str, dest: &str) -> String {
    let digestfile = store.scratch("digestfile");
    let out = run(ours(store, reg)
        .args(["export", image, &format!("docker://{dest}"), "--digestfile"])
        .arg(&digestfile));
    assert!(
        out.status.success(),
        "push {image} to {dest}: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .expect("a digest printed")
        .to_string();
    assert_eq!(
        fs::read_to_string(&digestfile).expect("digestfile"),
        printed,
        "--digestfile"
    );
    printed
}

/// An image of an OCI layout copied into a store is pushed to a new repository: podman 4.3 pulls
/// it into another store (same image ID, the digest we printed), skopeo sees that digest; pulled
/// back from the registry and pushed to its own repository and to another one of the same
/// registry, it keeps its digest (the stored manifest put byte for byte, blobs mounted).
#[test]
fn registry_native_push() {
    let reg = Registry::start(false);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let tars = [fixture::small_tar(120), fixture::small_tar(121)];
    let built = oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars("push", &tars, Compression::Zstd),
    );
    let out = run(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &oci.source(Some("v1")),
        "--target",
        "localhost/pushme:1",
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    let dest = format!("{}/pushed/app:1", reg.host());
    let digest = push(&store, &reg, "localhost/pushme:1", &dest);
    assert_eq!(
        remote_digest(&dest),
        digest,
        "skopeo sees the digest we printed"
    );
    // podman 4.3 pulls it.
    let other = TestStore::new(Driver::Overlay);
    let conf = reg.conf();
    let pulled = run(other
        .podman_cmd()
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .args(["pull", "-q", &dest]));
    assert!(
        pulled.status.success(),
        "podman pull: {}",
        describe(&pulled)
    );
    let v = other.inspect(&dest);
    assert_eq!(v["Id"], serde_json::Value::from(built.image_id()));
    assert_eq!(v["Digest"].as_str(), Some(digest.as_str()));
    // Pulled back by us, pushed to its own repository under another tag and to another
    // repository of the registry: the digest it had.
    let mine = TestStore::new(Driver::Overlay);
    let out = run(ours(&mine, &reg).env("BOOTC_IMAGE_VIA", "native").args([
        "pull",
        "--progress",
        "none",
        &dest,
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    let again = push(&mine, &reg, &dest, &format!("{}/pushed/app:2", reg.host()));
    assert_eq!(again, digest, "same repository: the digest it had");
    let layer_gets: Vec<usize> = built
        .layer_digests
        .iter()
        .map(|d| reg.blob_gets(d))
        .collect();
    let mounted = push(
        &mine,
        &reg,
        &dest,
        &format!("{}/elsewhere/app:1", reg.host()),
    );
    assert_eq!(
        mounted, digest,
        "mounted into another repository: the digest it had"
    );
    assert_eq!(
        remote_digest(&format!("{}/elsewhere/app:1", reg.host())),
        digest
    );
    let after: Vec<usize> = built
        .layer_digests
        .iter()
        .map(|d| reg.blob_gets(d))
        .collect();
    assert_eq!(layer_gets, after, "no layer read back for the pushes");
    // podman reads the store we pushed from, unchanged.
    mine.podman_ok(&["image", "exists", &dest]);
}

/// A push the registry refuses (no credentials) or cannot reach ends in one line naming the
/// destination, with exit code 5.
#[test]
fn registry_native_push_refused() {
    let reg = Registry::start(true);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars("refused", &[fixture::small_tar(122)], Compression::Gzip),
    );
    let out = run(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &oci.source(Some("v1")),
        "--target",
        "localhost/refused:1",
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    let empty = store.scratch("auth.json");
    fs::write(&empty, "{\"auths\":{}}").expect("auth.json");
    let dest = format!("docker://{}/r/app:1", reg.host());
    let out = run(ours(&store, &reg)
        .args([
            "export",
            "localhost/refused:1",
            &dest,
            "--retry",
            "0",
            "--authfile",
        ])
        .arg(&empty));
    let line = failed(&out, "no credentials", &[5], &[&dest, "podman login"]);
    eprintln!("refused: {line}");
    let authfile = store.scratch("good.json");
    reg.authfile(&authfile, "tester:secret");
    let out = run(ours(&store, &reg)
        .args(["export", "localhost/refused:1", &dest, "--authfile"])
        .arg(&authfile));
    assert!(out.status.success(), "with credentials: {}", describe(&out));
}
