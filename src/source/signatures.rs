//! Signature requirements of policy.json verified by the installed skopeo: its image proxy opens
//! the image with the policy (skopeo 1.14 and later evaluate it there, with c/image's signature
//! formats), and the digest of the manifest it verified is what is then read — by digest, so
//! nothing else can be. An older proxy cannot verify: the image is refused in one line. A
//! signature requirement is never skipped.

use containers_image_proxy::ImageProxy;

use super::image_proxy::{FetchOptions, proxy_config, release_runtime, shared_runtime};
use super::proxy_errors::remote_error;
use crate::error::{Error, Result};

/// The image-proxy protocol from which skopeo evaluates the signature policy when it opens an
/// image (skopeo 1.14).
const VERIFYING_PROTOCOL: (u64, u64, u64) = (0, 2, 6);

/// The digest of the manifest `imgref` (a `docker://` reference) resolves to (this platform's,
/// from a list), once the installed skopeo's image proxy has verified its signatures against the
/// signature policy (`opts.signature_policy`, or skopeo's default, podman's) as it opened it: a
/// proxy of protocol 0.2.6 or later does; an older one cannot, and the image is refused in one
/// line (`r`, `kind`: what the policy asked). A signature requirement is never skipped.
pub(crate) fn verified_digest(
    imgref: &str,
    r: &super::policy::PolicyRef,
    kind: &str,
    opts: &FetchOptions,
) -> Result<String> {
    let rt = shared_runtime()?;
    let result = rt
        .block_on(rt.spawn(verify(imgref.to_string(), opts.clone())))
        .map_err(|e| Error::Internal(format!("the proxy task failed: {e}")));
    release_runtime(rt);
    match result?? {
        Ok(digest) => Ok(digest),
        Err(version) => Err(super::policy::signatures_unverifiable(
            r,
            kind,
            Some(&format!(
                "the installed skopeo cannot verify when it serves an image (image-proxy protocol {version}; verifying needs 0.2.6, skopeo 1.14 or later)"
            )),
        )),
    }
}

/// [`verified_digest`]'s work: `Ok(Err(version))` when the proxy is too old to verify.
async fn verify(imgref: String, opts: FetchOptions) -> Result<std::result::Result<String, String>> {
    let proxy = ImageProxy::new_with_config(proxy_config(&imgref, &opts)?)
        .await
        .map_err(|e| remote_error(&imgref, "starting skopeo's image proxy", e))?;
    let version = proxy.protocol_version().clone();
    if (version.major, version.minor, version.patch) < VERIFYING_PROTOCOL {
        let _ = proxy.finalize().await;
        return Ok(Err(version.to_string()));
    }
    let img = match proxy.open_image(&imgref).await {
        Ok(img) => img,
        Err(e) => {
            let text = e.to_string();
            // The policy's verdict, in c/image's words, is about the image, not the network.
            // c/image's verdicts (PolicyRequirementError, "Source image rejected", signature
            // verification) — not a network failure while fetching signatures.
            let verdict = [
                "rejected",
                "A signature was required",
                "signature verification failed",
                "is not signed",
            ]
            .iter()
            .any(|w| text.contains(w));
            return Err(if verdict {
                Error::InvalidInput(format!(
                    "{imgref}: {text}: the image is not signed as the signature policy requires (policy.json, containers-policy.json(5))"
                ))
            } else {
                remote_error(&imgref, "opening (to verify its signatures)", e)
            });
        }
    };
    let (digest, _) = proxy
        .fetch_manifest_raw_oci(&img)
        .await
        .map_err(|e| remote_error(&imgref, "reading the manifest of", e))?;
    let _ = proxy.close_image(&img).await;
    let _ = proxy.finalize().await;
    Ok(Ok(digest))
}
