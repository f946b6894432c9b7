//! What a synthetic participant sends, in full: Opus-sized audio packets, 50 a second, and
//! VP8-shaped video: frames at a frame rate, sized for a bitrate, keyframes larger than the
//! frames between them, each frame cut into packets of at most an MTU's payload.
//!
//! [`crate::Publish`] is the simple form the tests use (one packet per frame); it converts into
//! an [`Outgoing`] that sends exactly what it always did.

use crate::Publish;

/// The smallest packet sent: room for a synthetic packet's header and a source id.
pub const MIN_PACKET_SIZE: usize = 64;

/// What a participant publishes; `None` for a track it does not send.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outgoing {
    /// Its microphone.
    pub audio: Option<OutgoingAudio>,
    /// Its camera.
    pub video: Option<OutgoingVideo>,
}

/// An Opus-sized audio track: one packet every 20 ms.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingAudio {
    /// Payload bytes per packet.
    pub packet_size: usize,
}

/// A VP8-shaped video track.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingVideo {
    /// Frames per second.
    pub fps: u32,
    /// Payload bits per second on average, keyframes included (RTP and SRTP overhead not
    /// counted).
    pub bitrate: u64,
    /// Every how many frames a keyframe is sent (and the first frame of a connection).
    pub keyframe_interval: u32,
    /// How many times larger a keyframe is than the frames between keyframes (1: same size).
    pub keyframe_ratio: u32,
    /// The largest payload of one packet; a frame is cut into as few equal packets as fit.
    pub max_packet_size: usize,
    /// Send three simulcast layers instead of one.
    ///
    /// This is the hook for simulcast, which the media node does not negotiate yet: joining
    /// with it set fails with [`crate::Error::Unsupported`]. When the node supports it, the
    /// sender adds three encodings (rids `q`, `h`, `f` at a quarter, half and all of
    /// `bitrate`) to the video track, each with frames shaped as here and packets of their own
    /// index sequence, and receivers count whichever layer the node forwards them.
    pub simulcast: bool,
}

impl From<&Publish> for Outgoing {
    fn from(publish: &Publish) -> Self {
        let fps = publish.video_fps.max(1);
        Self {
            audio: Some(OutgoingAudio {
                packet_size: publish.audio_packet_size,
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

impl OutgoingVideo {
    /// The size of a frame between keyframes and of a keyframe, in bytes, such that the
    /// average over one keyframe interval is the bitrate.
    pub fn frame_sizes(&self) -> (usize, usize) {
        let fps = u64::from(self.fps.max(1));
        let interval = u64::from(self.keyframe_interval.max(1));
        let ratio = u64::from(self.keyframe_ratio.max(1));
        let average = self.bitrate / 8 / fps;
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
        assert_eq!(
            outgoing.audio.unwrap().packet_size,
            publish.audio_packet_size
        );
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
}
