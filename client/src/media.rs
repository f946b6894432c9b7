//! Synthetic media that proves itself: every packet says who sent it, what it is, its index
//! and when it was sent, followed by filler derived from the index. A receiver regenerates the
//! packet from those fields and compares byte for byte, so a packet that was altered, cut or
//! delivered to the wrong stream is caught.
//!
//! Video packets start like VP8 (payload descriptor with S=1, then a payload header whose
//! lowest bit says keyframe or not), so that the node's keyframe detection works on them.

use bytes::{BufMut, Bytes, BytesMut};

/// Marks a synthetic payload.
const MAGIC: &[u8; 4] = b"TRFP";

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Opus-sized packets, 50 per second.
    Audio,
    /// VP8-shaped packets.
    Video,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Audio => b'a',
            Self::Video => b'v',
        }
    }
}

/// What a synthetic packet says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sending participant's id.
    pub source: String,
    /// Audio or video.
    pub kind: Kind,
    /// The packet's index in its stream, from 0.
    pub index: u32,
    /// When it was sent, in microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Whether it starts a keyframe (video).
    pub keyframe: bool,
}

fn filler(index: u32, len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(move |i| (index as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
}

/// The longest header a synthetic packet has: VP8 descriptor and payload header, magic, kind,
/// index, send time, length, and a source id of up to 255 bytes.
const MAX_HEADER: usize = 2 + 4 + 1 + 4 + 8 + 2 + 1 + 255;

/// Everything a packet's header says.
struct Fields<'a> {
    kind: Kind,
    source: &'a str,
    index: u32,
    sent_at_us: u64,
    keyframe: bool,
    /// The VP8 descriptor's S bit: only the first packet of a frame has it.
    starts_frame: bool,
    /// The whole packet's length.
    size: usize,
}

/// Writes the header of a packet (everything before the filler) into `out`; returns its length.
fn header(out: &mut [u8; MAX_HEADER], fields: &Fields<'_>) -> usize {
    let Fields {
        kind,
        source,
        index,
        sent_at_us,
        keyframe,
        starts_frame,
        size,
    } = *fields;
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if kind == Kind::Video {
        // VP8: S=1 and partition 0 at the start of a frame; the next byte is then the payload
        // header, whose lowest bit is 0 for a keyframe. Later packets repeat that byte, which
        // the node ignores there (S=0).
        put(&[if starts_frame { 0x10 } else { 0x00 }]);
        put(&[if keyframe { 0x00 } else { 0x01 }]);
    }
    put(MAGIC);
    put(&[kind.code()]);
    put(&index.to_be_bytes());
    put(&sent_at_us.to_be_bytes());
    put(&(size.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    let source = &source.as_bytes()[..source.len().min(255)];
    put(&[source.len() as u8]);
    put(source);
    at
}

/// The payload of one synthetic packet, `size` bytes long (at least the header). For video it
/// is the first packet of a frame.
pub fn payload(stamp: &Stamp, size: usize) -> Bytes {
    payload_part(stamp, size, true)
}

/// The payload of one synthetic packet, `size` bytes long (at least the header); for video,
/// `starts_frame` says whether it is the first packet of its frame.
pub fn payload_part(stamp: &Stamp, size: usize, starts_frame: bool) -> Bytes {
    let mut head = [0u8; MAX_HEADER];
    let len = header(
        &mut head,
        &Fields {
            kind: stamp.kind,
            source: &stamp.source,
            index: stamp.index,
            sent_at_us: stamp.sent_at_us,
            keyframe: stamp.keyframe,
            starts_frame,
            size,
        },
    );
    let mut out = BytesMut::with_capacity(size.max(len));
    out.put_slice(&head[..len]);
    out.extend(filler(stamp.index, size.saturating_sub(len)));
    out.freeze()
}

/// What an intact packet says of itself, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampRef<'a> {
    /// The sending participant's id.
    pub source: &'a str,
    /// The packet's index in its stream.
    pub index: u32,
    /// When it was sent, in microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Whether it belongs to a keyframe (video).
    pub keyframe: bool,
}

/// Reads a synthetic packet and checks it byte for byte without allocating, as receivers do
/// for every packet; `None` when it is not one, or not intact.
pub fn check(kind: Kind, data: &[u8]) -> Option<StampRef<'_>> {
    let (keyframe, starts_frame, body) = match kind {
        Kind::Video => {
            let descriptor = *data.first()?;
            if descriptor != 0x10 && descriptor != 0x00 {
                return None;
            }
            (
                *data.get(1)? & 0x01 == 0,
                descriptor == 0x10,
                data.get(2..)?,
            )
        }
        Kind::Audio => (false, false, data),
    };
    if body.get(..4)? != MAGIC || *body.get(4)? != kind.code() {
        return None;
    }
    let index = u32::from_be_bytes(body.get(5..9)?.try_into().ok()?);
    let sent_at_us = u64::from_be_bytes(body.get(9..17)?.try_into().ok()?);
    let source_len = usize::from(*body.get(19)?);
    let source = std::str::from_utf8(body.get(20..20 + source_len)?).ok()?;
    let mut head = [0u8; MAX_HEADER];
    let len = header(
        &mut head,
        &Fields {
            kind,
            source,
            index,
            sent_at_us,
            keyframe,
            starts_frame,
            size: data.len(),
        },
    );
    let intact = data.get(..len)? == &head[..len]
        && data[len..]
            .iter()
            .copied()
            .eq(filler(index, data.len() - len));
    intact.then_some(StampRef {
        source,
        index,
        sent_at_us,
        keyframe,
    })
}

/// Reads a synthetic packet and checks it byte for byte (its length is part of it); `None`
/// when it is not one, or not intact.
pub fn verify(kind: Kind, data: &[u8]) -> Option<Stamp> {
    check(kind, data).map(|stamp| Stamp {
        source: stamp.source.to_owned(),
        kind,
        index: stamp.index,
        sent_at_us: stamp.sent_at_us,
        keyframe: stamp.keyframe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_verify_and_any_change_is_caught() {
        let stamp = Stamp {
            source: "p1".into(),
            kind: Kind::Video,
            index: 42,
            sent_at_us: 1_700_000_000_000_000,
            keyframe: true,
        };
        let data = payload(&stamp, 1000);
        assert_eq!(data.len(), 1000);
        assert_eq!(verify(Kind::Video, &data), Some(stamp));
        let mut changed = data.to_vec();
        changed[500] ^= 1;
        assert_eq!(verify(Kind::Video, &changed), None);
        assert_eq!(verify(Kind::Video, &data[..999]), None);
        assert_eq!(verify(Kind::Audio, &data), None);
    }

    #[test]
    fn later_packets_of_a_frame_verify_and_do_not_start_a_frame() {
        let stamp = Stamp {
            source: "p2".into(),
            kind: Kind::Video,
            index: 7,
            sent_at_us: 1_700_000_000_000_001,
            keyframe: true,
        };
        let first = payload_part(&stamp, 800, true);
        let later = payload_part(&stamp, 800, false);
        assert_eq!(first[0], 0x10, "S=1 on the first packet");
        assert_eq!(later[0], 0x00, "S=0 on the others");
        assert_eq!(verify(Kind::Video, &later), Some(stamp.clone()));
        let mut swapped = later.to_vec();
        swapped[0] = 0x10;
        assert_eq!(
            verify(Kind::Video, &swapped),
            Some(stamp),
            "either start bit is a packet"
        );
        swapped[0] = 0x90;
        assert_eq!(
            verify(Kind::Video, &swapped),
            None,
            "an extended descriptor is not ours"
        );
    }

    #[test]
    fn audio_checks_without_a_source_copy() {
        let stamp = Stamp {
            source: "speaker-1".into(),
            kind: Kind::Audio,
            index: 3,
            sent_at_us: 5,
            keyframe: false,
        };
        let data = payload(&stamp, 120);
        let seen = check(Kind::Audio, &data).expect("intact");
        assert_eq!(
            (seen.source, seen.index, seen.sent_at_us),
            ("speaker-1", 3, 5)
        );
    }
}
