//! Synthetic media that proves itself: every packet says who sent it, what it is, which layer,
//! its index and when it was sent, followed by filler derived from the index. A receiver
//! regenerates the packet from those fields and compares byte for byte, so a packet that was
//! altered, cut or delivered to the wrong stream is caught.
//!
//! Video packets are VP8-shaped as the node reads them (RFC 7741): every packet starts with an
//! extended payload descriptor (X=1) carrying a 15-bit picture id (I=1, M=1), a TL0PICIDX (L=1)
//! and a TID byte (T=1); the first packet of a frame (S=1) continues with the VP8 payload
//! header, whose lowest bit is 0 for a keyframe, and on a keyframe with the start code
//! `9d 01 2a` and the picture's width and height, from which the node learns each simulcast
//! layer's height. When the node moves a subscriber between layers it rewrites the picture id
//! and TL0PICIDX so that they run on without a jump, so a receiver reads those two fields
//! instead of checking them.

use bytes::{BufMut, Bytes, BytesMut};

/// Marks a synthetic payload.
const MAGIC: &[u8; 4] = b"TRFP";

/// The VP8 payload descriptor's first byte: X=1, N=0, S as given, PID=0.
const DESCRIPTOR_START: u8 = 0x90;
const DESCRIPTOR_CONTINUE: u8 = 0x80;
/// Its extension byte: I=1 (picture id), L=1 (TL0PICIDX), T=1 (TID byte), K=0.
const DESCRIPTOR_EXTENSIONS: u8 = 0xe0;
/// The TID byte: temporal layer 0, layer sync (Y=1).
const TID_BYTE: u8 = 0x20;
/// The descriptor's length: first byte, extension byte, two of picture id, TL0PICIDX, TID.
const DESCRIPTOR_LEN: usize = 6;
/// The VP8 frame tag of a keyframe (lowest bit 0) and of an interframe (lowest bit 1), both
/// shown; the first partition's size is not meaningful here.
const KEYFRAME_TAG: [u8; 3] = [0x10, 0x02, 0x00];
const INTERFRAME_TAG: [u8; 3] = [0x11, 0x02, 0x00];
/// What follows the frame tag in a keyframe before its width and height.
const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

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
    /// The simulcast layer it belongs to, lowest 0 (0 for everything without simulcast).
    pub layer: u8,
    /// The packet's index in its stream (its layer's, for video), from 0.
    pub index: u32,
    /// When it was sent, in microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Whether it belongs to a keyframe (video).
    pub keyframe: bool,
}

/// The VP8 fields of a video packet that are not part of its [`Stamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Fields {
    /// The picture id, 15 bits.
    pub picture_id: u16,
    /// The TL0PICIDX.
    pub tl0_picture_index: u8,
    /// Whether this is the first packet of its frame (the descriptor's S bit).
    pub starts_frame: bool,
    /// The picture's width and height, written into a keyframe's first packet.
    pub size: (u16, u16),
}

impl Default for Vp8Fields {
    fn default() -> Self {
        Self {
            picture_id: 0,
            tl0_picture_index: 0,
            starts_frame: true,
            size: (640, 360),
        }
    }
}

/// The bytes after a packet's header, derived from its layer and index: a packet relabelled
/// with another layer or index no longer matches.
fn filler(layer: u8, index: u32, len: usize) -> impl Iterator<Item = u8> {
    let seed = index.wrapping_add(u32::from(layer).wrapping_mul(0x9e37_79b9));
    (0..len).map(move |i| (seed as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
}

/// The longest header a synthetic packet has: VP8 descriptor, frame tag, start code and size,
/// then magic, kind, layer, flags, index, send time, length, and a source id of up to 255
/// bytes.
const MAX_HEADER: usize = DESCRIPTOR_LEN + 3 + 3 + 4 + 4 + 1 + 1 + 1 + 4 + 8 + 2 + 1 + 255;

/// The stamp's flags byte: keyframe.
const FLAG_KEYFRAME: u8 = 0x01;

/// Everything a packet's header says.
struct Fields<'a> {
    kind: Kind,
    source: &'a str,
    layer: u8,
    index: u32,
    sent_at_us: u64,
    keyframe: bool,
    /// For video.
    vp8: Vp8Fields,
    /// The whole packet's length.
    size: usize,
}

/// Writes the header of a packet (everything before the filler) into `out`; returns its length.
fn header(out: &mut [u8; MAX_HEADER], fields: &Fields<'_>) -> usize {
    let Fields {
        kind,
        source,
        layer,
        index,
        sent_at_us,
        keyframe,
        vp8,
        size,
    } = *fields;
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if kind == Kind::Video {
        let picture_id = vp8.picture_id & 0x7fff;
        put(&[
            if vp8.starts_frame {
                DESCRIPTOR_START
            } else {
                DESCRIPTOR_CONTINUE
            },
            DESCRIPTOR_EXTENSIONS,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            vp8.tl0_picture_index,
            TID_BYTE,
        ]);
        if vp8.starts_frame {
            if keyframe {
                put(&KEYFRAME_TAG);
                put(&START_CODE);
                let (width, height) = vp8.size;
                // 14 bits each; the top two bits (scaling) stay 0.
                put(&(width & 0x3fff).to_le_bytes());
                put(&(height & 0x3fff).to_le_bytes());
            } else {
                put(&INTERFRAME_TAG);
            }
        }
    }
    put(MAGIC);
    put(&[kind.code(), layer, if keyframe { FLAG_KEYFRAME } else { 0 }]);
    put(&index.to_be_bytes());
    put(&sent_at_us.to_be_bytes());
    put(&(size.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    let source = &source.as_bytes()[..source.len().min(255)];
    put(&[source.len() as u8]);
    put(source);
    at
}

/// The payload of one synthetic packet, `size` bytes long (at least the header). For video it
/// is the first packet of a frame with [`Vp8Fields::default`].
pub fn payload(stamp: &Stamp, size: usize) -> Bytes {
    payload_part(stamp, size, &Vp8Fields::default())
}

/// The payload of one synthetic packet, `size` bytes long (at least the header); for video,
/// `vp8` gives the fields of the VP8 descriptor and header (ignored for audio).
pub fn payload_part(stamp: &Stamp, size: usize, vp8: &Vp8Fields) -> Bytes {
    let mut head = [0u8; MAX_HEADER];
    let len = header(
        &mut head,
        &Fields {
            kind: stamp.kind,
            source: &stamp.source,
            layer: stamp.layer,
            index: stamp.index,
            sent_at_us: stamp.sent_at_us,
            keyframe: stamp.keyframe,
            vp8: *vp8,
            size,
        },
    );
    let mut out = BytesMut::with_capacity(size.max(len));
    out.put_slice(&head[..len]);
    out.extend(filler(stamp.layer, stamp.index, size.saturating_sub(len)));
    out.freeze()
}

/// What an intact packet says of itself, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampRef<'a> {
    /// The sending participant's id.
    pub source: &'a str,
    /// The simulcast layer it was sent on.
    pub layer: u8,
    /// The packet's index in its stream.
    pub index: u32,
    /// When it was sent, in microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Whether it belongs to a keyframe (video).
    pub keyframe: bool,
    /// The VP8 fields as they arrived (video); picture id and TL0PICIDX may have been
    /// rewritten by the node.
    pub vp8: Option<Vp8Fields>,
}

/// Reads the VP8 part of a video packet: its fields, whether it starts a keyframe (for a first
/// packet) and where the stamp begins.
fn read_vp8(data: &[u8]) -> Option<(Vp8Fields, Option<bool>, usize)> {
    let descriptor = data.get(..DESCRIPTOR_LEN)?;
    let starts_frame = match descriptor[0] {
        DESCRIPTOR_START => true,
        DESCRIPTOR_CONTINUE => false,
        _ => return None,
    };
    if descriptor[1] != DESCRIPTOR_EXTENSIONS || descriptor[2] & 0x80 == 0 {
        return None;
    }
    let mut fields = Vp8Fields {
        picture_id: u16::from(descriptor[2] & 0x7f) << 8 | u16::from(descriptor[3]),
        tl0_picture_index: descriptor[4],
        starts_frame,
        size: Vp8Fields::default().size,
    };
    if !starts_frame {
        return Some((fields, None, DESCRIPTOR_LEN));
    }
    let keyframe = *data.get(DESCRIPTOR_LEN)? & 0x01 == 0;
    if !keyframe {
        return Some((fields, Some(false), DESCRIPTOR_LEN + 3));
    }
    let size = data.get(DESCRIPTOR_LEN + 6..DESCRIPTOR_LEN + 10)?;
    fields.size = (
        u16::from_le_bytes([size[0], size[1]]),
        u16::from_le_bytes([size[2], size[3]]),
    );
    Some((fields, Some(true), DESCRIPTOR_LEN + 10))
}

/// Reads a synthetic packet and checks it byte for byte without allocating, as receivers do
/// for every packet; `None` when it is not one, or not intact.
pub fn check(kind: Kind, data: &[u8]) -> Option<StampRef<'_>> {
    let (vp8, starts_keyframe, body) = match kind {
        Kind::Video => {
            let (fields, keyframe, at) = read_vp8(data)?;
            (Some(fields), keyframe, data.get(at..)?)
        }
        Kind::Audio => (None, None, data),
    };
    if body.get(..4)? != MAGIC || *body.get(4)? != kind.code() {
        return None;
    }
    let layer = *body.get(5)?;
    let keyframe = *body.get(6)? & FLAG_KEYFRAME != 0;
    if starts_keyframe.is_some_and(|starts| starts != keyframe) {
        return None;
    }
    let index = u32::from_be_bytes(body.get(7..11)?.try_into().ok()?);
    let sent_at_us = u64::from_be_bytes(body.get(11..19)?.try_into().ok()?);
    let source_len = usize::from(*body.get(21)?);
    let source = std::str::from_utf8(body.get(22..22 + source_len)?).ok()?;
    let mut head = [0u8; MAX_HEADER];
    let len = header(
        &mut head,
        &Fields {
            kind,
            source,
            layer,
            index,
            sent_at_us,
            keyframe,
            vp8: vp8.unwrap_or_default(),
            size: data.len(),
        },
    );
    let intact = data.get(..len)? == &head[..len]
        && data[len..]
            .iter()
            .copied()
            .eq(filler(layer, index, data.len() - len));
    intact.then_some(StampRef {
        source,
        layer,
        index,
        sent_at_us,
        keyframe,
        vp8,
    })
}

/// Reads a synthetic packet and checks it byte for byte (its length is part of it); `None`
/// when it is not one, or not intact.
pub fn verify(kind: Kind, data: &[u8]) -> Option<Stamp> {
    check(kind, data).map(|stamp| Stamp {
        source: stamp.source.to_owned(),
        kind,
        layer: stamp.layer,
        index: stamp.index,
        sent_at_us: stamp.sent_at_us,
        keyframe: stamp.keyframe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(index: u32, keyframe: bool) -> Stamp {
        Stamp {
            source: "p1".into(),
            kind: Kind::Video,
            layer: 2,
            index,
            sent_at_us: 1_700_000_000_000_000,
            keyframe,
        }
    }

    #[test]
    fn packets_verify_and_any_change_is_caught() {
        let stamp = video(42, true);
        let data = payload(&stamp, 1000);
        assert_eq!(data.len(), 1000);
        assert_eq!(verify(Kind::Video, &data), Some(stamp));
        let mut changed = data.to_vec();
        changed[500] ^= 1;
        assert_eq!(verify(Kind::Video, &changed), None);
        assert_eq!(verify(Kind::Video, &data[..999]), None);
        assert_eq!(verify(Kind::Audio, &data), None);
        let mut layer = data.to_vec();
        layer[DESCRIPTOR_LEN + 10 + 5] = 1;
        assert_eq!(verify(Kind::Video, &layer), None, "the layer is checked");
    }

    /// What the node's VP8 reader (media-node/src/core/vp8.rs) looks at, read here the same
    /// way: the descriptor, the keyframe bit and a keyframe's size.
    #[test]
    fn keyframes_carry_what_the_node_reads() {
        let vp8 = Vp8Fields {
            picture_id: 0x1234,
            tl0_picture_index: 9,
            starts_frame: true,
            size: (1280, 720),
        };
        let data = payload_part(&video(1, true), 1100, &vp8);
        assert_eq!(&data[..6], &[0x90, 0xe0, 0x92, 0x34, 9, 0x20]);
        assert_eq!(data[6] & 0x01, 0, "a keyframe's tag");
        assert_eq!(&data[9..12], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([data[12], data[13]]), 1280);
        assert_eq!(u16::from_le_bytes([data[14], data[15]]), 720);
        let interframe = payload_part(&video(2, false), 1100, &vp8);
        assert_eq!(interframe[6] & 0x01, 1);
        let stamp = check(Kind::Video, &data).expect("intact");
        assert_eq!(stamp.vp8, Some(vp8));
        assert_eq!(stamp.layer, 2);
    }

    #[test]
    fn rewritten_picture_ids_still_verify_and_later_packets_do_not_start_a_frame() {
        let stamp = video(7, true);
        let first = Vp8Fields {
            picture_id: 100,
            tl0_picture_index: 3,
            starts_frame: true,
            size: (320, 180),
        };
        let later = payload_part(
            &stamp,
            800,
            &Vp8Fields {
                starts_frame: false,
                ..first
            },
        );
        assert_eq!(later[0], 0x80, "S=0 after the first packet");
        assert_eq!(verify(Kind::Video, &later), Some(stamp.clone()));
        let mut rewritten = payload_part(&stamp, 800, &first).to_vec();
        rewritten[2] = 0x80 | 0x7f;
        rewritten[3] = 0xff;
        rewritten[4] = 200;
        let seen = check(Kind::Video, &rewritten).expect("the node may rewrite these");
        assert_eq!(
            seen.vp8.map(|v| (v.picture_id, v.tl0_picture_index)),
            Some((0x7fff, 200))
        );
        let mut short_id = rewritten.clone();
        short_id[2] = 0x7f;
        assert_eq!(
            check(Kind::Video, &short_id),
            None,
            "a 7-bit picture id is not ours"
        );
        let mut swapped = later.to_vec();
        swapped[0] = 0x90;
        assert_eq!(
            verify(Kind::Video, &swapped),
            None,
            "a packet that claims to start a frame needs its frame header"
        );
    }

    #[test]
    fn audio_checks_without_a_source_copy() {
        let stamp = Stamp {
            source: "speaker-1".into(),
            kind: Kind::Audio,
            layer: 0,
            index: 3,
            sent_at_us: 5,
            keyframe: false,
        };
        let data = payload(&stamp, 120);
        let seen = check(Kind::Audio, &data).expect("intact");
        assert_eq!(
            (seen.source, seen.index, seen.sent_at_us, seen.vp8),
            ("speaker-1", 3, 5, None)
        );
    }

    #[test]
    fn odd_payloads_do_not_panic() {
        let data = payload(&video(1, true), 300);
        for len in 0..data.len() {
            let _ = check(Kind::Video, &data[..len]);
            let _ = check(Kind::Audio, &data[..len]);
        }
    }
}
