//! What a failure of skopeo's image proxy means for the user: a missing image, refused
//! credentials, a TLS problem, something transient, or another failure; each with its remedy.

use crate::error::Error;

/// Words of a refusal of credentials.
const AUTH: &[&str] = &[
    "unauthorized",
    "authentication required",
    "requested access to the resource is denied",
    "denied:",
    "invalid username/password",
];

/// Words of a missing image.
const MISSING: &[&str] = &[
    "manifest unknown",
    "name unknown",
    "not found",
    "no such file",
    "does not exist",
];

/// Words of a TLS failure.
const TLS: &[&str] = &[
    "x509",
    "certificate",
    "http response to https client",
    "tls: ",
];

/// Words of a failure worth retrying.
const TRANSIENT: &[&str] = &[
    "connection reset",
    "connection refused",
    "unexpected eof",
    ": eof",
    "timeout",
    "timed out",
    "broken pipe",
    "no route to host",
    "network is unreachable",
    "temporary",
    "too many requests",
    "status: 429",
    "status 429",
    "http status: 5",
    "status code 5",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    "internal server error",
];

/// What a proxy failure means for the user: a missing image, refused credentials, a TLS problem,
/// something transient, or another failure; each with its remedy.
pub(super) fn remote_error(imgref: &str, doing: &str, e: containers_image_proxy::Error) -> Error {
    if let containers_image_proxy::Error::SkopeoSpawnError(io) = &e {
        return Error::external(
            "skopeo",
            format!(
                "cannot run skopeo ({io}), which reads {imgref}: install it (apt install skopeo)"
            ),
        );
    }
    if let containers_image_proxy::Error::ProxyTooOld { found_version, .. } = &e {
        return Error::external(
            "skopeo",
            format!(
                "its image proxy speaks protocol {found_version}, too old: install skopeo 1.6 or later"
            ),
        );
    }
    let detail = e.to_string();
    let transient = e.is_retryable();
    described(imgref, doing, &detail, transient)
}

/// The error for a failure described by `detail`.
pub(super) fn described(imgref: &str, doing: &str, detail: &str, retryable: bool) -> Error {
    let low = detail.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| low.contains(w));
    let detail = detail
        .trim_start_matches("proxy request returned error: ")
        .trim_start_matches("other error: ");
    let registry =
        crate::image_ref::ImageRef::parse(imgref).is_ok_and(|r| r.transport() == "docker");
    if registry && has(AUTH) {
        return Error::Remote {
            image: imgref.to_string(),
            message: format!(
                "{doing} it: the registry refused the credentials ({detail}): log in with `podman login`, or name the credentials with --authfile FILE"
            ),
            transient: false,
        };
    }
    if has(MISSING) {
        return Error::not_found(
            imgref.to_string(),
            format!(
                "{imgref}: {doing} it: no such image ({detail}): check the name and tag (`skopeo inspect {imgref}`)"
            ),
        );
    }
    if has(TLS) && !has(&["handshake timeout"]) {
        return Error::Remote {
            image: imgref.to_string(),
            message: format!(
                "{doing} it: TLS failed ({detail}): for a registry without TLS mark it `insecure = true` in registries.conf or pass --tls-verify=false; for a private CA pass --cert-dir DIR"
            ),
            transient: false,
        };
    }
    let transient = retryable || has(TRANSIENT);
    let remedy = if transient {
        "the registry or the network failed: try again later, or with more --retry"
    } else {
        "check the image and the registry"
    };
    Error::Remote {
        image: imgref.to_string(),
        message: format!("{doing} it: {detail}: {remedy}"),
        transient,
    }
}
