//! The HTTP proxy for a registry, from the environment as Go's `http.ProxyFromEnvironment` (and so
//! c/image) reads it: `HTTPS_PROXY` for an HTTPS registry, `HTTP_PROXY` for a plain one (upper or
//! lower case), never for `localhost` or a loopback address, not for a host `NO_PROXY` names (`*`;
//! a domain and its subdomains, `.domain` for subdomains only; an IP or a CIDR range; with or
//! without a port). A proxy address without a scheme is `http://`.

use std::net::IpAddr;

/// The variable `name` in upper or lower case, if set and not empty.
fn var(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .or_else(|| get(&name.to_ascii_lowercase()))
        .filter(|v| !v.is_empty())
}

/// `host:port` (or `host`, `[v6]:port`) split into host and port.
fn split_host(host_port: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host_port.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (host_port, None),
        };
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host_port, None),
    }
}

/// Whether `ip` is in `cidr` (`a.b.c.d/n` or a v6 range).
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Whether `NO_PROXY` (`no_proxy`) keeps `host_port` off the proxy.
fn excluded(no_proxy: &str, host_port: &str) -> bool {
    let (host, port) = split_host(host_port);
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    for entry in no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            return true;
        }
        if let Some(ip) = ip
            && in_cidr(ip, entry)
        {
            return true;
        }
        let (name, entry_port) = split_host(entry);
        if entry_port.is_some() && entry_port != port {
            continue;
        }
        let name = name.to_ascii_lowercase();
        if let Some(sub) = name.strip_prefix('.') {
            if host.ends_with(&format!(".{sub}")) {
                return true;
            }
        } else if host == name || host.ends_with(&format!(".{name}")) {
            return true;
        }
    }
    false
}

/// The proxy address for `host_port` over HTTPS (`https`) or plain HTTP, as `get` reads the
/// environment.
fn choose(host_port: &str, https: bool, get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (host, _) = split_host(host_port);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return None;
    }
    let proxy = var(get, if https { "HTTPS_PROXY" } else { "HTTP_PROXY" })?;
    if var(get, "NO_PROXY").is_some_and(|n| excluded(&n, host_port)) {
        return None;
    }
    Some(if proxy.contains("://") {
        proxy
    } else {
        format!("http://{proxy}")
    })
}

/// The proxy for `host_port` over HTTPS or plain HTTP, from this process's environment.
pub(crate) fn proxy_for(host_port: &str, https: bool) -> Option<String> {
    choose(host_port, https, &|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_go_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = env(&[
            ("HTTPS_PROXY", "proxy.example:3128"),
            ("http_proxy", "http://plain.example:80"),
            (
                "NO_PROXY",
                "internal.example, .corp.example, 10.0.0.0/8, pinned.example:5000",
            ),
        ]);
        assert_eq!(
            choose("quay.io", true, &e).as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(
            choose("quay.io", false, &e).as_deref(),
            Some("http://plain.example:80")
        );
        for direct in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "internal.example",
            "r.internal.example:443",
            "a.corp.example",
            "10.1.2.3:5000",
            "pinned.example:5000",
        ] {
            assert_eq!(choose(direct, true, &e), None, "{direct}");
        }
        assert!(
            choose("corp.example", true, &e).is_some(),
            ".domain: subdomains only"
        );
        assert!(
            choose("pinned.example:6000", true, &e).is_some(),
            "another port"
        );
        let all = env(&[("HTTPS_PROXY", "p:1"), ("no_proxy", "*")]);
        assert_eq!(choose("quay.io", true, &all), None);
    }
}
