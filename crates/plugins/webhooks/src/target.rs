//! Outbound URL rules: http(s) only, and no private, loopback, link-local, metadata or
//! otherwise internal address unless `webhooks.allow_private` is set. Checked when a webhook
//! is saved, and again at every connection by the delivery client's resolver, so a name that
//! later resolves inward (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// Why a target is refused; safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Parses and checks the shape of a webhook URL (scheme, host, no credentials).
pub fn parse(url: &str) -> Result<Url, Refused> {
    let parsed = Url::parse(url.trim()).map_err(|e| Refused(format!("not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused("only http and https URLs are allowed".into()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Refused("the URL has no host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refused("credentials in the URL are not allowed; use the signing secret".into()));
    }
    if url.len() > 2048 {
        return Err(Refused("the URL is longer than 2048 characters".into()));
    }
    Ok(parsed)
}

/// Resolves the URL's host and checks every address it resolves to.
pub async fn check(url: &Url, allow_private: bool) -> Result<(), Refused> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs = resolve(host, port).await?;
    if !allow_private {
        for addr in &addrs {
            refuse_internal(addr.ip())?;
        }
    }
    Ok(())
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::net::lookup_host((host, port)).await.map_err(|_| Refused(format!("cannot resolve `{host}`")))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(Refused(format!("`{host}` resolves to no address")));
    }
    Ok(addrs)
}

/// `Err` when `ip` is not a public unicast address.
pub fn refuse_internal(ip: IpAddr) -> Result<(), Refused> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let why = match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    };
    match why {
        Some(kind) => Err(Refused(format!(
            "the target resolves to {ip}, a {kind} address; set webhooks.allow_private to allow it"
        ))),
        None => Ok(()),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("private")
    } else if ip.is_link_local() {
        // 169.254.169.254 and friends: cloud metadata services live here.
        Some("link-local (metadata)")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Some("non-routable")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
        Some("reserved")
    } else {
        None
    }
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments().first().copied().unwrap_or(0);
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("non-routable")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("metadata")
    } else if first == 0x2001 && ip.segments().get(1) == Some(&0x0db8) {
        Some("reserved")
    } else if first == 0x0064 && ip.segments().get(1) == Some(&0xff9b) {
        // NAT64 can reach internal IPv4 addresses.
        Some("NAT64")
    } else {
        None
    }
}

/// The delivery client's resolver: the system resolver, with internal addresses removed
/// unless allowed. A name left with no address fails to connect.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs =
                resolve(&host, 0).await.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.0.into() })?;
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| allow_private || refuse_internal(a.ip()).is_ok()).collect();
            if allowed.is_empty() {
                return Err(format!("`{host}` resolves only to internal addresses").into());
            }
            let iter: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(refuse_internal(ip).is_err(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(refuse_internal(ip).is_ok(), "{ip}");
        }
    }

    #[test]
    fn only_http_urls() {
        assert!(parse("ftp://example.com/x").is_err());
        assert!(parse("http://user:pw@example.com/").is_err());
        assert!(parse("not a url").is_err());
        assert!(parse("https://example.com/hook").is_ok());
    }

    #[tokio::test]
    async fn literal_private_targets_need_the_setting() {
        let url = parse("http://127.0.0.1:9/hook").unwrap_or_else(|e| panic!("{e}"));
        assert!(check(&url, false).await.is_err());
        assert!(check(&url, true).await.is_ok());
    }
}
