//! Calls to `https://` upstreams through an HTTP proxy, as egress-locked
//! clusters require: `HTTPS_PROXY` (or `https_proxy`) names the proxy,
//! `NO_PROXY` (or `no_proxy`) the hosts reached directly. The client opens
//! a tunnel with `CONNECT host:port` and speaks TLS to the upstream through
//! it, so the proxy sees neither the request nor the API key.
//!
//! - The proxy URL is `http://[user:password@]host[:port]` (no scheme means
//!   `http://`; port 80 by default); credentials go in a
//!   `Proxy-Authorization: Basic` header and are never printed.
//! - `NO_PROXY` is a comma-separated list of `*` (every host), domain names
//!   (`example.com` or `.example.com`: the domain and its subdomains), IP
//!   addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`). Ports in entries
//!   are ignored. `localhost` and loopback addresses are always reached
//!   directly, as Go's and curl's clients do.
//! - Plain `http://` upstreams (in-cluster vLLM or Ollama, the mock) are
//!   always reached directly: `HTTP_PROXY` is not used.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer to a `CONNECT` read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Where `https://` upstreams are reached through.
#[derive(Clone, Default)]
pub struct Egress {
    proxy: Option<Proxy>,
    direct: Vec<Direct>,
}

/// The proxy that tunnels are opened through.
#[derive(Clone)]
pub struct Proxy {
    host: Box<str>,
    port: u16,
    /// The `Proxy-Authorization` value, when the URL has credentials.
    authorization: Option<Box<str>>,
}

/// One `NO_PROXY` entry.
#[derive(Clone, Debug, PartialEq)]
enum Direct {
    Everything,
    /// A domain and its subdomains, lower-case, without a leading dot.
    Domain(Box<str>),
    Network {
        address: IpAddr,
        prefix: u8,
    },
}

/// Names the proxy, never its credentials.
impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress").field("proxy", &self.proxy()).field("direct", &self.direct).finish()
    }
}

impl Egress {
    /// From the process environment.
    pub fn from_env() -> Result<Self, String> {
        fn var(names: [&'static str; 2]) -> Option<(&'static str, String)> {
            names
                .into_iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        }
        let proxy = var(["HTTPS_PROXY", "https_proxy"]);
        let direct = var(["NO_PROXY", "no_proxy"]);
        Self::parse(proxy.as_ref().map(|(n, v)| (*n, v.as_str())), direct.as_ref().map(|(_, v)| v.as_str()))
    }

    /// From `(variable name, proxy URL)` and a `NO_PROXY` list; errors name
    /// the variable and what to write instead.
    pub fn parse(proxy: Option<(&str, &str)>, no_proxy: Option<&str>) -> Result<Self, String> {
        let proxy = proxy.map(|(name, url)| Proxy::parse(url).map_err(|e| format!("`{name}`: {e}"))).transpose()?;
        let direct = no_proxy.map_or_else(Vec::new, |list| list.split(',').filter_map(Direct::parse).collect());
        Ok(Self { proxy, direct })
    }

    /// The proxy's `host:port`, when there is one.
    pub fn proxy(&self) -> Option<String> {
        self.proxy.as_ref().map(Proxy::address)
    }

    /// The proxy that calls to `https://` upstream `host` go through;
    /// `None`: they go straight to it.
    pub fn proxy_for(&self, host: &str) -> Option<&Proxy> {
        let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback());
        self.proxy.as_ref().filter(|_| !loopback && !self.direct.iter().any(|d| d.matches(host)))
    }
}

impl Proxy {
    fn parse(url: &str) -> Result<Self, String> {
        let fix = "write it as http://[user:password@]host[:port]";
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some(("http" | "HTTP", rest)) => rest,
            Some((scheme, _)) => return Err(format!("proxy scheme `{scheme}://` is not supported: {fix}")),
            None => url,
        };
        let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| format!("the proxy's port is not a number: {fix}"))?)
            }
            _ => (address, 80),
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(format!("the proxy URL names no host: {fix}"));
        }
        let authorization = credentials.map(|c| {
            let (user, password) = c.split_once(':').unwrap_or((c, ""));
            let unescape = |text| percent_encoding::percent_decode_str(text).decode_utf8_lossy();
            let pair = format!("{}:{}", unescape(user), unescape(password));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)).into()
        });
        Ok(Self { host: host.into(), port, authorization })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a tunnel to `host:port` with `CONNECT`; errors say which hop
    /// failed.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let proxy = self.address();
        let mut tcp = TcpStream::connect((&*self.host, self.port))
            .await
            .map_err(|e| format!("cannot connect to the HTTPS_PROXY {proxy}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            head.push_str("proxy-authorization: ");
            head.push_str(authorization);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let broken = |e: std::io::Error| format!("the HTTPS_PROXY {proxy} broke off the tunnel to {target}: {e}");
        tcp.write_all(head.as_bytes()).await.map_err(broken)?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut answer = httparse::Response::new(&mut slots);
            match answer.parse(&buf) {
                Ok(httparse::Status::Complete(length)) => {
                    let status = answer.code.unwrap_or_default();
                    if !(200..300).contains(&status) {
                        let reason = answer.reason.unwrap_or_default();
                        return Err(format!(
                            "the HTTPS_PROXY {proxy} refused the tunnel to {target}: {status} {reason}"
                        ));
                    }
                    if buf.len() > length {
                        return Err(format!(
                            "the HTTPS_PROXY {proxy} sent bytes of its own into the tunnel to {target}"
                        ));
                    }
                    return Ok(tcp);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
                _ => return Err(format!("the HTTPS_PROXY {proxy} did not answer CONNECT in HTTP/1")),
            }
            match tcp.read_buf(&mut buf).await {
                Ok(0) => return Err(format!("the HTTPS_PROXY {proxy} closed the connection instead of a tunnel")),
                Ok(_) => {}
                Err(e) => return Err(broken(e)),
            }
        }
    }
}

impl Direct {
    fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim();
        if entry.is_empty() {
            return None;
        }
        if entry == "*" {
            return Some(Self::Everything);
        }
        if let Some((address, prefix)) = entry.split_once('/') {
            let address: IpAddr = address.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let bits = if address.is_ipv4() { 32 } else { 128 };
            return (prefix <= bits).then_some(Self::Network { address, prefix });
        }
        let bare = entry.strip_prefix('[').and_then(|e| e.split_once(']')).map(|(address, _)| address);
        if let Ok(address) = bare.unwrap_or(entry).parse::<IpAddr>() {
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            return Some(Self::Network { address, prefix });
        }
        let host = entry.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(entry, |(h, _)| h);
        let domain = host.trim_start_matches('*').trim_start_matches('.').to_ascii_lowercase();
        (!domain.is_empty()).then(|| Self::Domain(domain.into()))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Everything => true,
            Self::Domain(domain) => {
                let host = host.trim_end_matches('.');
                host.len() >= domain.len()
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && (host.len() == domain.len() || host.as_bytes()[host.len() - domain.len() - 1] == b'.')
            }
            Self::Network { address, prefix } => match (host.parse::<IpAddr>(), address) {
                (Ok(IpAddr::V4(host)), IpAddr::V4(network)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    u32::from(host) & mask == u32::from(*network) & mask
                }
                (Ok(IpAddr::V6(host)), IpAddr::V6(network)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                    u128::from(host) & mask == u128::from(*network) & mask
                }
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(proxy: &str, no_proxy: &str) -> Egress {
        Egress::parse(Some(("HTTPS_PROXY", proxy)), Some(no_proxy)).unwrap()
    }

    #[test]
    fn no_proxy_takes_domains_addresses_networks_and_a_star() {
        let egress =
            egress("proxy:3128", " .svc.cluster.local, example.com:443 ,10.0.0.0/8,::1,[fd00::1]:80,*.internal");
        for direct in ["api.svc.cluster.local", "example.com", "EXAMPLE.com.", "a.b.example.com", "10.2.3.4", "::1"] {
            assert!(egress.proxy_for(direct).is_none(), "{direct} is reached directly");
        }
        for proxied in ["api.openai.com", "notexample.com", "11.0.0.1", "::2", "internal.example", "fd00::2"] {
            assert!(egress.proxy_for(proxied).is_some(), "{proxied} goes through the proxy");
        }
        assert!(egress.proxy_for("fd00::1").is_none(), "an address in brackets, with a port");
        assert!(self::egress("proxy:3128", "*").proxy_for("api.openai.com").is_none());
        for loopback in ["localhost", "127.0.0.1", "127.8.9.10", "::1"] {
            assert!(self::egress("proxy:3128", "").proxy_for(loopback).is_none(), "{loopback} is never proxied");
        }
        let none = Egress::parse(None, Some("")).unwrap();
        assert!(none.proxy_for("api.openai.com").is_none(), "no proxy, no tunnel");
    }

    #[test]
    fn proxy_urls_are_read_with_their_credentials_and_errors_name_the_variable() {
        let proxy = Proxy::parse("http://us%40er:p%3Ass@proxy.corp:3128/").unwrap();
        assert_eq!((&*proxy.host, proxy.port), ("proxy.corp", 3128));
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(proxy.authorization.as_deref(), Some(format!("Basic {expected}").as_str()));
        let bare = Proxy::parse("10.0.0.5").unwrap();
        assert_eq!((&*bare.host, bare.port, bare.authorization), ("10.0.0.5", 80, None));
        assert_eq!(&*Proxy::parse("http://[fd00::5]:8080").unwrap().host, "fd00::5");

        let error = Egress::parse(Some(("https_proxy", "https://proxy:443")), None).unwrap_err();
        assert!(error.starts_with("`https_proxy`") && error.contains("http://[user:password@]host[:port]"), "{error}");
        assert!(Egress::parse(Some(("HTTPS_PROXY", "http://proxy:port")), None).unwrap_err().contains("port"));
        let shown = format!("{:?}", egress("http://user:secret@proxy:3128", ""));
        assert!(
            shown.contains("proxy:3128") && !shown.contains("secret") && !shown.contains("dXNlcjpzZWNyZXQ"),
            "{shown}"
        );
    }
}
