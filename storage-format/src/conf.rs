//! `storage.conf`: the few settings that locate a store.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The environment variable naming the one `storage.conf` to use.
pub(crate) const CONF_ENV: &str = "CONTAINERS_STORAGE_CONF";
const DEFAULT_DRIVER: &str = "overlay";
const DEFAULT_GRAPHROOT: &str = "/var/lib/containers/storage";
const DEFAULT_RUNROOT: &str = "/run/containers/storage";

/// The settings of `storage.conf` that say where a store is and how it is
/// laid out. Every other key of the file is ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConf {
    /// Graph driver name (`[storage] driver`), `"overlay"` if unset or empty.
    pub driver: String,
    /// Store root (`[storage] graphroot`).
    pub graphroot: PathBuf,
    /// Runtime state root (`[storage] runroot`).
    pub runroot: PathBuf,
    /// Read-only additional image stores
    /// (`[storage.options] additionalimagestores`).
    pub additional_image_stores: Vec<PathBuf>,
    /// FUSE overlay program (`[storage.options.overlay] mount_program`).
    pub mount_program: Option<String>,
}

#[derive(Deserialize, Default)]
struct FileConf {
    #[serde(default)]
    storage: StorageTable,
}

#[derive(Deserialize, Default)]
struct StorageTable {
    driver: Option<String>,
    graphroot: Option<String>,
    runroot: Option<String>,
    #[serde(default)]
    options: OptionsTable,
}

#[derive(Deserialize, Default)]
struct OptionsTable {
    additionalimagestores: Option<Vec<String>>,
    /// Older spelling, directly under `[storage.options]`.
    mount_program: Option<String>,
    #[serde(default)]
    overlay: OverlayTable,
}

#[derive(Deserialize, Default)]
struct OverlayTable {
    mount_program: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl StorageConf {
    /// The settings used when no `storage.conf` says otherwise: driver
    /// `overlay`, graphroot `/var/lib/containers/storage`, runroot
    /// `/run/containers/storage`, no additional stores or mount program.
    pub fn defaults() -> StorageConf {
        StorageConf {
            driver: DEFAULT_DRIVER.to_owned(),
            graphroot: PathBuf::from(DEFAULT_GRAPHROOT),
            runroot: PathBuf::from(DEFAULT_RUNROOT),
            additional_image_stores: Vec::new(),
            mount_program: None,
        }
    }

    /// Parses the text of a `storage.conf`. Missing or empty keys take the
    /// [`StorageConf::defaults`]; unknown keys are ignored; invalid TOML or a
    /// known key of the wrong type is [`Error::Toml`].
    pub fn parse(text: &str) -> Result<StorageConf> {
        Self::from_table(toml_table(text)?)
    }

    /// The settings of a TOML table (one file's, or several merged with [`merge_tables`]), as
    /// [`StorageConf::parse`] takes them; an array's `{append = true}` marker is dropped.
    pub fn from_table(mut table: toml::Table) -> Result<StorageConf> {
        strip_append_markers(&mut table);
        let file: FileConf = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Toml(e.to_string()))?;
        let s = file.storage;
        let d = StorageConf::defaults();
        Ok(StorageConf {
            driver: non_empty(s.driver).unwrap_or(d.driver),
            graphroot: non_empty(s.graphroot).map_or(d.graphroot, PathBuf::from),
            runroot: non_empty(s.runroot).map_or(d.runroot, PathBuf::from),
            additional_image_stores: s
                .options
                .additionalimagestores
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            mount_program: non_empty(s.options.overlay.mount_program)
                .or_else(|| non_empty(s.options.mount_program)),
        })
    }
}

/// The TOML table of a `storage.conf`'s text; invalid TOML is [`Error::Toml`].
pub fn toml_table(text: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .map_err(|e| Error::Toml(e.to_string()))
}

/// Whether `array` ends with the `{append = true}` marker of c/storage's config files
/// (`additionalimagestores = ["/x", {append = true}]`: added to the earlier files' list).
fn appends(array: &[toml::Value]) -> bool {
    array.last().is_some_and(|v| {
        v.as_table()
            .is_some_and(|t| t.len() == 1 && t.get("append") == Some(&toml::Value::Boolean(true)))
    })
}

/// Applies a later file's `from` over `into`, as c/storage's config loader decodes file after
/// file into one value: a key `from` sets replaces the earlier value, tables are merged key by
/// key, an array replaces the earlier one unless it ends with `{append = true}` (then its
/// elements are added to it); keys `from` leaves out keep their values.
pub fn merge_tables(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_tables(a, b),
            (Some(toml::Value::Array(a)), toml::Value::Array(mut b)) if appends(&b) => {
                b.pop();
                if appends(a) {
                    a.pop();
                }
                a.extend(b);
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Drops the `{append = true}` markers left in `table`'s arrays.
fn strip_append_markers(table: &mut toml::Table) {
    for (_, value) in table.iter_mut() {
        match value {
            toml::Value::Table(t) => strip_append_markers(t),
            toml::Value::Array(a) if appends(a) => {
                a.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let d = StorageConf::defaults();
        let cases: Vec<(&str, StorageConf)> = vec![
            ("", d.clone()),
            ("[storage]\n", d.clone()),
            ("[storage]\ndriver = \"\"\n", d.clone()),
            (
                r#"
# A Fedora-like file.
[storage]
driver = "overlay"
runroot = "/run/x"
graphroot = "/var/x"
rootless_storage_path = "$HOME/.local/share/containers/storage"
transient_store = false

[storage.options]
additionalimagestores = [ "/usr/lib/containers/storage", "/ais2" ]
pull_options = {enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}

[storage.options.overlay]
mountopt = "nodev,metacopy=on"
mount_program = "/usr/bin/fuse-overlayfs"

[storage.options.thinpool]
autoextend_percent = "20"
"#,
                StorageConf {
                    driver: "overlay".into(),
                    graphroot: "/var/x".into(),
                    runroot: "/run/x".into(),
                    additional_image_stores: vec![
                        "/usr/lib/containers/storage".into(),
                        "/ais2".into(),
                    ],
                    mount_program: Some("/usr/bin/fuse-overlayfs".into()),
                },
            ),
            (
                "[storage]\ndriver = \"vfs\"\n[storage.options]\nmount_program = \"/bin/fo\"\n",
                StorageConf {
                    driver: "vfs".into(),
                    mount_program: Some("/bin/fo".into()),
                    ..d.clone()
                },
            ),
            (
                "[storage.options.overlay]\nmount_program = \"\"\n[other]\nx = 1\n",
                d.clone(),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(StorageConf::parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn merged_files() {
        let mut t = toml_table(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"/a\"\n[storage.options]\nadditionalimagestores = [\"/s1\"]\n",
        )
        .unwrap();
        merge_tables(
            &mut t,
            toml_table("[storage]\ngraphroot = \"/b\"\n[storage.options]\nadditionalimagestores = [\"/s2\", {append = true}]\n").unwrap(),
        );
        let c = StorageConf::from_table(t.clone()).unwrap();
        assert_eq!(c.graphroot, PathBuf::from("/b"));
        assert_eq!(c.driver, "overlay", "a key the later file leaves out stays");
        assert_eq!(
            c.additional_image_stores,
            vec![PathBuf::from("/s1"), PathBuf::from("/s2")]
        );
        merge_tables(
            &mut t,
            toml_table("[storage.options]\nadditionalimagestores = [\"/s3\"]\n").unwrap(),
        );
        let c = StorageConf::from_table(t).unwrap();
        assert_eq!(
            c.additional_image_stores,
            vec![PathBuf::from("/s3")],
            "replaced"
        );
        // A first file's own marker is dropped.
        let c = StorageConf::parse(
            "[storage.options]\nadditionalimagestores = [\"/x\", {append = true}]\n",
        )
        .unwrap();
        assert_eq!(c.additional_image_stores, vec![PathBuf::from("/x")]);
    }

    #[test]
    fn parse_errors() {
        for text in [
            "[storage\n",
            "[storage]\ngraphroot = 5\n",
            "[storage.options]\nadditionalimagestores = \"/x\"\n",
        ] {
            assert!(
                matches!(StorageConf::parse(text), Err(Error::Toml(_))),
                "{text}"
            );
        }
    }
}
