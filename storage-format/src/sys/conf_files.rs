//! Loading `storage.conf` from the system: the file `$CONTAINERS_STORAGE_CONF` names, else the
//! usual paths (parsing it is [`crate::conf`]'s, pure).

use std::path::{Path, PathBuf};

use crate::conf::{CONF_ENV, StorageConf};
use crate::error::{Error, Result};

impl StorageConf {
    /// The files [`StorageConf::load`] looks at, in order: only
    /// `$CONTAINERS_STORAGE_CONF` if that variable is set; otherwise
    /// `/etc/containers/storage.conf` then `/usr/share/containers/storage.conf`.
    pub fn search_paths() -> Vec<PathBuf> {
        match std::env::var_os(CONF_ENV) {
            Some(p) => vec![PathBuf::from(p)],
            None => vec![
                PathBuf::from("/etc/containers/storage.conf"),
                PathBuf::from("/usr/share/containers/storage.conf"),
            ],
        }
    }

    /// Loads the first existing file of [`StorageConf::search_paths`] and
    /// returns it with its path, or the defaults and `None` if there is none.
    /// A `$CONTAINERS_STORAGE_CONF` that names a missing file is an error.
    pub fn load() -> Result<(StorageConf, Option<PathBuf>)> {
        let explicit = std::env::var_os(CONF_ENV).is_some();
        Self::load_from(&Self::search_paths(), explicit)
    }

    fn load_from(paths: &[PathBuf], must_exist: bool) -> Result<(StorageConf, Option<PathBuf>)> {
        for path in paths {
            if !must_exist && !path.exists() {
                continue;
            }
            let conf = Self::load_file(path)?;
            return Ok((conf, Some(path.clone())));
        }
        Ok((Self::defaults(), None))
    }

    fn load_file(path: &Path) -> Result<StorageConf> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::Toml(msg) => Error::Toml(format!("{}: {msg}", path.display())),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_from_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&b, "[storage]\ngraphroot = \"/g\"\n").unwrap();

        // The first existing file wins.
        let (conf, used) = StorageConf::load_from(&[a.clone(), b.clone()], false).unwrap();
        assert_eq!(used.as_deref(), Some(b.as_path()));
        assert_eq!(conf.graphroot, PathBuf::from("/g"));

        // None exists: defaults.
        let (conf, used) = StorageConf::load_from(std::slice::from_ref(&a), false).unwrap();
        assert_eq!((conf, used), (StorageConf::defaults(), None));

        // An explicit file that is missing is an error.
        assert!(matches!(
            StorageConf::load_from(std::slice::from_ref(&a), true),
            Err(Error::Io(_))
        ));

        // A bad file names itself.
        std::fs::write(&a, "[storage\n").unwrap();
        match StorageConf::load_from(&[a.clone(), b], false) {
            Err(Error::Toml(msg)) => assert!(msg.contains("a.conf"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
