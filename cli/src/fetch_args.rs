//! The registry options podman's pull has: credentials, TLS, retries; shared by every command that
//! fetches images.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bootc_image::retry::RetryPolicy;
use bootc_image::source::image_proxy::FetchOptions;

/// Options for reaching registries.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// The credentials file (auth.json, as `podman login --authfile` writes). Default: as podman
    /// (REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR/containers/auth.json, …); for bootc's store,
    /// bootc's /run, /etc, /usr/lib/ostree/auth.json.
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
    /// --tls-verify=false accepts any certificate and plain HTTP. Default (and with =true, which
    /// skopeo's proxy cannot be told): as registries.conf says (CONTAINERS_REGISTRIES_CONF is honoured).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// A directory of client certificates and CA certificates (*.crt, *.cert, *.key) for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// How often a transient failure (connection cut or refused, 5xx, 429, timeout) is retried;
    /// a layer starts again from nothing.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retry: u32,
    /// The wait between retries (e.g. 500ms, 2s, 1m). Default: 2 s, doubling each time.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_delay: Option<Duration>,
    /// The signature policy (containers-policy.json(5)) that decides which images may be pulled.
    /// Default: as podman (/etc/containers/policy.json for root).
    #[arg(long, value_name = "FILE")]
    pub signature_policy: Option<PathBuf>,
    /// How registries (docker://) are reached: natively, with no skopeo (the default:
    /// credentials, bearer tokens, certs.d, mirrors, insecure and blocked registries, resumed
    /// downloads), or through skopeo's image proxy (c/image exactly).
    #[arg(long, value_enum, value_name = "HOW", env = "BOOTC_IMAGE_VIA", default_value_t = Via::Native)]
    pub via: Via,
    /// Whether zstd:chunked layers are pulled partially (natively, from registries that serve
    /// ranges): files the store already holds, in layers stored with a TOC, are not downloaded.
    #[arg(long, value_name = "BOOL", env = "BOOTC_IMAGE_PARTIAL_PULLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub partial_pulls: bool,
}

/// How registries are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// skopeo's image proxy (c/image).
    Skopeo,
    /// bootc-image's own registry client.
    Native,
}

impl Default for FetchArgs {
    /// The defaults the command line has.
    fn default() -> Self {
        FetchArgs {
            authfile: None,
            tls_verify: None,
            cert_dir: None,
            retry: 3,
            retry_delay: None,
            signature_policy: None,
            via: Via::Native,
            partial_pulls: true,
        }
    }
}

impl FetchArgs {
    /// The fetch options for any store (c/image's default credentials).
    pub fn options(&self) -> FetchOptions {
        FetchOptions {
            authfile: self.authfile.clone(),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            retry: RetryPolicy {
                retries: self.retry,
                delay: self.retry_delay,
            },
            no_default_credentials: false,
            signature_policy: self.signature_policy.clone(),
            native: self.via == Via::Native,
            partial: self.partial_pulls,
        }
    }

    /// The fetch options for bootc's store under `sysroot`: without --authfile (or
    /// REGISTRY_AUTH_FILE, which the issue and podman put first), bootc's global
    /// credentials (`/run`, `/etc`, `/usr/lib` `ostree/auth.json`, the first found), and none at all
    /// when there is none — never the user's, as upstream bootc.
    pub fn options_for_bootc(&self, sysroot: &Path) -> FetchOptions {
        let mut o = self.options();
        if o.authfile.is_none() {
            o.authfile = ["run", "etc", "usr/lib"]
                .iter()
                .map(|d| sysroot.join(d).join("ostree/auth.json"))
                .find(|p| p.is_file());
            o.no_default_credentials = o.authfile.is_none();
        }
        o
    }
}

/// Parses a duration as podman writes them: `500ms`, `2s`, `1.5s`, `1m`, `1h`, or seconds alone.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 2s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=86400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("").is_err());
    }
}
