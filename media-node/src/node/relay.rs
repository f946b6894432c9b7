//! Links to the other nodes of a room that spans nodes: the media that crosses them, sealed,
//! on the media port, and the room messages that the control plane carries between them.
//!
//! The control plane opens a link on both nodes with the same [`LinkSpec`]: the room, the other
//! node's media address and a fresh key for this link alone. The core (see
//! `crate::core::relay`) decides what crosses: every packet of every local publication once per
//! link, and [`RelayMessage`]s about the room, which go out as [`Event::Relay`] and come in as
//! [`Command::Relayed`](super::Command::Relayed).
//!
//! A relayed packet is one datagram to the other node's media port, sealed with AES-256-GCM:
//!
//! ```text
//! 0       1          9           17                                     end
//! | 0x0c | link id  | counter   | sealed: publisher, SSRC, sequence      | tag (16) |
//! |      | (u64 BE) | (u64 BE)  | number, timestamp, flags, level, payload|          |
//! ```
//!
//! The first byte is one that no protocol of the media port uses (RFC 7983 leaves 4-15 free),
//! so relayed packets never reach a participant's connection. The receiver takes a packet only
//! from the address the control plane named, only if it opens with the link's key, and only
//! once (a window of the last 64 counters).
//!
//! The key the control plane gives stays the same when a link is opened again between the same
//! two node processes, so it never seals anything itself. Each opening, each end picks 16
//! random bytes and tells the other ([`RelayMessage::Hello`], through the control plane); each
//! direction seals with a key derived from the given key and both ends' bytes, the sender's
//! first. A counter therefore never repeats under a key, whatever was sent before the link was
//! closed, and nothing recorded from an earlier opening opens under the new keys. Until the
//! other end's bytes have come, nothing is sent or taken.
//! The payload is the publisher's RTP payload as the node received it; headers are rewritten
//! per subscriber on the receiving node as on the sending one. A frame with the NACK flag
//! carries no packet but asks for packets of one stream again (its sequence number is the
//! first, its payload how many), which the sender answers from what it keeps (see
//! `super::repair`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use tracing::debug;

use super::repair::{Arrival, Arrivals, History, MAX_GAP};
use super::{Event, Node, Traffic, Transmit};
use crate::core::{LinkId, PeerId, RelayMessage};

/// The first byte of every relayed datagram.
pub const RELAY_MARKER: u8 = 0x0c;
/// Marker, link id and counter.
const HEADER_LEN: usize = 17;
/// Publisher, SSRC, sequence number, timestamp, flags and audio level.
const FRAME_HEADER_LEN: usize = 20;
const TAG_LEN: usize = 16;
const FLAG_MARKER: u8 = 1;
const FLAG_LEVEL: u8 = 2;
/// A frame that asks for packets again rather than carrying one.
const FLAG_NACK: u8 = 4;

/// A link as the control plane opens it on both of its nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The link's id, the same on both nodes.
    pub link: LinkId,
    /// The room's key, `tenant/name`.
    pub room: String,
    /// The other node's media address.
    pub address: SocketAddr,
    /// The link's key, the same on both nodes.
    pub key: [u8; 32],
    /// Whether this node is the link's first end (the other one is not).
    pub first: bool,
    /// The other node's id.
    pub peer_node: String,
}

impl std::fmt::Debug for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSpec")
            .field("link", &self.link)
            .field("room", &self.room)
            .field("address", &self.address)
            .field("first", &self.first)
            .field("peer_node", &self.peer_node)
            .finish_non_exhaustive()
    }
}

/// One packet of a publisher, as the hot path forwards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Media {
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// Its RTP sequence number.
    pub sequence_number: u16,
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// The RTP marker bit.
    pub marker: bool,
    /// The audio level header extension's byte (RFC 6464), if it carried one.
    pub audio_level: Option<u8>,
}

/// A link's state on this node.
pub(super) struct Link {
    room: String,
    peer_node: String,
    address: SocketAddr,
    /// The key as given, to tell a link opened again with the same key from a new one.
    given: [u8; 32],
    /// This end's random bytes of this opening.
    own: [u8; 16],
    /// The other end's, once they came.
    peer: Option<[u8; 16]>,
    /// The keys to seal and to open with, once both ends' bytes are known.
    keys: Option<(LessSafeKey, LessSafeKey)>,
    first: bool,
    /// The counter of the last packet sent.
    sent: u64,
    received: ReplayWindow,
    /// Packets sent and taken, over every opening.
    packets_out: u64,
    taken: u64,
    /// Packets sent again because the other end asked.
    resent: u64,
    /// What was relayed last, to send again when asked.
    history: History,
    /// The streams that come over the link, to find what it lost.
    arrivals: Arrivals,
}

/// What a relayed frame carries.
#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    /// One packet of a publisher of the other node (its id there).
    Media {
        publisher: u64,
        media: Media,
        payload: &'a [u8],
    },
    /// A request for `count` packets of a publisher of this node (its id here) again, from
    /// `first` on.
    Nack {
        publisher: u64,
        ssrc: u32,
        first: u16,
        count: u16,
    },
}

/// The key one direction of a link seals with: from the given key and the sender's and the
/// receiver's random bytes, in that order.
fn direction_key(given: &[u8; 32], sender: &[u8; 16], receiver: &[u8; 16]) -> LessSafeKey {
    let mut input = b"treffpunkt link direction v1\0".to_vec();
    input.extend_from_slice(sender);
    input.extend_from_slice(receiver);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, given), &input);
    let key = UnboundKey::new(&AES_256_GCM, &tag.as_ref()[..32])
        .expect("an HMAC-SHA256 tag is a valid AES-256 key");
    LessSafeKey::new(key)
}

/// Which of the last 64 counters arrived: each is taken once.
#[derive(Debug, Default)]
struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `n` is the counter `highest - n`.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `counter` is new; it is recorded as seen.
    fn take(&mut self, counter: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(counter);
            self.seen = 1;
            return true;
        };
        if counter > highest {
            let shift = counter - highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = Some(counter);
            return true;
        }
        let back = highest - counter;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

fn nonce(first_end: bool, counter: u64) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[0] = if first_end { 1 } else { 2 };
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Why a relayed datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayDrop {
    /// Too short, or no link of that id.
    Malformed,
    /// The other end's random bytes have not come yet.
    NotReady,
    /// From another address than the link's other node.
    WrongAddress,
    /// It did not open with the link's key.
    Forged,
    /// Its counter came before.
    Replayed,
}

impl Link {
    fn new(spec: &LinkSpec, own: [u8; 16]) -> Self {
        Self {
            room: spec.room.clone(),
            peer_node: spec.peer_node.clone(),
            address: spec.address,
            given: spec.key,
            own,
            peer: None,
            keys: None,
            first: spec.first,
            sent: 0,
            received: ReplayWindow::default(),
            packets_out: 0,
            taken: 0,
            resent: 0,
            history: History::default(),
            arrivals: Arrivals::default(),
        }
    }

    /// The other end's random bytes of its opening came: the keys are made anew. Returns
    /// whether they are new to this end (so that it tells its own again: the other end may
    /// have opened after this one's were sent).
    fn hello(&mut self, peer: [u8; 16]) -> bool {
        if self.peer == Some(peer) {
            return false;
        }
        self.peer = Some(peer);
        self.keys = Some((
            direction_key(&self.given, &self.own, &peer),
            direction_key(&self.given, &peer, &self.own),
        ));
        self.sent = 0;
        self.received = ReplayWindow::default();
        self.arrivals.clear();
        true
    }

    /// Seals one packet for the other node; nothing before the keys are made.
    fn seal(&mut self, link: LinkId, publisher: PeerId, media: &Media, payload: &[u8]) -> BytesMut {
        let sealed = self.seal_frame(link, publisher.0, media, 0, payload);
        self.packets_out += u64::from(!sealed.is_empty());
        sealed
    }

    /// Seals a request for `count` packets of the other node's `publisher`'s stream `ssrc`
    /// again, from `first` on.
    fn seal_nack(
        &mut self,
        link: LinkId,
        publisher: u64,
        ssrc: u32,
        first: u16,
        count: u16,
    ) -> BytesMut {
        let asked = Media {
            ssrc,
            sequence_number: first,
            timestamp: 0,
            marker: false,
            audio_level: None,
        };
        self.seal_frame(link, publisher, &asked, FLAG_NACK, &count.to_be_bytes())
    }

    fn seal_frame(
        &mut self,
        link: LinkId,
        publisher: u64,
        media: &Media,
        mut flags: u8,
        payload: &[u8],
    ) -> BytesMut {
        let Some((seal, _)) = &self.keys else {
            return BytesMut::new();
        };
        self.sent += 1;
        let mut datagram =
            BytesMut::with_capacity(HEADER_LEN + FRAME_HEADER_LEN + payload.len() + TAG_LEN);
        datagram.extend_from_slice(&[RELAY_MARKER]);
        datagram.extend_from_slice(&link.0.to_be_bytes());
        datagram.extend_from_slice(&self.sent.to_be_bytes());
        datagram.extend_from_slice(&publisher.to_be_bytes());
        datagram.extend_from_slice(&media.ssrc.to_be_bytes());
        datagram.extend_from_slice(&media.sequence_number.to_be_bytes());
        datagram.extend_from_slice(&media.timestamp.to_be_bytes());
        if media.marker {
            flags |= FLAG_MARKER;
        }
        if media.audio_level.is_some() {
            flags |= FLAG_LEVEL;
        }
        datagram.extend_from_slice(&[flags, media.audio_level.unwrap_or(0)]);
        datagram.extend_from_slice(payload);
        let (header, frame) = datagram.split_at_mut(HEADER_LEN);
        let tag = seal.seal_in_place_separate_tag(
            nonce(self.first, self.sent),
            Aad::from(&*header),
            frame,
        );
        match tag {
            Ok(tag) => datagram.extend_from_slice(tag.as_ref()),
            // Sealing fails only past the cipher's length limit, far above any datagram.
            Err(_) => datagram.clear(),
        }
        datagram
    }

    /// Opens a datagram from the other node, in place.
    fn open<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Frame<'a>, RelayDrop> {
        if from != self.address {
            return Err(RelayDrop::WrongAddress);
        }
        let (_, open) = self.keys.as_ref().ok_or(RelayDrop::NotReady)?;
        let counter = read_u64(datagram, 9).ok_or(RelayDrop::Malformed)?;
        let (header, sealed) = datagram.split_at_mut(HEADER_LEN);
        let frame = open
            .open_in_place(nonce(!self.first, counter), Aad::from(&*header), sealed)
            .map_err(|_| RelayDrop::Forged)?;
        if frame.len() < FRAME_HEADER_LEN {
            return Err(RelayDrop::Malformed);
        }
        if !self.received.take(counter) {
            return Err(RelayDrop::Replayed);
        }
        let frame: &'a [u8] = frame;
        let publisher = read_u64(frame, 0).ok_or(RelayDrop::Malformed)?;
        let flags = frame[18];
        let media = Media {
            ssrc: u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]),
            sequence_number: u16::from_be_bytes([frame[12], frame[13]]),
            timestamp: u32::from_be_bytes([frame[14], frame[15], frame[16], frame[17]]),
            marker: flags & FLAG_MARKER != 0,
            audio_level: (flags & FLAG_LEVEL != 0).then_some(frame[19]),
        };
        let payload = &frame[FRAME_HEADER_LEN..];
        if flags & FLAG_NACK == 0 {
            return Ok(Frame::Media {
                publisher,
                media,
                payload,
            });
        }
        let count: [u8; 2] = payload.try_into().map_err(|_| RelayDrop::Malformed)?;
        Ok(Frame::Nack {
            publisher,
            ssrc: media.ssrc,
            first: media.sequence_number,
            count: u16::from_be_bytes(count).min(MAX_GAP),
        })
    }

    /// Sends again what the other end asked for and this end still keeps; how many packets.
    fn resend(
        &mut self,
        link: LinkId,
        (publisher, ssrc, first, count): (u64, u32, u16, u16),
        traffic: &mut Traffic,
        transmits: &mut VecDeque<Transmit>,
    ) -> u64 {
        let mut resent = 0;
        for offset in 0..count {
            let sequence_number = first.wrapping_add(offset);
            let Some(kept) = self.history.find(publisher, ssrc, sequence_number).cloned() else {
                continue;
            };
            let contents = self.seal(link, kept.publisher, &kept.media, &kept.payload);
            if contents.is_empty() {
                continue;
            }
            resent += 1;
            queue(traffic, transmits, self.address, contents);
        }
        self.resent += resent;
        resent
    }
}

/// Queues a datagram for the other end of a link, counted in the node's traffic.
fn queue(
    traffic: &mut Traffic,
    transmits: &mut VecDeque<Transmit>,
    destination: SocketAddr,
    contents: BytesMut,
) {
    traffic.packets_out += 1;
    traffic.bytes_out += contents.len() as u64;
    transmits.push_back(Transmit {
        destination,
        tcp: false,
        contents,
    });
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl Node {
    /// Opens a link of a room to another node. Opened again (every control-plane replica
    /// opens the links of the rooms it admits to), it stays as it is; with a new key or
    /// address it starts over with new random bytes (and so new keys once the other end's
    /// come), keeping what the core knows.
    pub(super) fn open_link(&mut self, spec: LinkSpec) {
        if let Some(link) = self.links.get(&spec.link)
            && link.given == spec.key
            && link.address == spec.address
            && link.room == spec.room
        {
            return;
        }
        let own = treffpunkt_proto::random::bytes();
        debug!(link = spec.link.0, room = %spec.room, address = %spec.address, "link open");
        self.links.insert(spec.link, Link::new(&spec, own));
        // Before anything of the room, so that the other end can open what follows.
        self.relay_event(spec.link, RelayMessage::Hello { nonce: own });
        self.core.open_link(spec.link, &spec.room);
    }

    /// Closes a link: the participants that came over it are adrift here (see the core's
    /// `moving`): they leave unless they come back within its grace.
    pub(super) fn close_link(&mut self, now: Instant, link: LinkId) {
        if self.links.remove(&link).is_some() {
            debug!(link = link.0, "link closed");
        }
        self.core.close_link(now, link);
    }

    /// A message from the other end of a link, carried by the control plane: the other end's
    /// random bytes for this link's keys, or something about the room for the core.
    pub(super) fn relayed(&mut self, now: Instant, link: LinkId, message: RelayMessage) {
        if let RelayMessage::Hello { nonce } = message {
            let Some(state) = self.links.get_mut(&link) else {
                return;
            };
            if !state.hello(nonce) {
                return;
            }
            let own = state.own;
            self.relay_event(link, RelayMessage::Hello { nonce: own });
            return;
        }
        self.core.relayed(now, link, message);
    }

    /// A datagram that starts with [`RELAY_MARKER`]: a packet from another node of a room,
    /// forwarded to the subscribers here. Returns why it was dropped, if it was.
    pub(super) fn on_relay_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), RelayDrop> {
        let link = LinkId(read_u64(datagram, 1).ok_or(RelayDrop::Malformed)?);
        if datagram.len() < HEADER_LEN + FRAME_HEADER_LEN + TAG_LEN {
            return Err(RelayDrop::Malformed);
        }
        let state = self.links.get_mut(&link).ok_or(RelayDrop::Malformed)?;
        let mut buffer = std::mem::take(&mut self.relay_buffer);
        buffer.clear();
        buffer.extend_from_slice(datagram);
        let result = match state.open(from, &mut buffer) {
            Ok(Frame::Media {
                publisher,
                media,
                payload,
            }) => {
                state.taken += 1;
                self.traffic.relayed_in += 1;
                let arrival = state
                    .arrivals
                    .arrive(publisher, media.ssrc, media.sequence_number);
                if let Arrival::New {
                    missed: Some((first, count)),
                } = arrival
                {
                    let contents = state.seal_nack(link, publisher, media.ssrc, first, count);
                    if !contents.is_empty() {
                        queue(
                            &mut self.traffic,
                            &mut self.transmits,
                            state.address,
                            contents,
                        );
                    }
                }
                // A packet that came twice was forwarded the first time.
                if arrival != Arrival::Again
                    && let Some(publisher) = self.core.remote_peer(link, publisher)
                {
                    let payload = Bytes::copy_from_slice(payload);
                    self.forward_packet(now, publisher, &media, &payload);
                }
                Ok(())
            }
            Ok(Frame::Nack {
                publisher,
                ssrc,
                first,
                count,
            }) => {
                let asked = (publisher, ssrc, first, count);
                let resent = state.resend(link, asked, &mut self.traffic, &mut self.transmits);
                self.traffic.relayed_out += resent;
                Ok(())
            }
            Err(drop) => Err(drop),
        };
        self.relay_buffer = buffer;
        result
    }

    /// Sends one packet of a local publisher to every link the core names for it, and keeps
    /// it there for a while in case the other end asks for it again.
    pub(super) fn relay_media(&mut self, publisher: PeerId, media: &Media, payload: &Bytes) {
        for link in self.core.relay_links(publisher, media.ssrc) {
            let Some(state) = self.links.get_mut(&link) else {
                continue;
            };
            let contents = state.seal(link, publisher, media, payload);
            if contents.is_empty() {
                continue;
            }
            state.history.keep(publisher, media, payload);
            self.traffic.relayed_out += 1;
            queue(
                &mut self.traffic,
                &mut self.transmits,
                state.address,
                contents,
            );
        }
    }

    /// What crossed each link, for the node's status.
    pub fn link_status(&self) -> Vec<crate::status::LinkStatus> {
        let mut links: Vec<crate::status::LinkStatus> = self
            .links
            .values()
            .map(|link| crate::status::LinkStatus {
                room: link.room.clone(),
                peer_node: link.peer_node.clone(),
                packets_out: link.packets_out,
                packets_in: link.taken,
                packets_resent: link.resent,
            })
            .collect();
        links.sort_by(|a, b| (&a.room, &a.peer_node).cmp(&(&b.room, &b.peer_node)));
        links
    }

    /// Tells the control plane to carry a message to the other end of a link.
    pub(super) fn relay_event(&mut self, link: LinkId, message: RelayMessage) {
        if let Some(state) = self.links.get(&link) {
            let (room, to_node) = (state.room.clone(), state.peer_node.clone());
            self.event(Event::Relay {
                link,
                room,
                to_node,
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(first: bool) -> LinkSpec {
        LinkSpec {
            link: LinkId(7),
            room: "club/board".into(),
            address: if first {
                "127.0.0.1:2000".parse().unwrap()
            } else {
                "127.0.0.1:1000".parse().unwrap()
            },
            key: [9; 32],
            first,
            peer_node: "other".into(),
        }
    }

    fn media() -> Media {
        Media {
            ssrc: 1234,
            sequence_number: 65535,
            timestamp: 90_000,
            marker: true,
            audio_level: Some(0x85),
        }
    }

    /// The two ends of a link, each with the other's random bytes.
    fn pair() -> (Link, Link) {
        let (mut one, mut two) = (
            Link::new(&spec(true), [1; 16]),
            Link::new(&spec(false), [2; 16]),
        );
        assert!(one.hello(two.own) && two.hello(one.own));
        assert!(!one.hello(two.own), "the same bytes again change nothing");
        (one, two)
    }

    #[test]
    fn a_packet_sealed_at_one_end_opens_at_the_other_once() {
        let (mut one, mut two) = pair();
        let mut datagram = one.seal(LinkId(7), PeerId(3), &media(), b"frame").to_vec();
        assert_eq!(datagram[0], RELAY_MARKER);
        let copy = datagram.clone();
        let from = "127.0.0.1:1000".parse().unwrap();
        assert_eq!(
            two.open(from, &mut datagram).unwrap(),
            Frame::Media {
                publisher: 3,
                media: media(),
                payload: b"frame"
            }
        );
        assert_eq!(
            two.open(from, &mut copy.clone()).unwrap_err(),
            RelayDrop::Replayed
        );
        // Its own packets do not open at the sender: the two directions differ.
        let mut own = one.seal(LinkId(7), PeerId(3), &media(), b"x").to_vec();
        one.address = from;
        assert_eq!(one.open(from, &mut own).unwrap_err(), RelayDrop::Forged);
    }

    #[test]
    fn nothing_crosses_before_both_ends_spoke_and_nothing_of_an_earlier_opening_after() {
        let mut lonely = Link::new(&spec(true), [1; 16]);
        assert!(
            lonely
                .seal(LinkId(7), PeerId(3), &media(), b"frame")
                .is_empty()
        );
        let from = "127.0.0.1:1000".parse().unwrap();
        let (mut one, mut two) = pair();
        let mut recorded = one.seal(LinkId(7), PeerId(3), &media(), b"frame").to_vec();
        // The link is closed and opened again: the same given key, new random bytes, the
        // counters from the start.
        let (mut one, mut two_again) = (
            Link::new(&spec(true), [3; 16]),
            Link::new(&spec(false), [4; 16]),
        );
        one.hello(two_again.own);
        two_again.hello(one.own);
        let mut fresh = one.seal(LinkId(7), PeerId(3), &media(), b"frame").to_vec();
        assert_eq!(fresh[9..17], recorded[9..17], "the counter starts over");
        assert_ne!(fresh, recorded, "under other keys");
        assert_eq!(
            two_again.open(from, &mut recorded).unwrap_err(),
            RelayDrop::Forged,
            "what was recorded before does not open"
        );
        assert!(two_again.open(from, &mut fresh).is_ok());
        let mut unknown = Link::new(&spec(false), [5; 16]);
        assert_eq!(
            unknown.open(from, &mut fresh.clone()).unwrap_err(),
            RelayDrop::NotReady
        );
        let _ = two.hello([9; 16]);
    }

    #[test]
    fn a_changed_forged_or_misaddressed_packet_is_dropped() {
        let (mut one, mut two) = pair();
        let from = "127.0.0.1:1000".parse().unwrap();
        let datagram = one.seal(LinkId(7), PeerId(3), &media(), b"frame").to_vec();
        for at in [1, 12, 20, datagram.len() - 1] {
            let mut changed = datagram.clone();
            changed[at] ^= 1;
            assert_eq!(
                two.open(from, &mut changed).unwrap_err(),
                RelayDrop::Forged,
                "byte {at}"
            );
        }
        let mut other = spec(true);
        other.key = [1; 32];
        let mut stranger_link = Link::new(&other, [1; 16]);
        stranger_link.hello([2; 16]);
        let mut forged = stranger_link
            .seal(LinkId(7), PeerId(3), &media(), b"frame")
            .to_vec();
        assert_eq!(two.open(from, &mut forged).unwrap_err(), RelayDrop::Forged);
        let stranger = "127.0.0.1:1001".parse().unwrap();
        assert_eq!(
            two.open(stranger, &mut datagram.clone()).unwrap_err(),
            RelayDrop::WrongAddress
        );
        assert_eq!(
            two.open(from, &mut datagram[..10].to_vec()).unwrap_err(),
            RelayDrop::Malformed
        );
    }

    #[test]
    fn a_lost_packet_is_asked_for_and_sent_again_from_what_the_sender_keeps() {
        let (mut one, mut two) = pair();
        let (at_one, at_two) = (
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:2000".parse().unwrap(),
        );
        let payload = Bytes::from_static(b"frame");
        for sequence_number in [10, 11] {
            let media = Media {
                sequence_number,
                ..media()
            };
            one.seal(LinkId(7), PeerId(3), &media, &payload);
            one.history.keep(PeerId(3), &media, &payload);
        }
        let mut nack = two.seal_nack(LinkId(7), 3, 1234, 10, 40).to_vec();
        let asked = one.open(at_two, &mut nack).unwrap();
        assert_eq!(
            asked,
            Frame::Nack {
                publisher: 3,
                ssrc: 1234,
                first: 10,
                count: MAX_GAP
            },
            "no more than the widest gap is asked for"
        );
        let (mut traffic, mut transmits) = (Traffic::default(), VecDeque::new());
        assert_eq!(
            one.resend(LinkId(7), (3, 1234, 10, 3), &mut traffic, &mut transmits),
            2
        );
        assert_eq!(traffic.packets_out, 2);
        let mut again = transmits.pop_front().unwrap().contents.to_vec();
        assert!(matches!(
            two.open(at_one, &mut again).unwrap(),
            Frame::Media { publisher: 3, media, payload: b"frame" } if media.sequence_number == 10
        ));
        assert_eq!(
            one.resend(LinkId(7), (4, 1234, 10, 3), &mut traffic, &mut transmits),
            0,
            "nothing of a publisher that did not send"
        );
        let mut short = two
            .seal_frame(LinkId(7), 3, &media(), FLAG_NACK, b"x")
            .to_vec();
        assert_eq!(
            one.open(at_two, &mut short).unwrap_err(),
            RelayDrop::Malformed
        );
    }

    #[test]
    fn the_replay_window_takes_late_packets_once_and_forgets_old_ones() {
        let mut window = ReplayWindow::default();
        assert!(window.take(10));
        assert!(window.take(12));
        assert!(window.take(11), "late, within the window");
        assert!(!window.take(11));
        assert!(window.take(200));
        assert!(!window.take(12), "older than the window");
        assert!(window.take(199));
    }
}
