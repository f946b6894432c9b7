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

/// The payload of one synthetic packet, `size` bytes long (at least the header).
pub fn payload(stamp: &Stamp, size: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(size.max(64));
    if stamp.kind == Kind::Video {
        out.put_u8(0x10); // VP8: S=1, partition 0
        out.put_u8(if stamp.keyframe { 0x00 } else { 0x01 });
    }
    out.put_slice(MAGIC);
    out.put_u8(stamp.kind.code());
    out.put_u32(stamp.index);
    out.put_u64(stamp.sent_at_us);
    out.put_u16(size.min(usize::from(u16::MAX)) as u16);
    let source = stamp.source.as_bytes();
    out.put_u8(source.len().min(255) as u8);
    out.put_slice(&source[..source.len().min(255)]);
    let rest = size.saturating_sub(out.len());
    out.extend(filler(stamp.index, rest));
    out.freeze()
}

/// Reads a synthetic packet and checks it byte for byte (its length is part of it); `None`
/// when it is not one, or not intact.
pub fn verify(kind: Kind, data: &[u8]) -> Option<Stamp> {
    let (keyframe, body) = match kind {
        Kind::Video => (*data.get(1)? & 0x01 == 0, data.get(2..)?),
        Kind::Audio => (false, data),
    };
    if body.get(..4)? != MAGIC || *body.get(4)? != kind.code() {
        return None;
    }
    let index = u32::from_be_bytes(body.get(5..9)?.try_into().ok()?);
    let sent_at_us = u64::from_be_bytes(body.get(9..17)?.try_into().ok()?);
    let source_len = usize::from(*body.get(19)?);
    let source = std::str::from_utf8(body.get(20..20 + source_len)?)
        .ok()?
        .to_owned();
    let stamp = Stamp {
        source,
        kind,
        index,
        sent_at_us,
        keyframe,
    };
    (payload(&stamp, data.len()) == data).then_some(stamp)
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
}
