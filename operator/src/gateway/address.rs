//! Who a client is, for the limits per address: the peer of the socket, or, behind a proxy the
//! operator trusts, the address that proxy says it forwards for.
//!
//! A proxy header is read only when the socket's peer is a trusted proxy (`--trusted-proxies`,
//! none by default), since anyone else can write whatever they like into it. Proxies append
//! the address they received a request from, so the header is read from the right: addresses
//! of trusted proxies are skipped, and the first other one is the client. An entry that cannot
//! be read ends the walk, and the peer itself counts as the client then: what a trusted proxy
//! could not name is not guessed at. Only one header is read, the one the operator names
//! (`X-Forwarded-For` by default, or the standard `Forwarded`), so that a client cannot add the
//! other one past a proxy that only writes the first.
//!
//! Limits count IPv6 clients by their /64 prefix: one subscriber usually holds a whole /64 and
//! could otherwise take a fresh address for every connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use crate::domain::{IpNet, IpNetError};

use axum::http::HeaderMap;

/// The most proxy hops read from a header; a longer chain ends the walk there.
const MAX_HOPS: usize = 32;

/// Which proxy header names the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`, as most proxies and ingress controllers
    /// write it.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The proxies whose header names the client; none by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Whether `address` is one of them.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(address))
    }
}

/// The client's address: `peer` itself, unless `peer` is a trusted proxy and `header` names
/// someone else.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &TrustedProxies,
    header: ClientAddressHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !proxies.contains(peer) {
        return peer;
    }
    let (name, read): (&str, fn(&str) -> Option<IpAddr>) = match header {
        ClientAddressHeader::XForwardedFor => ("x-forwarded-for", forwarded_for_entry),
        ClientAddressHeader::Forwarded => ("forwarded", forwarded_element),
    };
    // Several header lines are one list, in order.
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        entries.extend(value.split(','));
    }
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_HOPS) {
        let Some(address) = read(entry) else {
            return peer;
        };
        client = address;
        if !proxies.contains(address) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port or in brackets.
fn forwarded_for_entry(entry: &str) -> Option<IpAddr> {
    node_address(entry.trim())
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
fn forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        node_address(value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`. Obfuscated or `unknown` nodes are not addresses.
fn node_address(text: &str) -> Option<IpAddr> {
    if let Ok(address) = IpAddr::from_str(text) {
        return Some(address.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _port) = rest.split_once(']')?;
        return Ipv6Addr::from_str(inside)
            .ok()
            .map(|address| IpAddr::V6(address).to_canonical());
    }
    let (address, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Ipv4Addr::from_str(address).ok().map(IpAddr::V4)
}

/// Whom a limit per address counts: an IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Prefix((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(address) => address.fmt(f),
            Self::V6Prefix(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*prefix) << 64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|net| net.parse().unwrap()).collect())
    }

    fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn networks_are_read_in_cidr_notation() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4 written as IPv6");
        let host: IpNet = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        let everything: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("203.0.113.1")));
        assert!(
            !everything.contains(ip("2001:db8::1")),
            "no IPv6 in an IPv4 network"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "ten/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let forged = headers("x-forwarded-for", &["198.51.100.1"]);
        let client = client_address(
            ip("203.0.113.9"),
            &forged,
            &TrustedProxies::default(),
            ClientAddressHeader::XForwardedFor,
        );
        assert_eq!(client, ip("203.0.113.9"));
        let elsewhere = client_address(
            ip("203.0.113.9"),
            &forged,
            &proxies(&["10.0.0.0/8"]),
            ClientAddressHeader::XForwardedFor,
        );
        assert_eq!(elsewhere, ip("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        // The client put a forged entry first; the proxies appended what they saw.
        let chain = headers(
            "x-forwarded-for",
            &["198.51.100.1, 203.0.113.5", "10.0.0.7"],
        );
        let client = client_address(peer, &chain, &trusted, ClientAddressHeader::XForwardedFor);
        assert_eq!(client, ip("203.0.113.5"));
        // No header: the proxy itself.
        let none = client_address(
            peer,
            &HeaderMap::new(),
            &trusted,
            ClientAddressHeader::XForwardedFor,
        );
        assert_eq!(none, peer);
        // Only trusted hops: the first of them.
        let inside = headers("x-forwarded-for", &["10.1.1.1, 10.2.2.2"]);
        let client = client_address(peer, &inside, &trusted, ClientAddressHeader::XForwardedFor);
        assert_eq!(client, ip("10.1.1.1"));
        // An entry the proxy could not name: the proxy itself, nothing guessed.
        let garbage = headers("x-forwarded-for", &["203.0.113.5, unknown"]);
        let client = client_address(peer, &garbage, &trusted, ClientAddressHeader::XForwardedFor);
        assert_eq!(client, peer);
        // Ports and brackets are read.
        let ported = headers("x-forwarded-for", &["[2001:db8::5]:4711, 203.0.113.6:80"]);
        let client = client_address(peer, &ported, &trusted, ClientAddressHeader::XForwardedFor);
        assert_eq!(client, ip("203.0.113.6"));
    }

    #[test]
    fn the_forwarded_header_is_read_when_configured_and_only_then() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        let mut both = headers(
            "forwarded",
            &["for=198.51.100.1, for=\"[2001:db8:cafe::17]:4711\";proto=https"],
        );
        both.append("x-forwarded-for", HeaderValue::from_static("203.0.113.99"));
        let client = client_address(peer, &both, &trusted, ClientAddressHeader::Forwarded);
        assert_eq!(client, ip("2001:db8:cafe::17"));
        let client = client_address(peer, &both, &trusted, ClientAddressHeader::XForwardedFor);
        assert_eq!(client, ip("203.0.113.99"));
        let hidden = headers("forwarded", &["for=_hidden"]);
        let client = client_address(peer, &hidden, &trusted, ClientAddressHeader::Forwarded);
        assert_eq!(client, peer);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let a = AddressKey::from(ip("2001:db8:1:2::1"));
        let b = AddressKey::from(ip("2001:db8:1:2:ffff::9"));
        let c = AddressKey::from(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            AddressKey::from(ip("::ffff:192.0.2.1")),
            AddressKey::from(ip("192.0.2.1"))
        );
    }
}
