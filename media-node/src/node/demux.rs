//! Which connection a datagram on the node's one UDP port belongs to.
//!
//! Every connection has its own ICE username fragment. A STUN request names it in its USERNAME
//! attribute (`<our ufrag>:<their ufrag>`), which routes the request and teaches the demuxer the
//! sender's address; everything else (DTLS, SRTP, SRTCP) is routed by that address. When a
//! connection ends, its fragment and every address it used are forgotten, so memory does not
//! grow and a reused port is never routed to the wrong peer.

use std::collections::HashMap;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use crate::core::PeerId;

/// STUN's magic cookie (RFC 8489).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_HEADER: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;
/// Addresses remembered per connection; a client switching networks uses a few, more is abuse.
const MAX_ADDRESSES_PER_PEER: usize = 8;

/// Whether `datagram` looks like STUN: the first two bits zero and the magic cookie in place.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= STUN_HEADER && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// Whether `datagram` is a STUN request (class bits C1 and C0 both zero), as ICE's connectivity
/// and consent checks are; answers and indications are not.
pub fn is_stun_request(datagram: &[u8]) -> bool {
    is_stun(datagram) && datagram[0] & 0x01 == 0 && datagram[1] & 0x10 == 0
}

/// The local (our) ufrag from a STUN message's USERNAME, if it has one.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let attributes = datagram.get(STUN_HEADER..STUN_HEADER + length)?;
    let mut rest = attributes;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let size = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + size)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = (size + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

/// The routing table of the node's UDP port.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, PeerId>,
    by_address: FxHashMap<SocketAddr, PeerId>,
    addresses: FxHashMap<PeerId, Vec<SocketAddr>>,
}

impl Demux {
    /// Routes STUN naming `ufrag` to `peer`.
    pub fn add_peer(&mut self, peer: PeerId, ufrag: String) {
        self.by_ufrag.insert(ufrag, peer);
    }

    /// Forgets everything about `peer`; returns the addresses it used.
    pub fn remove_peer(&mut self, peer: PeerId, ufrag: &str) -> Vec<SocketAddr> {
        if self.by_ufrag.get(ufrag) == Some(&peer) {
            self.by_ufrag.remove(ufrag);
        }
        let addresses = self.addresses.remove(&peer).unwrap_or_default();
        for address in &addresses {
            if self.by_address.get(address) == Some(&peer) {
                self.by_address.remove(address);
            }
        }
        addresses
    }

    /// The connection a datagram from `from` belongs to, if any.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<PeerId> {
        if is_stun_request(datagram) {
            // A request that names no connection's fragment belongs to none, whoever sent it.
            let peer = *self.by_ufrag.get(stun_local_ufrag(datagram)?)?;
            self.learn(peer, from);
            return Some(peer);
        }
        self.by_address.get(&from).copied()
    }

    /// Whether `address` is a connection's: a participant's.
    pub fn knows(&self, address: SocketAddr) -> bool {
        self.by_address.contains_key(&address)
    }

    fn learn(&mut self, peer: PeerId, address: SocketAddr) {
        match self.by_address.insert(address, peer) {
            Some(previous) if previous == peer => return,
            Some(previous) => {
                // The address moved to another connection (a reused port): the old one loses it.
                if let Some(list) = self.addresses.get_mut(&previous) {
                    list.retain(|a| *a != address);
                }
            }
            None => {}
        }
        let list = self.addresses.entry(peer).or_default();
        list.push(address);
        if list.len() > MAX_ADDRESSES_PER_PEER {
            let oldest = list.remove(0);
            self.by_address.remove(&oldest);
        }
    }

    /// Routing entries held, for tests and metrics: (ufrags, addresses).
    pub fn entries(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_address.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request with a USERNAME attribute (no integrity: routing only needs the
    /// name; the connection itself checks integrity).
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attribute = Vec::new();
        attribute.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attribute.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attribute.extend_from_slice(username.as_bytes());
        while attribute.len() % 4 != 0 {
            attribute.push(0);
        }
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&(attribute.len() as u16).to_be_bytes());
        message.extend_from_slice(&MAGIC_COOKIE);
        message.extend_from_slice(&[7; 12]);
        message.extend_from_slice(&attribute);
        message
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn stun_routes_by_ufrag_then_media_by_address() {
        let mut demux = Demux::default();
        demux.add_peer(PeerId(1), "aaaa".into());
        demux.add_peer(PeerId(2), "bbbb".into());
        assert_eq!(
            demux.route(addr(5000), b"\x80srtp"),
            None,
            "unknown address"
        );
        assert_eq!(
            demux.route(addr(5000), &binding_request("bbbb:xyz")),
            Some(PeerId(2))
        );
        assert_eq!(demux.route(addr(5000), b"\x80srtp"), Some(PeerId(2)));
        assert_eq!(demux.route(addr(5001), &binding_request("cccc:xyz")), None);
    }

    #[test]
    fn leaving_forgets_the_peer_and_a_reused_port_goes_to_the_new_one() {
        let mut demux = Demux::default();
        demux.add_peer(PeerId(1), "aaaa".into());
        demux.route(addr(5000), &binding_request("aaaa:x"));
        demux.remove_peer(PeerId(1), "aaaa");
        assert_eq!(demux.entries(), (0, 0));
        assert_eq!(demux.route(addr(5000), b"\x80srtp"), None);
        demux.add_peer(PeerId(2), "bbbb".into());
        demux.add_peer(PeerId(3), "cccc".into());
        demux.route(addr(6000), &binding_request("bbbb:x"));
        demux.route(addr(6000), &binding_request("cccc:x"));
        assert_eq!(demux.route(addr(6000), b"\x80srtp"), Some(PeerId(3)));
        demux.remove_peer(PeerId(2), "bbbb");
        assert_eq!(
            demux.route(addr(6000), b"\x80srtp"),
            Some(PeerId(3)),
            "not taken by 2's removal"
        );
    }

    #[test]
    fn a_request_from_a_known_address_must_still_name_the_connection() {
        let mut demux = Demux::default();
        demux.add_peer(PeerId(1), "aaaa".into());
        demux.route(addr(5000), &binding_request("aaaa:x"));
        let mut unreadable = binding_request("ab:x");
        unreadable[24] = 0xff; // not UTF-8
        assert_eq!(demux.route(addr(5000), &unreadable), None);
        let mut unnamed = binding_request("aaaa:x");
        unnamed[20..22].copy_from_slice(&0x8022u16.to_be_bytes()); // SOFTWARE, not USERNAME
        assert_eq!(demux.route(addr(5000), &unnamed), None);
        let mut answer = binding_request("");
        answer[..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(
            demux.route(addr(5000), &answer),
            Some(PeerId(1)),
            "an answer to the node's own check goes by address"
        );
    }

    #[test]
    fn addresses_per_peer_are_bounded() {
        let mut demux = Demux::default();
        demux.add_peer(PeerId(1), "aaaa".into());
        for port in 0..100 {
            demux.route(addr(7000 + port), &binding_request("aaaa:x"));
        }
        assert_eq!(demux.entries().1, MAX_ADDRESSES_PER_PEER);
    }

    #[test]
    fn malformed_stun_is_not_routed_and_does_not_panic() {
        let mut demux = Demux::default();
        demux.add_peer(PeerId(1), "aaaa".into());
        let mut message = binding_request("aaaa:x");
        message[3] = 200; // length beyond the datagram
        assert_eq!(demux.route(addr(1), &message), None);
        let mut message = binding_request("aaaa:x");
        message[23] = 100; // attribute length beyond the attributes
        assert_eq!(demux.route(addr(1), &message), None);
        for len in 0..40 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let _ = demux.route(addr(2), &garbage);
        }
    }
}
