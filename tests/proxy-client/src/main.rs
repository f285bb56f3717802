//! `proxy-client`: the image proxy driven by containers-image-proxy 0.11.0 (stock bootc 1.16.9's
//! version) with bootc's call sequences, for bootc-image's tests.
//!
//! ```text
//! proxy-client SEQUENCE IMAGE PROGRAM [ARG…]
//! ```
//!
//! `PROGRAM ARG… experimental-image-proxy …` is spawned as the crate spawns skopeo (the socket
//! on fd 0). SEQUENCE:
//! - `ostree-ext`: Initialize, OpenImage, GetManifest, GetFullConfig, GetLayerInfoPiped, GetBlob
//!   of each layer in turn (by DiffID for `containers-storage:`), CloseImage, Shutdown;
//! - `composefs`: the same with every GetBlob in flight at once;
//! - `resolve`: Initialize, OpenImage, GetManifest, then the socket dropped (bound images).
//!
//! Prints one JSON object: the manifest digest, each layer's digest and the SHA-256 and length of
//! what arrived. Exits 1 with the error otherwise.

use std::process::Command;

use anyhow::{Context, Result, bail};
use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

/// Reads a blob through the proxy: its SHA-256 and length.
async fn blob(
    proxy: &ImageProxy,
    img: &OpenedImage,
    digest: &containers_image_proxy::oci_spec::image::Digest,
    size: u64,
) -> Result<(String, u64)> {
    let (mut reader, finish) = proxy.get_blob(img, digest, size).await?;
    let read = async {
        let mut sha = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            len += n as u64;
        }
        Ok::<_, std::io::Error>((format!("sha256:{}", hex::encode(sha.finalize())), len))
    };
    let (got, finished) = tokio::join!(read, finish);
    finished.with_context(|| format!("FinishPipe of {digest}"))?;
    Ok(got?)
}

async fn run(sequence: &str, image: &str, cmd: Command) -> Result<serde_json::Value> {
    let mut config = ImageProxyConfig::default();
    config.skopeo_cmd = Some(cmd);
    config.user_agent_prefix = Some("bootc/1.16.9".into());
    config.auth_anonymous = true;
    config.insecure_policy = Some(true);
    let proxy = ImageProxy::new_with_config(config).await?;
    let img = proxy.open_image(image).await.context("OpenImage")?;
    let (digest, manifest) = proxy.fetch_manifest(&img).await.context("GetManifest")?;
    if sequence == "resolve" {
        // As bound-image resolution: no CloseImage, no Shutdown; the proxy sees end of file.
        drop(proxy);
        return Ok(serde_json::json!({"manifest_digest": digest}));
    }
    let config = proxy.fetch_config(&img).await.context("GetFullConfig")?;
    let infos = match proxy
        .get_layer_info(&img)
        .await
        .context("GetLayerInfoPiped")?
    {
        Some(i) => i
            .into_iter()
            .map(|l| (l.digest, l.size))
            .collect::<Vec<_>>(),
        None => bail!(
            "the proxy gave no layer info (protocol {})",
            proxy.protocol_version()
        ),
    };
    if infos.len() != manifest.layers().len() {
        bail!(
            "{} layers in the info, {} in the manifest",
            infos.len(),
            manifest.layers().len()
        );
    }
    let mut layers = Vec::new();
    if sequence == "composefs" {
        let fetches = infos.iter().map(|(d, s)| blob(&proxy, &img, d, *s));
        for r in futures_util::future::join_all(fetches).await {
            layers.push(r?);
        }
    } else {
        for (d, s) in &infos {
            layers.push(blob(&proxy, &img, d, *s).await?);
        }
    }
    proxy.close_image(&img).await.context("CloseImage")?;
    proxy.finalize().await.context("Shutdown")?;
    Ok(serde_json::json!({
        "protocol": proxy_version_string(),
        "manifest_digest": digest,
        "diff_ids": config.rootfs().diff_ids(),
        "layers": infos.iter().zip(&layers).map(|((d, s), (sha, len))| serde_json::json!({
            "digest": d.to_string(), "size": s, "sha256": sha, "length": len,
        })).collect::<Vec<_>>(),
    }))
}

/// The crate's version, for the record.
fn proxy_version_string() -> &'static str {
    "containers-image-proxy 0.11.0"
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sequence, image, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: proxy-client ostree-ext|composefs|resolve IMAGE PROGRAM [ARG…]");
        std::process::exit(2);
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match rt.block_on(run(sequence, image, cmd)) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("proxy-client: {e:#}");
            std::process::exit(1);
        }
    }
}
