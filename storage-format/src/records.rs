//! The records of `layers.json` and `images.json`, and the files that hold
//! them.
//!
//! [`RecordFile`] keeps the exact bytes of every record it is not asked to
//! modify, so a writer that adds one layer leaves all other records (other
//! tools' layers, containers' layers, fields of newer c/storage versions)
//! untouched byte for byte.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A record of a JSON record file: something with an ID.
pub trait Record: Serialize + DeserializeOwned {
    /// The record's ID (`"id"` key).
    fn id(&self) -> &str;
}

/// Reads `null` as the default value (Go writes and reads `null` for nil
/// slices and maps).
fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

const INCOMPLETE: &str = "incomplete";

/// One entry of `layers.json` (c/storage `Layer`).
///
/// Keys this struct does not know are kept in [`LayerRecord::extra`] and
/// written back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer ID (see [`crate::layer_id`]).
    pub id: String,
    /// Names of the layer, unique across layers.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// The parent layer's ID; `None` for a base layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Opaque metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// SELinux mount label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountlabel: Option<String>,
    /// Creation time, Go RFC 3339 with nanoseconds (see [`crate::rfc3339_nano`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Digest of the blob as received (compressed).
    #[serde(
        rename = "compressed-diff-digest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub compressed_diff_digest: Option<String>,
    /// Size of the blob as received.
    #[serde(
        rename = "compressed-size",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub compressed_size: Option<i64>,
    /// DiffID: digest of the uncompressed tar.
    #[serde(
        rename = "diff-digest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub diff_digest: Option<String>,
    /// Length of the uncompressed tar (`-1` = unknown).
    #[serde(rename = "diff-size", default, skip_serializing_if = "Option::is_none")]
    pub diff_size: Option<i64>,
    /// Compression of the blob as received: 0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<i32>,
    /// Sorted distinct UIDs of the layer's tar entries.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub uidset: Vec<u32>,
    /// Sorted distinct GIDs of the layer's tar entries.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gidset: Vec<u32>,
    /// Flags, e.g. `"incomplete": true` while the layer is being created.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub flags: Map<String, Value>,
    /// Every other key of the record, kept as it was read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LayerRecord {
    /// Whether `flags["incomplete"]` is `true` (a layer being created, or
    /// left over by a crash: readers treat it as absent).
    pub fn is_incomplete(&self) -> bool {
        matches!(self.flags.get(INCOMPLETE), Some(Value::Bool(true)))
    }

    /// Sets `flags["incomplete"] = true`, or removes the flag.
    pub fn set_incomplete(&mut self, yes: bool) {
        if yes {
            self.flags.insert(INCOMPLETE.to_owned(), Value::Bool(true));
        } else {
            self.flags.remove(INCOMPLETE);
        }
    }
}

impl Record for LayerRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// One entry of `images.json` (c/storage `Image`).
///
/// Keys this struct does not know are kept in [`ImageRecord::extra`] and
/// written back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID (see [`crate::image_id`]).
    pub id: String,
    /// The manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Full references naming the image, unique across images.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// Names the image has had, most recent first.
    #[serde(
        rename = "names-history",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names_history: Vec<String>,
    /// The top layer's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Opaque metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Big-data keys, in insertion order.
    #[serde(
        rename = "big-data-names",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub big_data_names: Vec<String>,
    /// Big-data key → size in bytes (JSON integers).
    #[serde(
        rename = "big-data-sizes",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub big_data_sizes: Map<String, Value>,
    /// Big-data key → digest string.
    #[serde(
        rename = "big-data-digests",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub big_data_digests: Map<String, Value>,
    /// Creation time, Go RFC 3339 with nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Flags.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub flags: Map<String, Value>,
    /// Every other key of the record, kept as it was read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageRecord {
    /// Records the big-data item `key`: appends it to `big_data_names` if it
    /// is new and sets its size and digest.
    pub fn set_big_data(&mut self, key: &str, size: i64, digest: &Digest) {
        if !self.big_data_names.iter().any(|n| n == key) {
            self.big_data_names.push(key.to_owned());
        }
        self.big_data_sizes
            .insert(key.to_owned(), Value::from(size));
        self.big_data_digests
            .insert(key.to_owned(), Value::from(digest.as_str()));
    }

    /// Adds `name`: appended to `names` if absent, and moved to the front of
    /// `names_history` (an older copy is removed), as c/storage does.
    pub fn add_name(&mut self, name: &str) {
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_owned());
        }
        self.names_history.retain(|n| n != name);
        self.names_history.insert(0, name.to_owned());
    }

    /// Removes `name` from `names`; `names_history` keeps it.
    pub fn remove_name(&mut self, name: &str) {
        self.names.retain(|n| n != name);
    }
}

impl Record for ImageRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug)]
struct Item<T> {
    /// The bytes read from the file; `None` once the record may have been
    /// changed (or for a new record), so that it is serialised again.
    raw: Option<Box<RawValue>>,
    value: T,
}

/// A whole `layers.json` / `images.json`: a JSON array of records.
///
/// Records that are never handed out mutably are written back byte for byte
/// (they are kept as raw JSON next to their parsed value).
#[derive(Debug)]
pub struct RecordFile<T: Record> {
    items: Vec<Item<T>>,
}

impl<T: Record> Default for RecordFile<T> {
    fn default() -> Self {
        RecordFile { items: Vec::new() }
    }
}

impl<T: Record> RecordFile<T> {
    /// Parses a record file. Empty or whitespace-only input (and `null`)
    /// means no records. A record that does not parse is
    /// [`Error::InvalidRecord`]; a file that is not a JSON array is
    /// [`Error::Json`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let raws: Option<Vec<Box<RawValue>>> = serde_json::from_slice(bytes)?;
        let mut items = Vec::new();
        for (i, raw) in raws.unwrap_or_default().into_iter().enumerate() {
            let value: T = serde_json::from_str(raw.get())
                .map_err(|e| Error::InvalidRecord(format!("record {i}: {e}")))?;
            items.push(Item {
                raw: Some(raw),
                value,
            });
        }
        Ok(RecordFile { items })
    }

    /// The compact JSON array: `"["` + records joined by `","` + `"]"`.
    /// Untouched records are their original bytes; modified and new ones are
    /// serialised again.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(
            2 + self
                .items
                .iter()
                .map(|i| i.raw.as_ref().map_or(512, |r| r.get().len() + 1))
                .sum::<usize>(),
        );
        out.push(b'[');
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            match &item.raw {
                Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
                None => serde_json::to_writer(&mut out, &item.value)?,
            }
        }
        out.push(b']');
        Ok(out)
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The records, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|i| &i.value)
    }

    /// The first record with ID `id`.
    pub fn get(&self, id: &str) -> Option<&T> {
        self.items
            .iter()
            .find(|i| i.value.id() == id)
            .map(|i| &i.value)
    }

    /// The first record with ID `id`, for changing it. The record is marked
    /// modified and will be serialised again by [`RecordFile::to_bytes`].
    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let item = self.items.iter_mut().find(|i| i.value.id() == id)?;
        item.raw = None;
        Some(&mut item.value)
    }

    /// Appends a new record.
    pub fn push(&mut self, record: T) {
        self.items.push(Item {
            raw: None,
            value: record,
        });
    }

    /// Removes and returns the first record with ID `id`.
    pub fn remove(&mut self, id: &str) -> Option<T> {
        let pos = self.items.iter().position(|i| i.value.id() == id)?;
        Some(self.items.remove(pos).value)
    }

    /// Keeps only the records for which `f` returns `true`.
    pub fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        self.items.retain(|i| f(&i.value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layers.json as c/storage writes it, with keys this crate does not
    /// know (`toc-digest`, `uidmap`, `big-data-names`, `future`) and odd but
    /// valid formatting inside records (escapes, key order, numbers).
    const LAYERS: &str = concat!(
        r#"[{"id":"aaaa","created":"2024-01-02T03:04:05.123456789Z","compressed-diff-digest":"sha256:1111","compressed-size":1234,"#,
        r#""diff-digest":"sha256:2222","diff-size":10240,"compression":2,"uidset":[0],"gidset":[0]},"#,
        r#"{"id":"bbbb","parent":"aaaa","names":["x\u003cy"],"toc-digest":"sha256:3333","uidmap":[{"container_id":0,"host_id":100000,"size":65536}],"#,
        r#""flags":{"incomplete":true,"expected-layer-diffid":"sha256:4444"},"big-data-names":["toc"],"future":{"a":[1,2.5e3,null]}},"#,
        r#"{"mountlabel":"system_u:object_r:container_file_t:s0","id":"cccc","parent":"bbbb","metadata":"{\"x\":1}","diff-size":-1}]"#
    );

    #[test]
    fn layers_round_trip_byte_exact() {
        let f = RecordFile::<LayerRecord>::parse(LAYERS.as_bytes()).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.to_bytes().unwrap(), LAYERS.as_bytes());

        let b = f.get("bbbb").unwrap();
        assert_eq!(b.parent.as_deref(), Some("aaaa"));
        assert_eq!(b.names, vec!["x<y".to_owned()]);
        assert!(b.is_incomplete());
        assert!(b.extra.contains_key("uidmap"));
        assert!(b.extra.contains_key("toc-digest"));
        let a = f.get("aaaa").unwrap();
        assert_eq!(a.compressed_size, Some(1234));
        assert_eq!(a.compression, Some(2));
        assert!(!a.is_incomplete());
        assert_eq!(f.get("cccc").unwrap().diff_size, Some(-1));
    }

    #[test]
    fn modify_one_keeps_others() {
        let mut f = RecordFile::<LayerRecord>::parse(LAYERS.as_bytes()).unwrap();
        f.get_mut("bbbb").unwrap().set_incomplete(false);
        let out = String::from_utf8(f.to_bytes().unwrap()).unwrap();

        // Records 0 and 2 are their original bytes.
        let parts: Vec<&str> = LAYERS[1..LAYERS.len() - 1].split(",{\"").collect();
        assert!(out.starts_with(&format!("[{},{{\"", parts[0])), "{out}");
        assert!(out.ends_with(&format!(",{{\"{}]", parts[2])), "{out}");

        // Record 1 is re-serialised; unknown keys survive, the flag is gone.
        let back = RecordFile::<LayerRecord>::parse(out.as_bytes()).unwrap();
        let b = back.get("bbbb").unwrap();
        assert!(!b.is_incomplete());
        assert_eq!(
            b.flags.get("expected-layer-diffid"),
            Some(&Value::from("sha256:4444"))
        );
        for key in ["toc-digest", "uidmap", "big-data-names", "future"] {
            assert!(b.extra.contains_key(key), "{key} lost: {out}");
        }
        assert_eq!(
            b.extra["future"],
            serde_json::json!({"a":[1, 2500.0, null]})
        );
        assert_eq!(back.to_bytes().unwrap(), out.as_bytes());
    }

    #[test]
    fn push_remove_retain() {
        let mut f = RecordFile::<LayerRecord>::parse(LAYERS.as_bytes()).unwrap();
        let mut rec = LayerRecord {
            id: "dddd".into(),
            parent: Some("cccc".into()),
            diff_size: Some(0),
            ..Default::default()
        };
        rec.set_incomplete(true);
        f.push(rec);
        assert_eq!(f.len(), 4);
        let out = String::from_utf8(f.to_bytes().unwrap()).unwrap();
        assert!(out.starts_with(&LAYERS[..LAYERS.len() - 1]), "{out}");
        assert!(
            out.ends_with(
                r#",{"id":"dddd","parent":"cccc","diff-size":0,"flags":{"incomplete":true}}]"#
            ),
            "{out}"
        );

        assert_eq!(f.remove("bbbb").unwrap().id, "bbbb");
        assert!(f.remove("bbbb").is_none());
        f.retain(|l| l.id != "dddd");
        let ids: Vec<&str> = f.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["aaaa", "cccc"]);
    }

    #[test]
    fn empty_inputs() {
        for input in ["", " \n\t", "[]", "null", " [ ] \n"] {
            let f = RecordFile::<ImageRecord>::parse(input.as_bytes()).unwrap();
            assert!(f.is_empty(), "{input:?}");
            assert_eq!(f.to_bytes().unwrap(), b"[]");
        }
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(
            RecordFile::<LayerRecord>::parse(b"{}"),
            Err(Error::Json(_))
        ));
        assert!(matches!(
            RecordFile::<LayerRecord>::parse(b"[{\"id\":\"a\"},"),
            Err(Error::Json(_))
        ));
        assert!(matches!(
            RecordFile::<LayerRecord>::parse(b"[{\"id\":\"a\"},{\"names\":[]}]"),
            Err(Error::InvalidRecord(_))
        ));
        assert!(matches!(
            RecordFile::<LayerRecord>::parse(b"[{\"id\":\"a\",\"diff-size\":\"x\"}]"),
            Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn go_nulls_are_empty() {
        let input =
            br#"[{"id":"a","names":null,"flags":null,"uidset":null,"big-data-sizes":null}]"#;
        let l = RecordFile::<LayerRecord>::parse(input).unwrap();
        assert!(l.get("a").unwrap().names.is_empty());
        let i = RecordFile::<ImageRecord>::parse(input).unwrap();
        assert!(i.get("a").unwrap().big_data_sizes.is_empty());
        assert_eq!(l.to_bytes().unwrap(), input);
    }

    const IMAGES: &str = concat!(
        r#"[{"id":"315d","digest":"sha256:d99e","names":["localhost/test:latest"],"names-history":["localhost/test:latest"],"#,
        r#""layer":"1195","metadata":"{\"signatures-sizes\":{\"sha256:d99e\":[]}}","big-data-names":["sha256:315d","manifest"],"#,
        r#""big-data-sizes":{"sha256:315d":100,"manifest":200},"big-data-digests":{"sha256:315d":"sha256:315d","manifest":"sha256:d99e"},"#,
        r#""created":"2024-01-02T03:04:05Z","mapped-layers":["zzzz"]},"#,
        r#"{"id":"other","names":["localhost/other:1"]}]"#
    );

    #[test]
    fn images_round_trip_and_edit() {
        let mut f = RecordFile::<ImageRecord>::parse(IMAGES.as_bytes()).unwrap();
        assert_eq!(f.to_bytes().unwrap(), IMAGES.as_bytes());
        let img = f.get("315d").unwrap();
        assert_eq!(img.big_data_names, ["sha256:315d", "manifest"]);
        assert_eq!(img.big_data_sizes["manifest"], Value::from(200));
        assert!(img.extra.contains_key("mapped-layers"));

        let img = f.get_mut("315d").unwrap();
        let d = Digest::of_bytes(b"sig");
        img.set_big_data("signature-d99e", 0, &d);
        img.set_big_data("manifest", 201, &d);
        assert_eq!(
            img.big_data_names,
            ["sha256:315d", "manifest", "signature-d99e"]
        );
        assert_eq!(img.big_data_sizes["manifest"], Value::from(201));
        assert_eq!(
            img.big_data_digests["signature-d99e"],
            Value::from(d.as_str())
        );
        // Map order is insertion order (what c/storage readers do not care
        // about, but it keeps diffs small).
        let keys: Vec<&String> = img.big_data_sizes.keys().collect();
        assert_eq!(keys, ["sha256:315d", "manifest", "signature-d99e"]);

        let out = String::from_utf8(f.to_bytes().unwrap()).unwrap();
        assert!(
            out.ends_with(r#",{"id":"other","names":["localhost/other:1"]}]"#),
            "{out}"
        );
        assert!(out.contains(r#""mapped-layers":["zzzz"]"#), "{out}");
    }

    #[test]
    fn names_and_history() {
        // (operations, names, names-history); "+x" adds, "-x" removes.
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&["+a"], &["a"], &["a"]),
            (&["+a", "+b"], &["a", "b"], &["b", "a"]),
            (&["+a", "+b", "+a"], &["a", "b"], &["a", "b"]),
            (&["+a", "+b", "-a"], &["b"], &["b", "a"]),
            (&["+a", "-a", "+a"], &["a"], &["a"]),
            (&["-x"], &[], &[]),
        ];
        for (ops, names, history) in cases {
            let mut img = ImageRecord::default();
            for op in *ops {
                let (kind, name) = op.split_at(1);
                if kind == "+" {
                    img.add_name(name);
                } else {
                    img.remove_name(name);
                }
            }
            assert_eq!(img.names, *names, "{ops:?}");
            assert_eq!(img.names_history, *history, "{ops:?}");
        }
    }

    #[test]
    fn new_image_serialises_compactly() {
        let mut img = ImageRecord {
            id: "abc".into(),
            ..Default::default()
        };
        img.add_name("localhost/x:latest");
        let mut f = RecordFile::<ImageRecord>::parse(b"").unwrap();
        f.push(img);
        assert_eq!(
            String::from_utf8(f.to_bytes().unwrap()).unwrap(),
            r#"[{"id":"abc","names":["localhost/x:latest"],"names-history":["localhost/x:latest"]}]"#
        );
    }
}
