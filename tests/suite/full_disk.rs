//! A full disk and a store we may not write: `copy-to-storage` fails with one line that names the
//! cause, and the store is exactly as it was (podman still reads it). The store lives on a small
//! loop-mounted ext4 filled up to a given number of free bytes, so that ENOSPC strikes in each
//! phase of the copy in turn: layer data, tar-splits, records, image data.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::errors::{assert_seed_listed, seed};
use crate::fixture::{self, Compression, Entry, ImageSpec, OciDir};
use crate::util::{Driver, TestStore, assert_clean_failure, describe, run, run_ok};

/// A small ext4 file system, loop-mounted; unmounted and deleted on drop.
struct LoopFs {
    dir: PathBuf,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(size: &str) -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("bt-fs-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let img = dir.join("fs.img");
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).expect("mount point");
        run_ok(Command::new("truncate").args(["-s", size]).arg(&img));
        // No blocks reserved for root: "free" means free for us too.
        run_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&img),
        );
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
        );
        LoopFs { dir, mnt }
    }

    /// Free bytes on the file system.
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.mnt).expect("statvfs");
        st.f_bfree * st.f_frsize
    }

    /// Fills the file system so that about `leave` bytes stay free.
    fn fill_leaving(&self, leave: u64) {
        let filler = self.mnt.join("filler");
        let _ = fs::remove_file(&filler);
        let f = fs::File::create(&filler).expect("create filler");
        // The file's own extent blocks take space too: shrink the request until it fits.
        let mut size = self.free().saturating_sub(leave);
        while size > 0 {
            match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size) {
                Ok(()) => break,
                Err(rustix::io::Errno::NOSPC) => size = size.saturating_sub(64 << 10),
                Err(e) => panic!("fallocate filler: {e}"),
            }
        }
        f.sync_all().expect("sync filler");
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        crate::util::unmount_below(&self.mnt);
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A two-layer image of incompressible data (about 1 MiB a layer, 40 files each).
fn image(dir: &Path) -> String {
    let mut oci = OciDir::create(&dir.join("oci"));
    let tars: Vec<Vec<u8>> = (0..2u64)
        .map(|l| {
            let mut entries = vec![Entry::dir(&format!("l{l}/"))];
            for i in 0..40u64 {
                entries.push(Entry::file(
                    &format!("l{l}/f{i:02}"),
                    fixture::pseudo_random(26 * 1024, 500 + l * 100 + i),
                ));
            }
            fixture::build_tar(&entries)
        })
        .collect();
    oci.add_image(
        Some("t"),
        &ImageSpec::from_tars("enospc", &tars, Compression::Gzip),
    );
    oci.source(Some("t"))
}

/// ENOSPC in every phase of a copy, on overlay and vfs: each copy either succeeds (then podman
/// mounts the image and removes it) or fails with one line naming the full disk, leaving the store
/// as it was.
#[test]
fn enospc_leaves_the_store_unchanged() {
    let mut failures = 0;
    for driver in [Driver::Overlay, Driver::Vfs] {
        let disk = LoopFs::new("48M");
        let store = TestStore::new_in(driver, &disk.mnt);
        seed(&store);
        let src = image(&disk.dir);
        // ext4 keeps about 1 MiB of a file system this small for itself: free space below that
        // already fails the first write. Steps of 250 KiB then walk ENOSPC through the copy.
        for leave in (0..12u64).map(|k| (900 << 10) + k * (250 << 10)) {
            disk.fill_leaving(leave);
            let before = store.snapshot();
            let out = store.ours_copy(&src, Some("localhost/big:latest"));
            if out.status.success() {
                let mnt = store.image_mount("localhost/big:latest");
                assert!(mnt.join("l1/f39").is_file(), "{leave}: l1/f39");
                store.image_umount("localhost/big:latest");
                store.podman_ok(&["rmi", "localhost/big:latest"]);
                continue;
            }
            failures += 1;
            let what = format!("{driver:?}, {leave} bytes free");
            let line = assert_clean_failure(&out, &what, &["No space left on device"]);
            assert_eq!(out.status.code(), Some(4), "{what}: storage class");
            eprintln!("{what}: {line}");
            let d = before.diff(&store.snapshot());
            assert!(d.is_empty(), "{what}: the store changed:\n{}", d.join("\n"));
            assert_seed_listed(&store);
        }
        let _ = fs::remove_file(disk.mnt.join("filler"));
        drop(store);
    }
    assert!(failures >= 12, "only {failures} copies hit a full disk");
}

/// A store on a read-only mount, and a store whose directories we may not write (an
/// unprivileged user): one line naming the store, the store unchanged.
#[test]
fn read_only_and_unwritable_stores_fail_cleanly() {
    let store = TestStore::new(Driver::Overlay);
    seed(&store);
    let src = image(&store.dir);
    // Read-only: a read-only bind mount of the graph root over itself.
    run_ok(
        Command::new("mount")
            .arg("--bind")
            .arg(&store.root)
            .arg(&store.root),
    );
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&store.root),
    );
    let before = store.snapshot();
    let out = store.ours_copy(&src, Some("localhost/ro:latest"));
    assert_clean_failure(&out, "read-only store", &["Read-only file system"]);
    assert_eq!(out.status.code(), Some(4), "read-only store: storage class");
    assert!(
        before.diff(&store.snapshot()).is_empty(),
        "the read-only store changed"
    );
    run_ok(Command::new("umount").arg(&store.root));
    assert_seed_listed(&store);
    // Unwritable: run as nobody, who may read the source but not write the store.
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&store.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::BIN)
        .args(["--root"])
        .arg(&store.root)
        .args(["--runroot"])
        .arg(&store.runroot)
        .args([
            "--storage-driver",
            "overlay",
            "copy-to-storage",
            "--source",
            &src,
        ])
        .args(["--target", "localhost/eacces:latest"]);
    let out = run(&mut cmd);
    assert_clean_failure(&out, "unwritable store", &["Permission denied"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "unwritable store: storage class"
    );
    assert!(
        before.diff(&store.snapshot()).is_empty(),
        "the unwritable store changed: {}",
        describe(&out)
    );
    assert_seed_listed(&store);
}
