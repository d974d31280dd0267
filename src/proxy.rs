//! Forward proxies for the Kubernetes API, as kubectl uses them: the kubeconfig's
//! `proxy-url`, else `HTTPS_PROXY`, and an environment proxy skipped for an API server
//! that `NO_PROXY` names. (Leen's client, reqwest, applies the same variables itself.)
//!
//! kube reads `HTTPS_PROXY` for a kubeconfig-based client, but checks `NO_PROXY` against
//! the proxy's own address rather than the API server's; so the operator settles the API
//! server's proxy here, once, at start.

use std::net::IpAddr;

/// The environment's proxy settings that concern an https API server.
#[derive(Debug, Clone, Default)]
pub struct ProxyEnv {
    /// `HTTPS_PROXY` (or `https_proxy`), if set and not empty.
    pub https_proxy: Option<String>,
    /// `NO_PROXY` (or `no_proxy`), if set and not empty.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the process environment (upper case first, as Go and reqwest do).
    pub fn from_env() -> Self {
        let var = |upper: &str, lower: &str| {
            [upper, lower]
                .iter()
                .filter_map(|name| std::env::var(name).ok())
                .map(|v| v.trim().to_string())
                .find(|v| !v.is_empty())
        };
        ProxyEnv {
            https_proxy: var("HTTPS_PROXY", "https_proxy"),
            no_proxy: var("NO_PROXY", "no_proxy"),
        }
    }
}

/// Whether `NO_PROXY` (a comma-separated list) exempts `host`, as Go's net/http reads it:
/// `*`, the host itself or a domain it is in (`example.com`), only names under a domain
/// (`.example.com`, `*.example.com`), an IP address, or a CIDR range holding it. Ports in
/// entries are ignored (an API server is one host).
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return match (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_range(ip, net, bits),
                    _ => false,
                };
            }
            let name = strip_port(&entry);
            if let (Some(ip), Ok(entry_ip)) = (ip, name.parse::<IpAddr>()) {
                return ip == entry_ip;
            }
            // As Go's net/http: "*.example.com" is ".example.com"; ".example.com" matches
            // the names under it, "example.com" the name itself too.
            let name = name.strip_prefix('*').unwrap_or(name);
            match name.strip_prefix('.') {
                Some(domain) => !domain.is_empty() && host.ends_with(&format!(".{domain}")),
                None => !name.is_empty() && (host == name || host.ends_with(&format!(".{name}"))),
            }
        })
}

fn strip_port(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match entry.rsplit_once(':') {
        // One colon: host:port. More: an IPv6 address without brackets.
        Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
        _ => entry,
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Settles the API server's proxy in a kube config: a proxy taken from `HTTPS_PROXY` is
/// dropped when `NO_PROXY` names the API server's host; another (the kubeconfig's own
/// `proxy-url`) is left as kube loaded it. (kube's loader itself parses `NO_PROXY` strictly
/// when a proxy is set, refusing an empty entry at start with a message naming the
/// variable, and drops any proxy when `NO_PROXY` is `*`.) Returns the host and port of the
/// proxy left, for the start-up log (never its credentials).
pub fn settle_api_server_proxy(config: &mut kube::Config, env: &ProxyEnv) -> Option<String> {
    let proxy = config.proxy_url.clone()?;
    let from_env = env
        .https_proxy
        .as_deref()
        .is_some_and(|p| p.parse::<http::Uri>().is_ok_and(|u| u == proxy));
    let host = config.cluster_url.host().unwrap_or_default();
    if from_env
        && env
            .no_proxy
            .as_deref()
            .is_some_and(|n| no_proxy_matches(n, host))
    {
        config.proxy_url = None;
        return None;
    }
    Some(format!(
        "{}:{}",
        proxy.host().unwrap_or_default(),
        proxy.port_u16().unwrap_or(80)
    ))
}

/// The kube config as kubectl would find it (KUBECONFIG, else in-cluster), with the API
/// server's proxy settled by [`settle_api_server_proxy`].
pub async fn kube_config() -> Result<(kube::Config, Option<String>), kube::config::InferConfigError>
{
    let mut config = kube::Config::infer().await?;
    let proxy = settle_api_server_proxy(&mut config, &ProxyEnv::from_env());
    Ok((config, proxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_entries() {
        let rows: &[(&str, &str, bool)] = &[
            ("*", "anything.example", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("localhost,127.0.0.1", "127.0.0.1", true),
            ("10.0.0.0/8", "10.96.0.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "192.168.1.1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "[fd12::1]", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "[::1]", true),
            ("example.com", "example.com", true),
            ("example.com", "api.example.com", true),
            (".example.com", "api.example.com", true),
            (".example.com", "example.com", false),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "example.com", false),
            ("example.com", "badexample.com", false),
            ("example.com:6443", "api.example.com", true),
            ("[::1]:6443", "::1", true),
            ("kubernetes.default.svc", "kubernetes.default.svc", true),
            (" , ,", "example.com", false),
            ("10.0.0.0/33", "10.0.0.1", false),
            ("10.0.0.0/x", "10.0.0.1", false),
            ("example.com", "10.0.0.1", false),
            ("EXAMPLE.com", "Api.Example.COM", true),
        ];
        for (no_proxy, host, want) in rows {
            assert_eq!(
                no_proxy_matches(no_proxy, host),
                *want,
                "NO_PROXY={no_proxy:?} host={host:?}"
            );
        }
    }

    fn config(cluster: &str, proxy: Option<&str>) -> kube::Config {
        let mut c = kube::Config::new(cluster.parse().expect("uri"));
        c.proxy_url = proxy.map(|p| p.parse().expect("uri"));
        c
    }

    #[test]
    fn an_environment_proxy_is_skipped_for_an_api_server_no_proxy_names() {
        let env = ProxyEnv {
            https_proxy: Some("http://proxy.corp:3128".into()),
            no_proxy: Some("127.0.0.1,.svc".into()),
        };
        let mut c = config("https://127.0.0.1:6443", Some("http://proxy.corp:3128"));
        assert_eq!(settle_api_server_proxy(&mut c, &env), None);
        assert!(c.proxy_url.is_none());

        let mut c = config("https://api.corp:6443", Some("http://proxy.corp:3128"));
        assert_eq!(
            settle_api_server_proxy(&mut c, &env).as_deref(),
            Some("proxy.corp:3128")
        );
        assert!(c.proxy_url.is_some());
    }

    #[test]
    fn a_proxy_not_from_the_environment_is_left_as_kube_loaded_it() {
        let env = ProxyEnv {
            https_proxy: Some("http://other:3128".into()),
            no_proxy: Some("*".into()),
        };
        let mut c = config(
            "https://127.0.0.1:6443",
            Some("http://kubeconfig-proxy:8080"),
        );
        assert_eq!(
            settle_api_server_proxy(&mut c, &env).as_deref(),
            Some("kubeconfig-proxy:8080")
        );
        let mut c = config("https://127.0.0.1:6443", None);
        assert_eq!(settle_api_server_proxy(&mut c, &env), None);
    }

    #[test]
    fn the_log_never_shows_proxy_credentials() {
        let env = ProxyEnv::default();
        let mut c = config(
            "https://api:6443",
            Some("http://user:secret@proxy.corp:3128"),
        );
        let shown = settle_api_server_proxy(&mut c, &env).expect("kept");
        assert_eq!(shown, "proxy.corp:3128");
    }
}
