//! What a synthetic participant sends, in full: Opus-sized audio packets (by default 50 a
//! second; a longer frame sends fewer, and a silent microphone in DTX one in 400 ms) with an
//! audio level, and VP8-shaped video: frames at a frame rate, sized for a bitrate, keyframes
//! larger than the frames between them, each frame cut into packets of at most an MTU's
//! payload, in one layer or in three simulcast layers.
//!
//! [`crate::Publish`] is the simple form the tests use (one packet per frame); it converts into
//! an [`Outgoing`] that sends exactly what it always did.

use crate::Publish;

/// The smallest packet sent: room for a synthetic packet's header and a source id.
pub const MIN_PACKET_SIZE: usize = 64;

/// The most simulcast layers a video track has.
pub const MAX_LAYERS: usize = 3;

/// RFC 6464's level of silence (-127 dBov).
pub const SILENCE: u8 = 127;

/// What a participant publishes; `None` for a track it does not send.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outgoing {
    /// Its microphone.
    pub audio: Option<OutgoingAudio>,
    /// Its camera.
    pub video: Option<OutgoingVideo>,
}

/// The audio frame browsers send: 20 ms of Opus in a packet.
pub const AUDIO_FRAME_MS: u32 = 20;

/// How often Opus in discontinuous transmission (DTX) sends a packet while the microphone is
/// silent.
pub const DTX_INTERVAL_MS: u32 = 400;

/// An Opus-sized audio track: one packet every [`OutgoingAudio::frame_ms`].
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingAudio {
    /// Payload bytes per packet.
    pub packet_size: usize,
    /// The audio level every packet carries at first (RFC 6464: 0 is the loudest, 127
    /// silence); [`crate::Participant::set_audio_level`] changes it while sending.
    pub level: u8,
    /// Milliseconds of sound in one packet ([`AUDIO_FRAME_MS`] as browsers send it; Opus
    /// allows up to 120).
    pub frame_ms: u32,
    /// Discontinuous transmission: while the level is [`SILENCE`], one packet every
    /// [`DTX_INTERVAL_MS`] instead of one every frame, as Opus with DTX sends.
    pub dtx: bool,
}

/// A VP8-shaped video track.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingVideo {
    /// Frames per second.
    pub fps: u32,
    /// Payload bits per second on average, keyframes included (RTP and SRTP overhead not
    /// counted); with simulcast, the bitrate of the full-resolution layer.
    pub bitrate: u64,
    /// Every how many frames a keyframe is sent (and the first frame of a connection).
    pub keyframe_interval: u32,
    /// How many times larger a keyframe is than the frames between keyframes (1: same size).
    pub keyframe_ratio: u32,
    /// The largest payload of one packet; a frame is cut into as few equal packets as fit.
    pub max_packet_size: usize,
    /// Send three simulcast layers instead of one, as a browser sends its camera: see
    /// [`SIMULCAST`] for their rids, sizes and bitrates.
    pub simulcast: bool,
}

/// One layer of a video track as it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoLayer {
    /// Its rid (`a=rid`, and the rid header extension on every packet); `None` for a track
    /// without simulcast.
    pub rid: Option<&'static str>,
    /// The picture's width, written into keyframes.
    pub width: u16,
    /// The picture's height, written into keyframes: the node learns each layer's height from
    /// it.
    pub height: u16,
    /// Its payload bitrate as a fraction of the track's `bitrate`: `bitrate / divisor`.
    pub divisor: u64,
}

/// The simulcast layers, lowest first, as browsers send a 720p camera: a quarter of the
/// resolution at a tenth of the full layer's bitrate, half at a third, and the full picture.
/// For a 1.5 Mbit/s full layer that is 150k + 500k + 1.5M = 2.15 Mbit/s in all, close to what
/// Chromium allocates to its three layers.
pub const SIMULCAST: [VideoLayer; MAX_LAYERS] = [
    VideoLayer {
        rid: Some("q"),
        width: 320,
        height: 180,
        divisor: 10,
    },
    VideoLayer {
        rid: Some("h"),
        width: 640,
        height: 360,
        divisor: 3,
    },
    VideoLayer {
        rid: Some("f"),
        width: 1280,
        height: 720,
        divisor: 1,
    },
];

/// The one layer of a track without simulcast: a 360p picture at the whole bitrate.
pub const SINGLE: VideoLayer = VideoLayer {
    rid: None,
    width: 640,
    height: 360,
    divisor: 1,
};

impl From<&Publish> for Outgoing {
    fn from(publish: &Publish) -> Self {
        let fps = publish.video_fps.max(1);
        Self {
            audio: Some(OutgoingAudio {
                packet_size: publish.audio_packet_size,
                level: SILENCE,
                frame_ms: AUDIO_FRAME_MS,
                dtx: false,
            }),
            video: Some(OutgoingVideo {
                fps,
                bitrate: publish.video_packet_size as u64 * 8 * u64::from(fps),
                keyframe_interval: publish.keyframe_interval,
                keyframe_ratio: 1,
                max_packet_size: publish.video_packet_size,
                simulcast: false,
            }),
        }
    }
}

impl VideoLayer {
    /// The payload bitrate of this layer of `video`.
    pub fn bitrate(&self, video: &OutgoingVideo) -> u64 {
        video.bitrate / self.divisor.max(1)
    }
}

impl OutgoingVideo {
    /// The layers it sends, lowest first.
    pub fn layers(&self) -> &'static [VideoLayer] {
        if self.simulcast {
            &SIMULCAST
        } else {
            std::slice::from_ref(&SINGLE)
        }
    }

    /// What all layers together send, in payload bits per second.
    pub fn total_bitrate(&self) -> u64 {
        self.layers().iter().map(|layer| layer.bitrate(self)).sum()
    }

    /// The size of a frame between keyframes and of a keyframe, in bytes, such that the
    /// average over one keyframe interval is the bitrate.
    pub fn frame_sizes(&self) -> (usize, usize) {
        self.frame_sizes_at(self.bitrate)
    }

    /// [`Self::frame_sizes`] of a layer sent at `bitrate`.
    pub fn frame_sizes_at(&self, bitrate: u64) -> (usize, usize) {
        let fps = u64::from(self.fps.max(1));
        let interval = u64::from(self.keyframe_interval.max(1));
        let ratio = u64::from(self.keyframe_ratio.max(1));
        let average = bitrate / 8 / fps;
        // `interval` frames, one of them `ratio` times the size of the others.
        let delta = average * interval / (interval - 1 + ratio);
        (delta as usize, (delta * ratio) as usize)
    }

    /// The packet sizes of a frame of `size` bytes: as few as fit into the largest payload,
    /// as equal as can be (the first ones one byte larger), none below [`MIN_PACKET_SIZE`].
    pub fn packets_of(&self, size: usize) -> impl Iterator<Item = usize> + use<> {
        let size = size.max(MIN_PACKET_SIZE);
        let max = self.max_packet_size.max(MIN_PACKET_SIZE);
        let count = size.div_ceil(max);
        let (base, longer) = (size / count, size % count);
        (0..count).map(move |i| (base + usize::from(i < longer)).max(MIN_PACKET_SIZE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(bitrate: u64, fps: u32, interval: u32, ratio: u32, max: usize) -> OutgoingVideo {
        OutgoingVideo {
            fps,
            bitrate,
            keyframe_interval: interval,
            keyframe_ratio: ratio,
            max_packet_size: max,
            simulcast: false,
        }
    }

    #[test]
    fn the_simple_form_sends_one_packet_per_frame_as_before() {
        let publish = Publish::default();
        let outgoing = Outgoing::from(&publish);
        let video = outgoing.video.unwrap();
        assert_eq!(video.frame_sizes(), (1000, 1000));
        assert_eq!(video.packets_of(1000).collect::<Vec<_>>(), vec![1000]);
        assert_eq!(video.layers(), &[SINGLE]);
        let audio = outgoing.audio.unwrap();
        assert_eq!(audio.packet_size, publish.audio_packet_size);
        assert_eq!(audio.level, SILENCE, "silent unless told otherwise");
    }

    #[test]
    fn frames_average_to_the_bitrate_with_larger_keyframes() {
        // 600 kbit/s at 30 fps: 2,500 bytes a frame on average.
        let video = video(600_000, 30, 60, 5, 1100);
        let (delta, key) = video.frame_sizes();
        assert_eq!(key, delta * 5);
        let per_interval = delta * 59 + key;
        assert!(per_interval.abs_diff(2_500 * 60) < 64, "{per_interval}");
        let packets: Vec<usize> = video.packets_of(key).collect();
        assert_eq!(packets.iter().sum::<usize>(), key);
        assert!(packets.iter().all(|&p| p <= 1100));
        assert!(packets.iter().max().unwrap() - packets.iter().min().unwrap() <= 1);
    }

    #[test]
    fn tiny_frames_still_carry_a_header() {
        let video = video(8_000, 30, 30, 1, 1100);
        assert_eq!(
            video.packets_of(video.frame_sizes().0).collect::<Vec<_>>(),
            vec![64]
        );
    }

    #[test]
    fn simulcast_layers_are_a_tenth_a_third_and_all_of_the_bitrate() {
        let mut video = video(1_500_000, 30, 90, 3, 1100);
        video.simulcast = true;
        let rates: Vec<u64> = video.layers().iter().map(|l| l.bitrate(&video)).collect();
        assert_eq!(rates, vec![150_000, 500_000, 1_500_000]);
        assert_eq!(video.total_bitrate(), 2_150_000);
        let heights: Vec<u16> = video.layers().iter().map(|l| l.height).collect();
        assert_eq!(
            heights,
            vec![180, 360, 720],
            "lowest first, as the node orders rids"
        );
        let rids: Vec<_> = video.layers().iter().map(|l| l.rid.unwrap()).collect();
        assert_eq!(rids, vec!["q", "h", "f"]);
    }
}
