//! The VP8 payload descriptor (RFC 7741) as far as forwarding needs it: is this the start of a
//! keyframe, how large is that keyframe, and where are the picture id and TL0PICIDX, so that a
//! subscriber switching between simulcast layers sees one continuous sequence of them.

/// What a VP8 payload says about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// The picture id and whether it has 15 bits (else 7).
    pub picture_id: Option<(u16, bool)>,
    /// Where the picture id starts in the payload.
    picture_id_at: usize,
    /// The TL0PICIDX, if present.
    pub tl0_picture_index: Option<u8>,
    tl0_at: usize,
    /// Whether the payload starts a keyframe.
    pub keyframe: bool,
    /// The keyframe's width and height, when it starts one and the header is complete.
    pub dimensions: Option<(u16, u16)>,
}

/// Reads the descriptor of a VP8 payload; `None` for a payload too short to be VP8.
pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let mut descriptor = Vp8Descriptor::default();
    let mut offset = 1;
    if extended {
        let bits = *payload.get(1)?;
        offset = 2;
        if bits & 0x80 != 0 {
            let high = *payload.get(offset)?;
            descriptor.picture_id_at = offset;
            if high & 0x80 != 0 {
                let low = *payload.get(offset + 1)?;
                descriptor.picture_id = Some((u16::from(high & 0x7f) << 8 | u16::from(low), true));
                offset += 2;
            } else {
                descriptor.picture_id = Some((u16::from(high), false));
                offset += 1;
            }
        }
        if bits & 0x40 != 0 {
            descriptor.tl0_picture_index = Some(*payload.get(offset)?);
            descriptor.tl0_at = offset;
            offset += 1;
        }
        if bits & 0x30 != 0 {
            offset += 1;
        }
    }
    if start && partition == 0 {
        let header = payload.get(offset..)?;
        // The frame tag's lowest bit is 0 for a keyframe.
        descriptor.keyframe = header.first().is_some_and(|tag| tag & 0x01 == 0);
        // A keyframe's tag (3 bytes) is followed by the start code and the dimensions.
        if descriptor.keyframe && header.get(3..6) == Some(&[0x9d, 0x01, 0x2a]) {
            let size = header.get(6..10)?;
            let width = u16::from_le_bytes([size[0], size[1]]) & 0x3fff;
            let height = u16::from_le_bytes([size[2], size[3]]) & 0x3fff;
            descriptor.dimensions = Some((width, height));
        }
    }
    Some(descriptor)
}

/// Writes a new picture id and TL0PICIDX into a payload whose descriptor is `descriptor`. A 7-bit
/// picture id stays 7 bits wide.
pub fn rewrite(
    payload: &mut [u8],
    descriptor: &Vp8Descriptor,
    picture_id: Option<u16>,
    tl0: Option<u8>,
) {
    if let (Some((_, wide)), Some(id)) = (descriptor.picture_id, picture_id) {
        let at = descriptor.picture_id_at;
        if wide && at + 1 < payload.len() {
            payload[at] = 0x80 | ((id >> 8) as u8 & 0x7f);
            payload[at + 1] = id as u8;
        } else if !wide && at < payload.len() {
            payload[at] = id as u8 & 0x7f;
        }
    }
    if let (Some(_), Some(index)) = (descriptor.tl0_picture_index, tl0)
        && descriptor.tl0_at < payload.len()
    {
        payload[descriptor.tl0_at] = index;
    }
}

#[cfg(any(test, feature = "testing"))]
/// A VP8 payload for tests: descriptor with a 15-bit picture id and TL0PICIDX, then the frame header.
pub(crate) fn test_payload(
    picture_id: u16,
    tl0: u8,
    start: bool,
    keyframe: bool,
    height: u16,
    len: usize,
) -> Vec<u8> {
    let mut payload = vec![
        0x80 | if start { 0x10 } else { 0 },
        0xc0,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        tl0,
    ];
    if start {
        payload.push(if keyframe { 0x00 } else { 0x01 });
        payload.extend_from_slice(&[0x00, 0x00]);
        if keyframe {
            let width = height * 16 / 9;
            payload.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            payload.extend_from_slice(&width.to_le_bytes());
            payload.extend_from_slice(&height.to_le_bytes());
        }
    }
    payload.resize(len.max(payload.len()), 0);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyframe as Chromium sends it: X=1, S=1; I=1, L=1, T=1; 15-bit picture id; TL0PICIDX;
    /// TID byte; frame tag; start code; 640x360.
    fn keyframe(picture_id: u16, tl0: u8) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x20,
            0x10,
            0x02,
            0x00,
            0x9d,
            0x01,
            0x2a,
            0x80,
            0x02,
            0x68,
            0x01,
        ]
    }

    #[test]
    fn a_chromium_keyframe_is_read_whole() {
        let descriptor = parse(&keyframe(0x1234, 7)).unwrap();
        assert!(descriptor.keyframe);
        assert_eq!(descriptor.picture_id, Some((0x1234, true)));
        assert_eq!(descriptor.tl0_picture_index, Some(7));
        assert_eq!(descriptor.dimensions, Some((640, 360)));
    }

    #[test]
    fn picture_id_and_tl0_are_rewritten_in_place() {
        let mut payload = keyframe(0x1234, 7);
        let descriptor = parse(&payload).unwrap();
        rewrite(&mut payload, &descriptor, Some(0x0042), Some(9));
        let again = parse(&payload).unwrap();
        assert_eq!(again.picture_id, Some((0x0042, true)));
        assert_eq!(again.tl0_picture_index, Some(9));
        assert_eq!(again.dimensions, Some((640, 360)), "the rest is untouched");
    }

    #[test]
    fn truncated_and_odd_payloads_do_not_panic() {
        for len in 0..16 {
            let payload = &keyframe(0x1234, 7)[..len];
            let _ = parse(payload);
        }
        assert_eq!(parse(&[0x10, 0x01]).map(|d| d.keyframe), Some(false));
        assert_eq!(parse(&[0x10, 0x00]).map(|d| d.keyframe), Some(true));
    }
}
