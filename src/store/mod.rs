//! The containers-storage engine: open a store, lock it as c/storage does, read and write its records.

pub(crate) mod atomic;
pub mod check;
pub(crate) mod content_index;
pub mod copy;
pub mod delete;
pub mod driver;
pub(crate) mod gzip_out;
pub mod image_input;
pub mod import;
pub mod inspect;
mod layer_big_data;
mod layer_reuse;
pub mod lookup;
pub mod names;
pub mod producer;
pub(crate) mod records;
pub(crate) mod tree_copy;
mod txn;
#[cfg(test)]
mod unit_tests;
pub mod verify;

use std::path::{Path, PathBuf};

use storage_format::{ImageRecord, LayerRecord, LockFile, RecordFile, StorageConf};

pub use driver::{Driver, DriverKind};

use crate::error::{Error, Result};

/// The longest run root podman accepts (its sockets' paths must fit).
pub const RUNROOT_MAX: usize = 50;

/// Where a store is and which driver it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The graph root (`/var/lib/containers/storage`).
    pub graphroot: PathBuf,
    /// The run root (`/run/containers/storage`). We never write to it; podman needs it.
    pub runroot: PathBuf,
    /// The graph driver.
    pub driver: DriverKind,
    /// Whether to `syncfs` the graph root before a layer is marked complete (c/storage's
    /// `overlay.sync=filesystem`). Off by default, as in podman and skopeo: an interrupted process
    /// is always recovered; this also survives power loss, at the cost of waiting for the disk.
    pub sync_filesystem: bool,
}

/// One line when storage.conf, read as podman 6 reads it (the user's file, the `storage.conf.d`
/// drop-ins, `$CONTAINERS_STORAGE_CONF_OVERRIDE`), selects another store than podman 4.3 and 5
/// would open, in the settings no option replaced (`root`, `runroot`, `driver`: whether
/// `--root`, `--runroot`, `--storage-driver` were given); `None` when they agree, or when
/// storage.conf cannot be read (resolving the store reports that).
pub fn storage_conf_difference(root: bool, runroot: bool, driver: bool) -> Option<String> {
    let loaded = StorageConf::load_layered().ok()?;
    let used: Vec<&str> = [
        ("graphroot", root),
        ("runroot", runroot),
        ("driver", driver),
    ]
    .into_iter()
    .filter(|(_, given)| !given)
    .map(|(k, _)| k)
    .collect();
    loaded.difference(&used)
}

impl StoreConfig {
    /// The configuration podman would use: storage.conf (or `CONTAINERS_STORAGE_CONF`), then the given
    /// overrides, like podman's `--root`, `--runroot` and `--storage-driver`.
    pub fn resolve(
        root: Option<&Path>,
        runroot: Option<&Path>,
        driver: Option<&str>,
    ) -> Result<StoreConfig> {
        let (conf, _) = StorageConf::load()?;
        let driver_name = driver.map(str::to_owned).unwrap_or(conf.driver);
        let graphroot = root.map(Path::to_path_buf).unwrap_or(conf.graphroot);
        Ok(StoreConfig {
            driver: match driver {
                Some(_) => DriverKind::parse(&driver_name)?,
                None => detect_driver(&graphroot, &driver_name)?,
            },
            runroot: runroot.map(Path::to_path_buf).unwrap_or(conf.runroot),
            graphroot,
            sync_filesystem: false,
        })
    }
}

impl StoreConfig {
    /// The store a `containers-storage:[driver@root+runroot]` reference names; without one, the
    /// default store (storage.conf), as skopeo reads the transport.
    pub fn of_spec(spec: Option<&crate::reference::StoreSpec>) -> Result<StoreConfig> {
        match spec {
            Some(s) => StoreConfig::resolve(
                Some(&s.graphroot),
                s.runroot.as_deref(),
                s.driver.as_deref(),
            ),
            None => StoreConfig::resolve(None, None, None),
        }
    }
}

/// With no driver named anywhere, c/storage picks the driver whose directory already exists in the
/// graph root, else overlay.
fn detect_driver(graphroot: &Path, configured: &str) -> Result<DriverKind> {
    if !configured.is_empty() && configured != "overlay" {
        return DriverKind::parse(configured);
    }
    if !graphroot.join("overlay-layers").exists()
        && graphroot.join("vfs-layers").exists()
        && configured.is_empty()
    {
        return Ok(DriverKind::Vfs);
    }
    DriverKind::parse(configured)
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    driver: Driver,
    layers_lock: LockFile,
    images_lock: LockFile,
    write_mutex: std::sync::Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the store, and removes what an interrupted write left behind:
    /// layers flagged `incomplete` and our temporary files.
    pub fn open(config: StoreConfig) -> Result<Store> {
        mkdir_p(&config.graphroot, 0o700)?;
        let driver = Driver::new(config.driver, &config.graphroot);
        let name = config.driver.name();
        let layers_dir = config.graphroot.join(format!("{name}-layers"));
        let images_dir = config.graphroot.join(format!("{name}-images"));
        mkdir_p(&layers_dir, 0o700)?;
        mkdir_p(&images_dir, 0o700)?;
        driver.init()?;
        let layers_lock = LockFile::open(&layers_dir.join("layers.lock"))?;
        let images_lock = LockFile::open(&images_dir.join("images.lock"))?;
        let store = Store {
            config,
            driver,
            layers_lock,
            images_lock,
            write_mutex: std::sync::Mutex::new(()),
        };
        store.recover()?;
        tracing::debug!(graphroot = %store.config.graphroot.display(), driver = store.config.driver.name(), "store opened");
        Ok(store)
    }

    /// Opens an existing store only to read from it: nothing is created, nothing is recovered (an
    /// incomplete layer is simply not used), so the store is never changed.
    pub fn open_read_only(config: StoreConfig) -> Result<Store> {
        let name = config.driver.name();
        let layers_dir = config.graphroot.join(format!("{name}-layers"));
        let images_dir = config.graphroot.join(format!("{name}-images"));
        if !layers_dir.join("layers.lock").exists() || !images_dir.join("images.lock").exists() {
            let other = ["overlay", "vfs"]
                .into_iter()
                .find(|d| *d != name && config.graphroot.join(format!("{d}-layers")).exists());
            return Err(Error::Store(match other {
                Some(d) => format!(
                    "the store {} has no {name} layers but has {d} ones: use --storage-driver {d}",
                    config.graphroot.display()
                ),
                None => format!(
                    "there is no {name} store at {}: pull the image with podman first, or name the store with --root",
                    config.graphroot.display()
                ),
            }));
        }
        let driver = Driver::new(config.driver, &config.graphroot);
        let layers_lock = LockFile::open_read_only(&layers_dir.join("layers.lock"))?;
        let images_lock = LockFile::open_read_only(&images_dir.join("images.lock"))?;
        tracing::debug!(graphroot = %config.graphroot.display(), driver = name, "store opened read-only");
        Ok(Store {
            config,
            driver,
            layers_lock,
            images_lock,
            write_mutex: std::sync::Mutex::new(()),
        })
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The graph driver.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// `<graphroot>/<driver>-layers`.
    pub fn layers_dir(&self) -> PathBuf {
        self.config
            .graphroot
            .join(format!("{}-layers", self.config.driver.name()))
    }

    /// `<graphroot>/<driver>-images`.
    pub fn images_dir(&self) -> PathBuf {
        self.config
            .graphroot
            .join(format!("{}-images", self.config.driver.name()))
    }

    /// The lock of the layer store.
    pub(crate) fn layers_lock(&self) -> &LockFile {
        &self.layers_lock
    }

    /// The lock of the image store.
    pub(crate) fn images_lock(&self) -> &LockFile {
        &self.images_lock
    }

    /// Path of a layer's tar-split file.
    pub(crate) fn tar_split_path(&self, id: &str) -> PathBuf {
        self.layers_dir().join(format!("{id}.tar-split.gz"))
    }

    /// Reads layers.json (the caller holds the layers lock).
    pub(crate) fn read_layers(&self) -> Result<(RecordFile<LayerRecord>, Option<Vec<u8>>)> {
        records::read(&self.layers_dir().join("layers.json"))
    }

    /// Reads images.json (the caller holds the images lock).
    pub(crate) fn read_images(&self) -> Result<(RecordFile<ImageRecord>, Option<Vec<u8>>)> {
        records::read(&self.images_dir().join("images.json"))
    }

    /// Lists the images (takes the images lock for reading).
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let _g = self.images_lock.lock_read()?;
        let (file, _) = self.read_images()?;
        Ok(file.iter().cloned().collect())
    }

    /// Writes empty `layers.json` and `images.json` where they are missing, so the store is complete as a
    /// read-only additional image store.
    pub(crate) fn init_empty_records(&self) -> Result<()> {
        let _w = self.writer()?;
        let lg = self.layers_lock.lock_write()?;
        let p = self.layers_dir().join("layers.json");
        if !p.exists() {
            records::write_bytes(&p, Some(b"[]"), &lg)?;
        }
        let ig = self.images_lock.lock_write()?;
        let p = self.images_dir().join("images.json");
        if !p.exists() {
            records::write_bytes(&p, Some(b"[]"), &ig)?;
        }
        Ok(())
    }

    /// Serializes this process's writers: POSIX locks do not exclude threads of one process.
    pub(crate) fn writer(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.write_mutex
            .lock()
            .map_err(|_| Error::Internal("a writer panicked".into()))
    }

    /// Lists the layers (takes the layers lock for reading).
    pub fn layers(&self) -> Result<Vec<LayerRecord>> {
        let _g = self.layers_lock.lock_read()?;
        let (file, _) = self.read_layers()?;
        Ok(file.iter().cloned().collect())
    }

    fn recover(&self) -> Result<()> {
        let _w = self.writer()?;
        let guard = self.layers_lock.lock_write()?;
        let (mut layers, _) = self.read_layers()?;
        // A delete that was interrupted: finish it (its layers become incomplete ones).
        self.finish_interrupted_delete(&mut layers, &guard)?;
        let incomplete: Vec<String> = layers
            .iter()
            .filter(|l| l.is_incomplete())
            .map(|l| l.id.clone())
            .collect();
        for id in &incomplete {
            tracing::info!(layer = %id, "removing an incomplete layer (an interrupted write)");
            self.driver.remove(id)?;
            crate::fsutil::remove_all(&self.tar_split_path(id))
                .map_err(|e| Error::io("removing", self.tar_split_path(id), e))?;
            layers.remove(id);
        }
        if !incomplete.is_empty() {
            records::write(&self.layers_dir().join("layers.json"), &layers, &guard)?;
        }
        // Image directories without a record: a copy killed between its big data and images.json
        // (c/storage creates an image's record before its directory, under the images lock).
        self.remove_orphan_image_dirs()?;
        // Our own temporary files (tar-splits and JSON being written when we were interrupted).
        if let Ok(rd) = std::fs::read_dir(self.layers_dir()) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(atomic::TEMP_PREFIX)
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

impl Store {
    /// Removes `<images>/<id>` directories that images.json does not name (the caller holds the
    /// layers lock; this takes the images lock). Nothing is done without an images.json.
    fn remove_orphan_image_dirs(&self) -> Result<()> {
        let _g = self.images_lock.lock_write()?;
        let (images, original) = self.read_images()?;
        if original.is_none() {
            return Ok(());
        }
        let Ok(rd) = std::fs::read_dir(self.images_dir()) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if storage_format::is_valid_id(&name)
                && images.get(&name).is_none()
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                crate::fsutil::remove_all(&e.path())
                    .map_err(|err| Error::io("removing", e.path(), err))?;
            }
        }
        Ok(())
    }
}

fn mkdir_p(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("creating directory", path, e))
}
