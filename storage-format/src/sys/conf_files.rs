//! Loading `storage.conf` from the system as podman 6 does (container-libs' config loader,
//! containers-storage.conf(5)): the file `$CONTAINERS_STORAGE_CONF` names, or else one main file
//! (the user's, then `/etc`'s, then `/usr/share`'s: the first that exists) and the drop-ins of
//! the `storage.conf.d` directories over it; `$CONTAINERS_STORAGE_CONF_OVERRIDE` last. Beside it,
//! what podman 4.3 and 5 read (the one file, with no drop-ins and no user file for root), so a
//! caller can say when the two differ. Parsing and merging are [`crate::conf`]'s, pure.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::conf::{CONF_ENV, StorageConf, merge_tables, toml_table};
use crate::error::{Error, Result};

/// The variable naming a file applied after all the others (podman 6).
const OVERRIDE_ENV: &str = "CONTAINERS_STORAGE_CONF_OVERRIDE";

/// Where the lookup looks: the system's two directories, the user's, the user ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfDirs {
    /// The vendor's directory (`/usr/share/containers`).
    pub vendor: PathBuf,
    /// The administrator's (`/etc/containers`).
    pub admin: PathBuf,
    /// The user's (`$XDG_CONFIG_HOME/containers`, else `$HOME/.config/containers`), for root
    /// too, as podman 6 looks there; `None` without either variable.
    pub user: Option<PathBuf>,
    /// The user ID (root's drop-ins are `storage.rootful.conf.d`, others'
    /// `storage.rootless.conf.d` and `storage.rootless.conf.d/<uid>`).
    pub uid: u32,
}

impl ConfDirs {
    /// The directories of this system and process.
    pub fn of_system() -> ConfDirs {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let user = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
            .filter(|p| p.is_absolute())
            .map(|p| p.join("containers"));
        ConfDirs {
            vendor: PathBuf::from("/usr/share/containers"),
            admin: PathBuf::from("/etc/containers"),
            user,
            uid: rustix::process::getuid().as_raw(),
        }
    }

    /// The main files, in precedence order (the first that exists is the one read).
    pub fn main_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.user.iter().map(|u| u.join("storage.conf")).collect();
        v.push(self.admin.join("storage.conf"));
        v.push(self.vendor.join("storage.conf"));
        v
    }

    /// The drop-in directories, in the order they are read: the vendor's, then the
    /// administrator's (each: `storage.conf.d`, then the rootful or rootless ones), then the
    /// user's `storage.conf.d`.
    pub fn drop_in_dirs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for base in [&self.vendor, &self.admin] {
            v.push(base.join("storage.conf.d"));
            if self.uid == 0 {
                v.push(base.join("storage.rootful.conf.d"));
            } else {
                let rootless = base.join("storage.rootless.conf.d");
                v.push(rootless.join(self.uid.to_string()));
                v.insert(v.len() - 1, rootless);
            }
        }
        if let Some(u) = &self.user {
            v.push(u.join("storage.conf.d"));
        }
        v
    }

    /// The drop-ins to apply, in order: regular files named `*.conf` of the
    /// [`drop_in_dirs`](Self::drop_in_dirs), one per file name (a later directory's file replaces
    /// an earlier one of the same name), sorted by file name.
    pub fn drop_ins(&self) -> Result<Vec<PathBuf>> {
        let mut by_name: BTreeMap<OsString, PathBuf> = BTreeMap::new();
        for dir in self.drop_in_dirs() {
            // A directory that is not there, or that this user may not read (a user's `$HOME`
            // it cannot enter), holds nothing for it: as a main file that cannot be seen.
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(read_error(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| read_error(&dir, e))?;
                let name = entry.file_name();
                let regular = entry.file_type().is_ok_and(|t| t.is_file());
                if regular && name.as_encoded_bytes().ends_with(b".conf") {
                    by_name.insert(name, entry.path());
                }
            }
        }
        Ok(by_name.into_values().collect())
    }
}

/// The storage.conf settings found, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConf {
    /// The settings (podman 6's lookup).
    pub conf: StorageConf,
    /// The files applied, in order.
    pub files: Vec<PathBuf>,
    /// What podman 4.3 and 5 read: the one file (`$CONTAINERS_STORAGE_CONF`, else `/etc`'s, else
    /// `/usr/share`'s), and its settings.
    pub legacy: (Option<PathBuf>, StorageConf),
}

impl LoadedConf {
    /// One line saying how the store differs from the one podman 4.3 and 5 would open, in the
    /// settings `used` (`"graphroot"`, `"runroot"`, `"driver"`: those no command-line option
    /// replaced); `None` when it does not.
    pub fn difference(&self, used: &[&str]) -> Option<String> {
        let (file, old) = &self.legacy;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for key in used {
            let (a, b) = match *key {
                "graphroot" => (self.conf.graphroot.display(), old.graphroot.display()),
                "runroot" => (self.conf.runroot.display(), old.runroot.display()),
                "driver" => {
                    if self.conf.driver != old.driver {
                        ours.push(format!("driver {}", self.conf.driver));
                        theirs.push(format!("driver {}", old.driver));
                    }
                    continue;
                }
                _ => continue,
            };
            if a.to_string() != b.to_string() {
                ours.push(format!("{key} {a}"));
                theirs.push(format!("{key} {b}"));
            }
        }
        if ours.is_empty() {
            return None;
        }
        let extra: Vec<String> = self
            .files
            .iter()
            .filter(|f| Some(*f) != file.as_ref())
            .map(|f| f.display().to_string())
            .collect();
        Some(format!(
            "storage.conf: {} set {} (podman 4.3 and 5 read {} and use {})",
            if extra.is_empty() {
                "the files podman 6 reads".to_owned()
            } else {
                extra.join(", ")
            },
            ours.join(", "),
            file.as_ref()
                .map_or("no storage.conf".to_owned(), |f| f.display().to_string()),
            theirs.join(", ")
        ))
    }
}

impl StorageConf {
    /// Loads the settings as podman 6 does (see the module documentation) and returns them with
    /// the main file read, if any. A `$CONTAINERS_STORAGE_CONF` or
    /// `$CONTAINERS_STORAGE_CONF_OVERRIDE` that names a missing file is an error.
    pub fn load() -> Result<(StorageConf, Option<PathBuf>)> {
        let l = Self::load_layered()?;
        let main = l.files.first().cloned();
        Ok((l.conf, main))
    }

    /// [`load`](Self::load), with every file applied and what podman 4.3 and 5 would read.
    pub fn load_layered() -> Result<LoadedConf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        load_with(&ConfDirs::of_system(), env(CONF_ENV), env(OVERRIDE_ENV))
    }
}

/// The lookup in `dirs`, with the files the two variables name.
pub fn load_with(
    dirs: &ConfDirs,
    explicit: Option<PathBuf>,
    last: Option<PathBuf>,
) -> Result<LoadedConf> {
    let mut files = Vec::new();
    match &explicit {
        Some(p) => files.push(p.clone()),
        None => {
            if let Some(main) = dirs.main_files().into_iter().find(|p| p.exists()) {
                files.push(main);
            }
            files.extend(dirs.drop_ins()?);
        }
    }
    files.extend(last);
    let mut table = toml::Table::new();
    for f in &files {
        merge_tables(&mut table, read_table(f)?);
    }
    let conf = StorageConf::from_table(table).map_err(|e| match e {
        Error::Toml(msg) => Error::Toml(format!("{}: {msg}", shown(&files))),
        other => other,
    })?;
    let legacy_file = explicit.or_else(|| {
        [&dirs.admin, &dirs.vendor]
            .into_iter()
            .map(|d| d.join("storage.conf"))
            .find(|p| p.exists())
    });
    let legacy = match &legacy_file {
        Some(f) => StorageConf::from_table(read_table(f)?)?,
        None => StorageConf::defaults(),
    };
    Ok(LoadedConf {
        conf,
        files,
        legacy: (legacy_file, legacy),
    })
}

fn shown(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("reading {}: {e}", path.display()),
    ))
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
    toml_table(&text).map_err(|e| match e {
        Error::Toml(msg) => Error::Toml(format!("{}: {msg}", path.display())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn dirs(root: &Path, uid: u32) -> ConfDirs {
        ConfDirs {
            vendor: root.join("usr/share/containers"),
            admin: root.join("etc/containers"),
            user: Some(root.join("home/.config/containers")),
            uid,
        }
    }

    fn graphroot(text: &str) -> String {
        format!("[storage]\ngraphroot = \"{text}\"\n")
    }

    #[test]
    fn precedence_of_main_files() {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(t.path(), 0);
        // None: the defaults.
        let l = load_with(&d, None, None).unwrap();
        assert_eq!(l.conf, StorageConf::defaults());
        assert!(l.files.is_empty());
        // Each level hides the ones below it.
        write(&d.vendor.join("storage.conf"), &graphroot("/vendor"));
        assert_eq!(
            load_with(&d, None, None).unwrap().conf.graphroot,
            PathBuf::from("/vendor")
        );
        write(&d.admin.join("storage.conf"), &graphroot("/admin"));
        assert_eq!(
            load_with(&d, None, None).unwrap().conf.graphroot,
            PathBuf::from("/admin")
        );
        write(
            &d.user.as_ref().unwrap().join("storage.conf"),
            "[storage]\nrunroot = \"/user-run\"\n",
        );
        let l = load_with(&d, None, None).unwrap();
        // Only one main file is read: the user's, without the admin's graphroot.
        assert_eq!(l.conf.runroot, PathBuf::from("/user-run"));
        assert_eq!(l.conf.graphroot, StorageConf::defaults().graphroot);
        // podman 4.3 and 5 read the admin's file.
        assert_eq!(l.legacy.1.graphroot, PathBuf::from("/admin"));
        let line = l.difference(&["graphroot", "runroot", "driver"]).unwrap();
        assert!(
            line.contains("home/.config/containers/storage.conf"),
            "{line}"
        );
        assert!(
            line.contains("graphroot /var/lib/containers/storage"),
            "{line}"
        );
        assert!(line.contains("use graphroot /admin"), "{line}");
        assert_eq!(l.difference(&["driver"]), None, "the same driver");
    }

    #[test]
    fn drop_ins_in_order() {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(t.path(), 0);
        let files = [
            (
                &d.admin,
                "storage.conf",
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"/main\"\n".to_owned(),
            ),
            (&d.vendor, "storage.conf.d/10-a.conf", graphroot("/v10")),
            (
                &d.vendor,
                "storage.conf.d/20-b.conf",
                "[storage]\nrunroot = \"/v20-run\"\n".to_owned(),
            ),
            (&d.admin, "storage.conf.d/10-a.conf", graphroot("/a10")),
            (
                &d.admin,
                "storage.rootful.conf.d/15-r.conf",
                "[storage.options]\nadditionalimagestores = [\"/ais\"]\n".to_owned(),
            ),
            (
                &d.admin,
                "storage.rootless.conf.d/90-x.conf",
                graphroot("/rootless"),
            ),
            (&d.admin, "storage.conf.d/30-ignored.txt", graphroot("/txt")),
        ];
        for (dir, name, text) in &files {
            write(&dir.join(name), text);
        }
        let l = load_with(&d, None, None).unwrap();
        // The admin's 10-a replaces the vendor's; 15-r (rootful) and 20-b apply; names sort.
        assert_eq!(l.conf.graphroot, PathBuf::from("/a10"));
        assert_eq!(l.conf.runroot, PathBuf::from("/v20-run"));
        assert_eq!(l.conf.additional_image_stores, vec![PathBuf::from("/ais")]);
        assert_eq!(l.conf.driver, "overlay");
        let names: Vec<_> = l
            .files
            .iter()
            .map(|f| f.strip_prefix(t.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            vec![
                PathBuf::from("etc/containers/storage.conf"),
                PathBuf::from("etc/containers/storage.conf.d/10-a.conf"),
                PathBuf::from("etc/containers/storage.rootful.conf.d/15-r.conf"),
                PathBuf::from("usr/share/containers/storage.conf.d/20-b.conf"),
            ]
        );
        // The user's drop-in comes last for the same name; a rootless user gets the rootless ones.
        write(
            &d.user.as_ref().unwrap().join("storage.conf.d/10-a.conf"),
            &graphroot("/u10"),
        );
        assert_eq!(
            load_with(&d, None, None).unwrap().conf.graphroot,
            PathBuf::from("/u10")
        );
        let rootless = dirs(t.path(), 1000);
        write(
            &rootless
                .admin
                .join("storage.rootless.conf.d/1000/95-me.conf"),
            &graphroot("/me"),
        );
        assert_eq!(
            load_with(&rootless, None, None).unwrap().conf.graphroot,
            PathBuf::from("/me")
        );
        // What podman 4.3 and 5 open differs: one line says how.
        let line = load_with(&d, None, None)
            .unwrap()
            .difference(&["graphroot"])
            .unwrap();
        assert!(
            line.contains("10-a.conf") && line.contains("/u10") && line.contains("/main"),
            "{line}"
        );
    }

    #[test]
    fn variables() {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(t.path(), 0);
        write(&d.admin.join("storage.conf"), &graphroot("/admin"));
        write(
            &d.admin.join("storage.conf.d/10-a.conf"),
            &graphroot("/drop"),
        );
        let only = t.path().join("only.conf");
        write(&only, "[storage]\nrunroot = \"/only-run\"\n");
        let last = t.path().join("last.conf");
        write(&last, &graphroot("/last"));
        // $CONTAINERS_STORAGE_CONF: that file alone (no main file, no drop-ins) — for podman
        // 4.3 and 5 too.
        let l = load_with(&d, Some(only.clone()), None).unwrap();
        assert_eq!(l.files, vec![only.clone()]);
        assert_eq!(l.conf.graphroot, StorageConf::defaults().graphroot);
        assert_eq!(l.difference(&["graphroot", "runroot"]), None);
        // The override comes last, whatever else is read.
        let l = load_with(&d, Some(only.clone()), Some(last.clone())).unwrap();
        assert_eq!(l.conf.graphroot, PathBuf::from("/last"));
        assert_eq!(l.conf.runroot, PathBuf::from("/only-run"));
        let l = load_with(&d, None, Some(last)).unwrap();
        assert_eq!(l.conf.graphroot, PathBuf::from("/last"));
        // A named file that is missing is an error; a bad file names itself.
        assert!(matches!(
            load_with(&d, Some(t.path().join("nope")), None),
            Err(Error::Io(_))
        ));
        write(&d.admin.join("storage.conf.d/20-bad.conf"), "[storage\n");
        match load_with(&d, None, None) {
            Err(Error::Toml(msg)) => assert!(msg.contains("20-bad.conf"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
