//! The scenarios, modelled on LiveKit's published benchmark and scaled to a 2-core machine:
//!
//! - **audio room**: 10 speakers (audio only) and N listeners;
//! - **meeting**: N participants who all publish audio and video and see everyone;
//! - **livestream**: 1 publisher of audio and video, N viewers;
//! - **town meeting**: 10 participants with camera and microphone, N who watch and listen (a
//!   council session or a town meeting; not part of the default run);
//! - **fan-out**: 1 publisher of P video packets a second of S bytes each (every packet a frame
//!   of its own) and audio, N subscribers: the shape in which forwarders are compared packet for
//!   packet (`--fanout-rate`, `--fanout-payload`; not part of the default run). The audio is
//!   there because a viewer's downlink estimate grows only from the feedback on what reaches
//!   it: a video alone that needs more than the estimate's start never starts.
//!
//! Audio is 50 packets a second of a silent microphone by default. `--audio-frame-ms` sends
//! longer frames (fewer packets), `--audio-dtx` lets a silent microphone send as Opus's
//! discontinuous transmission does (a packet in 400 ms), and `--talking K` makes the first K
//! publishers talk: their packets carry a voice's level (and go every frame). A large meeting on
//! this small machine is measured that way: one talking and the others silent, as in a real one.
//!
//! Each ramps N up; [`crate::ramp`] runs them.

use treffpunkt_client::{Outgoing, OutgoingAudio, OutgoingVideo, SILENCE};

/// The audio level of a publisher who talks (RFC 6464: -30 dBov, a voice at a normal distance).
pub const TALKING_LEVEL: u8 = 30;

/// Speakers in the audio room.
pub const SPEAKERS: u32 = 10;

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 10 speakers (audio only), N listeners.
    AudioRoom,
    /// N × N: everyone publishes audio and video.
    Meeting,
    /// 1 publisher of audio and video, N viewers.
    Livestream,
    /// 10 publishers of audio and video, N who watch and listen.
    TownMeeting,
    /// 1 publisher of P video packets of S bytes a second and audio, N subscribers.
    Fanout,
}

/// What a scenario's participants send.
#[derive(Clone, Debug, PartialEq)]
pub struct Media {
    /// Opus-sized audio payload per packet.
    pub audio_packet_size: usize,
    /// Milliseconds of sound per audio packet (20: 50 packets a second).
    pub audio_frame_ms: u32,
    /// Silent microphones send as Opus in DTX does: a packet in 400 ms.
    pub audio_dtx: bool,
    /// How many publishers talk, the first to join; the others' microphones are silent.
    pub talking: u32,
    /// Video bitrate in the meeting, bit/s.
    pub meeting_bitrate: u64,
    /// Video bitrate of the livestream, bit/s.
    pub livestream_bitrate: u64,
    /// Frames per second.
    pub fps: u32,
    /// Seconds between keyframes.
    pub keyframe_seconds: u32,
    /// How many times larger a keyframe is than other frames.
    pub keyframe_ratio: u32,
    /// The largest payload of one packet.
    pub max_packet_size: usize,
    /// The camera in three simulcast layers: a tenth, a third and all of the bitrate, at a
    /// quarter, half and all of 720p.
    pub simulcast: bool,
    /// The fan-out's packets a second.
    pub fanout_rate: u32,
    /// The fan-out's payload of one packet, bytes.
    pub fanout_payload: usize,
}

/// Who is in the room at some N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Population {
    /// Participants publishing audio and video.
    pub video_publishers: u32,
    /// Participants publishing audio only.
    pub speakers: u32,
    /// Participants publishing nothing.
    pub listeners: u32,
}

impl Population {
    /// Everyone.
    pub fn total(&self) -> u32 {
        self.video_publishers + self.speakers + self.listeners
    }
}

/// A participant's part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Audio and video.
    VideoPublisher,
    /// Audio only.
    Speaker,
    /// Nothing sent.
    Listener,
}

impl Scenario {
    /// All three, in the order the benchmark runs them.
    pub const ALL: [Scenario; 3] = [Scenario::AudioRoom, Scenario::Meeting, Scenario::Livestream];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::AudioRoom => "audio-room",
            Self::Meeting => "meeting",
            Self::Livestream => "livestream",
            Self::TownMeeting => "town-meeting",
            Self::Fanout => "fanout",
        }
    }

    /// The values of N the benchmark ramps through on a 2-core machine, where the load
    /// generator shares the cores with the node.
    pub fn default_ramp(self) -> Vec<u32> {
        match self {
            Self::AudioRoom => vec![25, 50, 100, 150],
            Self::Meeting => vec![4, 8, 12, 16, 20, 24, 28],
            Self::Livestream => vec![25, 50, 100, 200, 300],
            Self::TownMeeting => vec![25, 50, 100, 200, 300],
            Self::Fanout => vec![10, 25],
        }
    }

    /// Who is in the room at `n`.
    pub fn population(self, n: u32) -> Population {
        match self {
            Self::AudioRoom => Population {
                video_publishers: 0,
                speakers: SPEAKERS,
                listeners: n,
            },
            Self::Meeting => Population {
                video_publishers: n,
                speakers: 0,
                listeners: 0,
            },
            Self::Livestream | Self::Fanout => Population {
                video_publishers: 1,
                speakers: 0,
                listeners: n,
            },
            Self::TownMeeting => Population {
                video_publishers: SPEAKERS,
                speakers: 0,
                listeners: n,
            },
        }
    }

    /// What N means and what is sent, in words.
    pub fn description(self, media: &Media) -> String {
        let video = |bitrate: u64| {
            let layers = if media.simulcast {
                format!(
                    " in three simulcast layers ({}, {} and {} kbit/s)",
                    bitrate / 10 / 1000,
                    bitrate / 3 / 1000,
                    bitrate / 1000
                )
            } else {
                String::new()
            };
            format!(
                "VP8-shaped video {} kbit/s{layers} at {} fps, keyframes every {} s",
                bitrate / 1000,
                media.fps,
                media.keyframe_seconds
            )
        };
        let mut audio = format!(
            "audio {} B × {}/s",
            media.audio_packet_size,
            1000 / media.audio_frame_ms.max(1)
        );
        if media.talking > 0 {
            audio += &format!(", {} talking", media.talking);
        }
        if media.audio_dtx {
            audio += ", silent ones in DTX";
        }
        match self {
            Self::AudioRoom => format!("{SPEAKERS} speakers ({audio}), N listeners"),
            Self::Meeting => format!(
                "N × N, everyone sends {audio} and {}",
                video(media.meeting_bitrate)
            ),
            Self::Livestream => format!(
                "1 publisher ({audio}, {}), N viewers",
                video(media.livestream_bitrate)
            ),
            Self::TownMeeting => format!(
                "{SPEAKERS} publishers ({audio}, {}), N who watch and listen",
                video(media.meeting_bitrate)
            ),
            Self::Fanout => format!(
                "1 publisher of {} video packets/s of {} B (a frame a packet) and {audio}, N subscribers",
                media.fanout_rate, media.fanout_payload
            ),
        }
    }

    /// What a participant in `role` sends; `talking` gives its audio a voice's level.
    pub fn outgoing(self, role: Role, media: &Media, talking: bool) -> Option<Outgoing> {
        let audio = Some(OutgoingAudio {
            packet_size: media.audio_packet_size,
            level: if talking { TALKING_LEVEL } else { SILENCE },
            frame_ms: media.audio_frame_ms,
            dtx: media.audio_dtx,
        });
        let video = |bitrate| OutgoingVideo {
            fps: media.fps,
            bitrate,
            keyframe_interval: media.fps.max(1) * media.keyframe_seconds.max(1),
            keyframe_ratio: media.keyframe_ratio,
            max_packet_size: media.max_packet_size,
            simulcast: media.simulcast,
        };
        let video = match self {
            Self::Livestream => video(media.livestream_bitrate),
            // Every packet a frame of its own, all of one size, one a second a keyframe.
            Self::Fanout => OutgoingVideo {
                fps: media.fanout_rate,
                bitrate: u64::from(media.fanout_rate) * media.fanout_payload as u64 * 8,
                keyframe_interval: media.fanout_rate.max(1),
                keyframe_ratio: 1,
                max_packet_size: media.fanout_payload,
                simulcast: false,
            },
            Self::AudioRoom | Self::Meeting | Self::TownMeeting => video(media.meeting_bitrate),
        };
        match role {
            Role::Listener => None,
            Role::Speaker => Some(Outgoing { audio, video: None }),
            Role::VideoPublisher => Some(Outgoing {
                audio,
                video: Some(video),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media() -> Media {
        Media {
            audio_packet_size: 120,
            audio_frame_ms: 20,
            audio_dtx: false,
            talking: 0,
            meeting_bitrate: 500_000,
            livestream_bitrate: 1_500_000,
            fps: 30,
            keyframe_seconds: 3,
            keyframe_ratio: 4,
            max_packet_size: 1100,
            simulcast: false,
            fanout_rate: 4000,
            fanout_payload: 1000,
        }
    }

    #[test]
    fn populations_follow_the_published_benchmark() {
        assert_eq!(Scenario::AudioRoom.population(50).total(), 60);
        assert_eq!(Scenario::Meeting.population(8).video_publishers, 8);
        let stream = Scenario::Livestream.population(100);
        assert_eq!((stream.video_publishers, stream.listeners), (1, 100));
        let town = Scenario::TownMeeting.population(290);
        assert_eq!((town.video_publishers, town.total()), (10, 300));
    }

    #[test]
    fn speakers_send_audio_only_and_viewers_nothing() {
        let speaker = Scenario::AudioRoom
            .outgoing(Role::Speaker, &media(), false)
            .unwrap();
        assert!(speaker.audio.is_some() && speaker.video.is_none());
        assert_eq!(
            Scenario::Livestream.outgoing(Role::Listener, &media(), false),
            None
        );
        let host = Scenario::Livestream
            .outgoing(Role::VideoPublisher, &media(), false)
            .unwrap();
        let video = host.video.unwrap();
        assert_eq!((video.bitrate, video.keyframe_interval), (1_500_000, 90));
    }

    #[test]
    fn who_talks_carries_a_voice_and_the_audio_frames_follow_the_settings() {
        let media = Media {
            audio_frame_ms: 60,
            audio_dtx: true,
            talking: 1,
            ..media()
        };
        let audio = |talking| {
            Scenario::TownMeeting
                .outgoing(Role::VideoPublisher, &media, talking)
                .and_then(|outgoing| outgoing.audio)
                .unwrap()
        };
        assert_eq!(
            (audio(true).level, audio(false).level),
            (TALKING_LEVEL, SILENCE)
        );
        assert_eq!((audio(false).frame_ms, audio(false).dtx), (60, true));
        assert!(
            Scenario::TownMeeting
                .description(&media)
                .contains("audio 120 B × 16/s, 1 talking, silent ones in DTX")
        );
    }

    #[test]
    fn the_fan_out_sends_its_packets_each_a_frame_of_its_own() {
        let publisher = Scenario::Fanout
            .outgoing(Role::VideoPublisher, &media(), false)
            .unwrap();
        assert!(publisher.audio.is_some());
        let video = publisher.video.unwrap();
        // Every frame is one packet of the payload's size: 4,000 of 1,000 B are 32 Mbit/s.
        assert_eq!((video.fps, video.max_packet_size), (4000, 1000));
        assert_eq!(video.bitrate / u64::from(video.fps) / 8, 1000);
        assert_eq!((video.keyframe_ratio, video.simulcast), (1, false));
        assert_eq!(
            Scenario::Fanout.outgoing(Role::Listener, &media(), false),
            None
        );
        assert_eq!(Scenario::Fanout.population(25).total(), 26);
    }
}
