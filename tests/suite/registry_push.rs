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

/// `build-chunked --push`: a build pushed, then a rebuild after one package changed pushed with
/// --from-image, uploading that layer only: the registry's two manifests differ in it only, podman pulls
/// the update with the digest printed, and our pull of the update after the first fetches only
/// the changed layer (those above it copied from the store's own layers, the tree as podman's).
#[test]
fn build_chunked_push_update() {
    use crate::build_chunked::make_rootfs;
    let reg = Registry::start(false);
    let store = TestStore::new(Driver::Overlay);
    let conf = reg.conf();
    let pushed = |version: &str, tag: &str, extra: &[&str]| -> String {
        let root = make_rootfs(&store.dir, version);
        let dest = format!("{}/os:{tag}", reg.host());
        let mut args = vec!["--push", &dest, "--timestamp", "1700000000"];
        args.extend_from_slice(extra);
        // The registry's registries.conf (plain HTTP) for the push.
        let out = run(store
            .ours_cmd()
            .arg("build-chunked")
            .arg("--rootfs")
            .arg(&root)
            .args([
                "--target",
                &format!("localhost/os:{tag}"),
                "--progress",
                "none",
            ])
            .args(&args)
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env_remove("SOURCE_DATE_EPOCH"));
        assert!(out.status.success(), "build --push: {}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("Pushed digest: "))
            .expect("pushed digest")
            .to_string()
    };
    let uploads = || {
        fs::read_to_string(reg.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"PATCH /v2/"))
            .count()
    };
    let one = pushed("5.2", "1", &[]);
    let first = uploads();
    let two = pushed("5.2.15-updated", "2", &["--from-image", "localhost/os:1"]);
    // The layers pushed before are found there (the blob-info cache): one layer uploaded.
    assert_eq!(
        uploads() - first,
        1,
        "the update uploads only the changed layer"
    );
    assert_ne!(one, two);
    let layers = |tag: &str| -> Vec<String> {
        let raw = run_ok(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/os:{tag}", reg.host()),
        ]));
        let m: serde_json::Value = serde_json::from_str(&raw).expect("manifest");
        m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|d| d["digest"].as_str().expect("digest").to_string())
            .collect()
    };
    let (l1, l2) = (layers("1"), layers("2"));
    assert_eq!(l1.len(), l2.len());
    let changed: Vec<usize> = (0..l1.len()).filter(|&i| l1[i] != l2[i]).collect();
    assert_eq!(changed.len(), 1, "one layer changed: {changed:?}");
    assert_eq!(remote_digest(&format!("{}/os:2", reg.host())), two);
    // podman pulls the update.
    let other = TestStore::new(Driver::Overlay);
    let image = format!("{}/os:2", reg.host());
    let pulled = run(other
        .podman_cmd()
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .args(["pull", "-q", &image]));
    assert!(
        pulled.status.success(),
        "podman pull: {}",
        describe(&pulled)
    );
    assert_eq!(
        other.inspect(&image)["Id"],
        store.inspect("localhost/os:2")["Id"]
    );
    // Our pull of the update after the first: only the changed layer is fetched.
    let mine = TestStore::new(Driver::Overlay);
    let pull = |tag: &str| {
        let out = run(ours(&mine, &reg).env("BOOTC_IMAGE_VIA", "native").args([
            "pull",
            "--progress",
            "none",
            &format!("{}/os:{tag}", reg.host()),
        ]));
        assert!(out.status.success(), "pull os:{tag}: {}", describe(&out));
    };
    pull("1");
    let before: Vec<usize> = l2.iter().map(|d| reg.blob_gets(d)).collect();
    pull("2");
    let fetched: Vec<usize> = l2
        .iter()
        .zip(&before)
        .map(|(d, b)| reg.blob_gets(d) - b)
        .collect();
    let want: Vec<usize> = (0..l2.len())
        .map(|i| usize::from(changed.contains(&i)))
        .collect();
    assert_eq!(fetched, want, "the update fetches only the changed layer");
    // The layers above it were copied from the store's own: podman mounts the same tree as the
    // one it pulled itself, and reads the records.
    crate::interop::assert_trees_equal(&other, &mine, &image, fixture::UNDEFINED_MTIME_PATHS);
    mine.podman_ok(&["image", "inspect", &image]);
    assert_eq!(mine.inspect(&image)["Id"], other.inspect(&image)["Id"]);
}
