//! What every connection of the node negotiates: codecs, RTCP feedback, header extensions and
//! the interceptor chain that answers for the node on each leg.
//!
//! Every connection is both a publisher leg (the participant sends to the node) and a subscriber
//! leg (the node sends the others to the participant), so every chain carries:
//!
//! - receiver reports and transport-wide congestion control feedback for what the participant
//!   sends; without them Chromium's send-side estimate collapses within seconds;
//! - NACK generation towards the participant, and NACK answers from what each stream sent in
//!   the last second ([`Retransmissions`]), so that loss is repaired per hop: to a subscriber
//!   as RTX (RFC 4588) where it took the format the node offers ([`rtx_parameters`]), from a
//!   publisher as the packet again (the node answers no RTX: `rtc` 0.21 drops the RTX of
//!   simulcast layers), which SRTP takes up to [`SRTP_REPLAY_WINDOW`] packets late and which
//!   only the profile the node agrees to makes safe ([`SRTP_PROFILES`]);
//! - sender reports and the node's own transport-wide sequence numbers for what the node sends:
//!   each leg has its own sequence, the publisher's numbers are never passed on;
//! - congestion control on what the node sends: the subscriber's transport-wide feedback feeds
//!   its [`DownlinkEstimator`], whose estimate the core shares out among the videos, and video
//!   is paced to it with audio first ([`AudioFirstPacer`]);
//! - the mid and rid header extensions on video, so that a publisher's simulcast layers are told
//!   apart;
//! - a tap that hands subscribers' keyframe requests (PLI, FIR) to the node and drops the rest
//!   of the RTCP the chain has already acted on ([`KeyframeRequests`]);
//! - a tap, wire-most, that counts what authenticated and keeps report blocks about simulcast
//!   layers out of the node's receiver reports ([`WireTap`] says why).

use std::time::Duration;

use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{CongestionControlBuilder, NackGeneratorBuilder, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::error::Error as RtcError;

use super::interceptors::{self, Arrivals, KeyframeRequests, WireTap};
use super::retransmission::{Repairs, Retransmissions};
use crate::congestion::{AudioFirstPacer, DownlinkEstimator, EstimateCell};
use crate::core::{Codec, MediaKind};

/// Opus, as browsers offer it: in-band FEC on. (DTX is the web client's request: `rtc` answers
/// with the offer's parameters, so the client adds `usedtx=1` to what it applies.)
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// H.264 constrained baseline, packetization mode 1: what every browser can decode.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// How often one lost packet is asked for again before it is given up.
const MAX_NACKS_PER_PACKET: u16 = 5;

/// How far behind the newest packet of a stream an SRTP packet may arrive and still be taken,
/// in packets: as in browsers. The node negotiates no RTX, so a publisher repairs its loss by
/// sending the packet again under its own sequence number, a round trip and more after it; with
/// `rtc`'s 64 a repair of a stream of 2,000 packets a second came 32 ms too late to be taken.
pub const SRTP_REPLAY_WINDOW: usize = 1_024;

/// The SRTP protection profiles the node agrees to: AES counter mode with a 80-bit HMAC-SHA1
/// tag, which every browser offers (RFC 8827 makes it mandatory), and not AES-GCM, whatever the
/// other side prefers.
///
/// Without RTX a repair is the packet again under its SSRC and sequence number, so under the
/// same SRTP packet index, and its header differs from the original's (the leg's transport-wide
/// sequence number is new: `rtc`'s chain stamps each packet it sends, browsers do the same).
/// Publishers repair so, since the node answers them no RTX, and so does the node towards a
/// subscriber that did not take RTX.
/// Under AES-GCM the index is the nonce, and two different messages sealed under one nonce let
/// whoever records both work out the authentication key (GCM's "forbidden attack"); from then
/// on, someone on the path can alter any packet of that direction without its being noticed.
/// Under counter mode the same index gives the same key stream over the same payload, so the
/// repair's encrypted payload is the original's and nothing is revealed; the HMAC covers the
/// new header.
pub const SRTP_PROFILES: [SrtpProtectionProfile; 1] =
    [SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80];

/// The RTP codec description of a forwarded codec, as the node registers it. Its RTCP feedback
/// is registered separately, together with the interceptors that act on it.
pub fn rtp_codec(codec: Codec) -> RTCRtpCodec {
    let (mime_type, clock_rate, channels, fmtp) = match codec {
        Codec::Opus => (MIME_TYPE_OPUS, 48_000, 2, OPUS_FMTP),
        Codec::Vp8 => (MIME_TYPE_VP8, 90_000, 0, ""),
        Codec::H264 => (MIME_TYPE_H264, 90_000, 0, H264_FMTP),
    };
    RTCRtpCodec {
        mime_type: mime_type.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: Vec::new(),
    }
}

/// The payload type the node registers a forwarded codec under (and the clients of the tests
/// too, so that an RTX format's `apt` names their codec).
pub fn payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::Opus => 111,
        Codec::Vp8 => 96,
        Codec::H264 => 102,
    }
}

/// A forwarded codec as the node registers it, with its payload type.
pub fn codec_parameters(codec: Codec) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: rtp_codec(codec),
        payload_type: payload_type(codec),
    }
}

/// The RTX format (RFC 4588) that carries repairs of a video codec's packets to subscribers: the
/// payload type after the codec's. Audio has none: the node does not repair audio.
pub fn rtx_parameters(codec: Codec) -> Option<RTCRtpCodecParameters> {
    (codec.kind() == MediaKind::Video).then(|| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_RTX.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={}", payload_type(codec)),
            rtcp_feedback: Vec::new(),
        },
        payload_type: payload_type(codec) + 1,
    })
}

/// The media engine and interceptor chain of one connection; its downlink estimate is published
/// into `estimate`, what authenticated is counted into `arrivals`, and what it sent again into
/// `repairs`.
pub fn media_setup(
    estimate: EstimateCell,
    arrivals: Arrivals,
    repairs: Repairs,
) -> Result<(MediaEngine, Registry), RtcError> {
    let mut engine = MediaEngine::default();
    for codec in [Codec::Opus, Codec::Vp8, Codec::H264] {
        let kind = match codec.kind() {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        engine.register_codec(codec_parameters(codec), kind)?;
        if let Some(rtx) = rtx_parameters(codec) {
            engine.register_codec(rtx, kind)?;
        }
    }
    for (uri, kind) in [
        (SDES_MID_URI, RtpCodecKind::Audio),
        (SDES_MID_URI, RtpCodecKind::Video),
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (SDES_RTP_STREAM_ID_URI, RtpCodecKind::Video),
    ] {
        engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    // Full intra requests are how some browsers ask for keyframes; nack, pli and transport-cc
    // feedback come with the interceptors below.
    engine.register_feedback(
        RTCPFeedback {
            typ: "ccm".to_owned(),
            parameter: "fir".to_owned(),
        },
        RtpCodecKind::Video,
    );
    let registry = configure_nack(Registry::new(), &mut engine)
        .with(Slot::NackResponder, Retransmissions::counting_into(repairs))
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_interval(Duration::from_millis(100))
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        );
    let registry = configure_twcc(registry, &mut engine)?
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(DownlinkEstimator::new(estimate.clone())).build(),
        )
        .with(Slot::Pacer, AudioFirstPacer::new(estimate));
    let registry = configure_rtcp_reports(registry)
        .with(
            Slot::from(interceptors::KEYFRAME_REQUESTS_SLOT),
            KeyframeRequests::default(),
        )
        .with(
            Slot::from(interceptors::WIRE_TAP_SLOT),
            WireTap::new(arrivals),
        );
    Ok((engine, registry))
}
