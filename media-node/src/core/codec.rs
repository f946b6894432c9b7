//! What the forwarder needs to know about codecs: which kind a track is, and whether a packet
//! starts a keyframe, read from the payload itself (the publisher does not tell).

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus.
    Audio,
    /// VP8 or H.264.
    Video,
}

/// The codecs the node forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus audio.
    Opus,
    /// VP8 video.
    Vp8,
    /// H.264 video.
    H264,
}

impl Codec {
    /// Recognises a codec by its MIME type (`video/VP8`, case-insensitive).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let mime = mime.to_ascii_lowercase();
        match mime.as_str() {
            "audio/opus" => Some(Self::Opus),
            "video/vp8" => Some(Self::Vp8),
            "video/h264" => Some(Self::H264),
            _ => None,
        }
    }

    /// Its MIME type, as [`Self::from_mime`] reads it.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Opus => "audio/opus",
            Self::Vp8 => "video/VP8",
            Self::H264 => "video/H264",
        }
    }

    /// Audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Self::Opus => MediaKind::Audio,
            Self::Vp8 | Self::H264 => MediaKind::Video,
        }
    }

    /// Whether `payload` is the first packet of a keyframe. Audio is always decodable.
    /// Malformed payloads are simply not keyframes.
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Self::Opus => true,
            Self::Vp8 => super::vp8::parse(payload).is_some_and(|d| d.keyframe),
            Self::H264 => h264_starts_keyframe(payload),
        }
    }
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184: a keyframe starts with an SPS or an IDR slice, alone, aggregated (STAP-A) or as
/// the first fragment (FU-A).
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
    match header & 0x1f {
        H264_STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if is_key(rest[2] & 0x1f) {
                    return true;
                }
                let Some(next) = rest.get(2 + size..) else {
                    return false;
                };
                rest = next;
            }
            false
        }
        H264_FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        single => is_key(single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_recognised_with_and_without_extensions() {
        // S=1, PID=0, then a payload header with P=0.
        assert!(Codec::Vp8.starts_keyframe(&[0x10, 0x00]));
        assert!(
            !Codec::Vp8.starts_keyframe(&[0x10, 0x01]),
            "P=1 is an inter frame"
        );
        assert!(
            !Codec::Vp8.starts_keyframe(&[0x00, 0x00]),
            "not the start of a partition"
        );
        // X=1, I=1 with a 15-bit picture id, then the header.
        assert!(Codec::Vp8.starts_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(
            !Codec::Vp8.starts_keyframe(&[0x90, 0x80, 0x81]),
            "truncated"
        );
        assert!(!Codec::Vp8.starts_keyframe(&[]));
    }

    #[test]
    fn h264_keyframes_are_recognised_in_every_packetisation() {
        assert!(Codec::H264.starts_keyframe(&[0x65, 0x88]), "IDR slice");
        assert!(Codec::H264.starts_keyframe(&[0x67, 0x42]), "SPS");
        assert!(!Codec::H264.starts_keyframe(&[0x41, 0x9a]), "non-IDR slice");
        // STAP-A holding a 2-byte SEI (type 6), then an SPS.
        assert!(Codec::H264.starts_keyframe(&[0x78, 0, 2, 0x06, 0xff, 0, 2, 0x67, 0x42]));
        assert!(
            !Codec::H264.starts_keyframe(&[0x78, 0, 200, 0x06]),
            "sizes beyond the end"
        );
        // FU-A start of an IDR, and a middle fragment.
        assert!(Codec::H264.starts_keyframe(&[0x7c, 0x85, 0x00]));
        assert!(!Codec::H264.starts_keyframe(&[0x7c, 0x05, 0x00]));
    }

    #[test]
    fn codecs_are_found_by_mime_type() {
        assert_eq!(Codec::from_mime("video/VP8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("audio/opus"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/AV1"), None);
    }
}
