//! The image upstream's export writes for a host image copied into containers-storage: manifest and
//! config cloned, layers replaced (uncompressed, as for a containers-storage destination), DiffIDs
//! set (not appended), one history entry per layer.

use serde_json::{Value, json};
use storage_format::Digest;

use super::plan::{LayerSplit, Plan};
use crate::error::{Error, Result};
use crate::store::image_input::{ImageInput, LayerInput};

/// The annotation of component layers.
const CONTENT_ANNOTATION: &str = "ostree.components";

/// The exported image, and the parts its manifest is rebuilt from once the layers' lengths are
/// known.
#[derive(Debug)]
pub(crate) struct Exported {
    /// What to import.
    pub input: ImageInput,
    /// The manifest without its layers.
    pub manifest_base: Value,
    /// The layer descriptors (sizes set by [`set_manifest`]).
    pub layer_descs: Vec<Value>,
}

/// The layer descriptors and history entries of the export.
fn layer_descriptors(
    plan: &[Plan],
    layers: &[LayerInput],
    split: &LayerSplit,
    stored_layers: &[Value],
    old_history: &[Value],
) -> (Vec<Value>, Vec<Value>) {
    let created = now_secs();
    let mut descs = Vec::new();
    let mut history = Vec::new();
    for (i, (p, l)) in plan.iter().zip(layers).enumerate() {
        let mut desc = json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": l.diff_id.to_string(),
            "size": l.blob_size,
        });
        let description = match p {
            Plan::Final(_) => String::new(),
            Plan::Chunk(_) => {
                desc["annotations"] = json!({ CONTENT_ANNOTATION: "" });
                String::new()
            }
            Plan::Derived(_) => {
                // Upstream copies annotations and history comments by the derived layer's own index.
                let k = i - (1 + split.components.len());
                if let Some(a) = stored_layers.get(k).and_then(|l| l.get("annotations")) {
                    desc["annotations"] = a.clone();
                }
                old_history
                    .get(k)
                    .and_then(|h| h["comment"].as_str())
                    .unwrap_or_default()
                    .to_string()
            }
        };
        descs.push(desc);
        history.push(json!({ "created": created, "created_by": description }));
    }
    (descs, history)
}

/// The exported image of a stored one (`manifest`, `config`), with `layers` written as `plan` says.
pub(crate) fn exported_image(
    manifest: &Value,
    mut config: Value,
    plan: &[Plan],
    split: &LayerSplit,
    layers: Vec<LayerInput>,
    names: Vec<String>,
) -> Result<Exported> {
    let stored_layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let old_history = config["history"].as_array().cloned().unwrap_or_default();
    let (layer_descs, history) =
        layer_descriptors(plan, &layers, split, &stored_layers, &old_history);
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
    });
    config["history"] = Value::Array(history);
    let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
    let config_digest = Digest::of_bytes(&config_bytes);
    let mut manifest_base = manifest.clone();
    manifest_base["config"] = json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": config_digest.to_string(),
        "size": config_bytes.len(),
    });
    if manifest_base.get("mediaType").is_none() {
        manifest_base["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
    }
    let mut input = ImageInput {
        manifest_digest: Digest::of_bytes(b""),
        manifest: Vec::new(),
        config: config_bytes,
        config_digest,
        created: config["created"].as_str().map(str::to_owned),
        layers,
        names,
    };
    set_manifest(&mut input, &manifest_base, &layer_descs)?;
    Ok(Exported {
        input,
        manifest_base,
        layer_descs,
    })
}

/// Sets the manifest of `input` from `base` and `descs` with the layer sizes of `input`.
pub(crate) fn set_manifest(input: &mut ImageInput, base: &Value, descs: &[Value]) -> Result<()> {
    let mut manifest = base.clone();
    manifest["layers"] = Value::Array(
        descs
            .iter()
            .zip(&input.layers)
            .map(|(d, l)| {
                let mut d = d.clone();
                d["size"] = json!(l.blob_size);
                d
            })
            .collect(),
    );
    input.manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    input.manifest_digest = Digest::of_bytes(&input.manifest);
    Ok(())
}

fn now_secs() -> String {
    let t = storage_format::now_rfc3339_nano();
    // RFC 3339 with whole seconds, as ocidir writes history.
    match t.split_once('.') {
        Some((s, _)) => format!("{s}Z"),
        None => t,
    }
}
