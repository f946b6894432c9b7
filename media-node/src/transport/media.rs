//! What every connection of the node negotiates: codecs, RTCP feedback, header extensions and
//! the interceptor chain that answers for the node on each leg.
//!
//! Every connection is both a publisher leg (the participant sends to the node) and a subscriber
//! leg (the node sends the others to the participant), so every chain carries:
//!
//! - receiver reports and transport-wide congestion control feedback for what the participant
//!   sends; without them Chromium's send-side estimate collapses within seconds;
//! - NACK generation towards the participant and NACK answers from a send buffer, so that loss
//!   is repaired per hop;
//! - sender reports and the node's own transport-wide sequence numbers for what the node sends:
//!   each leg has its own sequence, the publisher's numbers are never passed on;
//! - congestion control on what the node sends: the subscriber's transport-wide feedback feeds
//!   its [`DownlinkEstimator`], whose estimate the core shares out among the videos, and video
//!   is paced to it with audio first ([`AudioFirstPacer`]);
//! - the mid and rid header extensions on video, so that a publisher's simulcast layers are told
//!   apart;
//! - a tap that hands subscribers' keyframe requests (PLI, FIR) to the node and drops the rest
//!   of the RTCP the chain has already acted on;
//! - a filter that keeps report blocks about simulcast layers out of the node's receiver
//!   reports ([`SimulcastReportFilter`] says why).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, NackGeneratorBuilder, Packet, Registry, Slot,
    StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::error::Error as RtcError;

use super::downlink::{DownlinkEstimator, EstimateCell};
use super::pacer::AudioFirstPacer;
use crate::core::Codec;

/// Opus, as browsers offer it: in-band FEC on. (DTX is the web client's request: `rtc` answers
/// with the offer's parameters, so the client adds `usedtx=1` to what it applies.)
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// H.264 constrained baseline, packetization mode 1: what every browser can decode.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// How often one lost packet is asked for again before it is given up.
const MAX_NACKS_PER_PACKET: u16 = 5;

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

/// The media engine and interceptor chain of one connection; its downlink estimate is published
/// into `estimate`.
pub fn media_setup(estimate: EstimateCell) -> Result<(MediaEngine, Registry), RtcError> {
    let mut engine = MediaEngine::default();
    for (codec, payload_type, kind) in [
        (Codec::Opus, 111, RtpCodecKind::Audio),
        (Codec::Vp8, 96, RtpCodecKind::Video),
        (Codec::H264, 102, RtpCodecKind::Video),
    ] {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: rtp_codec(codec),
                payload_type,
            },
            kind,
        )?;
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
    let registry = configure_nack(Registry::new(), &mut engine).with(
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
        .with(Slot::from(9_500), SimulcastReportFilter::default())
        .with(Slot::from(14_000), KeyframeTap::default());
    Ok((engine, registry))
}

/// Hands inbound keyframe requests (PLI, FIR) to the node and drops every other inbound RTCP
/// packet, which the interceptors wire-ward of it have already acted on. It sits last in the
/// chain so that it narrows down only what they have seen.
#[derive(Default)]
pub struct KeyframeTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|packet| is_keyframe_request(packet.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            message.message.packet = Packet::Rtcp(requests);
            message.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Leaves the report blocks about simulcast layers out of the node's receiver and sender
/// reports, so that browsers keep putting the mid and rid header extensions on every packet of
/// a layer.
///
/// `rtc` forgets which SSRC carries which rid whenever a connection is renegotiated: its
/// `start_rtp` rebuilds every simulcast receiver's codings with no SSRC, and only a packet that
/// carries mid and rid binds a layer again. A browser stops sending those two extensions once a
/// report block acknowledges the SSRC, so after the first renegotiation every layer would go
/// silent. Without the report blocks the extensions stay, at about ten bytes a packet; the
/// browser loses its per-layer loss figures, while its bandwidth estimate runs on transport-wide
/// feedback and is unaffected. Plain tracks, whose SSRCs the SDP declares, keep their reports.
///
/// It sits wire-ward of the report interceptors, so it sees the reports they write.
#[derive(Default)]
pub struct SimulcastReportFilter {
    /// The rid extension's id on each bound remote stream that negotiated it.
    rid_extension: HashMap<u32, u8>,
    /// SSRCs that arrived with a rid: simulcast layers.
    layers: HashSet<u32>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl SimulcastReportFilter {
    fn without_layers(&self, packet: &dyn rtc::rtcp::Packet) -> Option<Box<dyn rtc::rtcp::Packet>> {
        let any = packet.as_any();
        if let Some(report) = any.downcast_ref::<ReceiverReport>()
            && report.reports.iter().any(|r| self.layers.contains(&r.ssrc))
        {
            let mut report = report.clone();
            report.reports.retain(|r| !self.layers.contains(&r.ssrc));
            return Some(Box::new(report));
        }
        if let Some(report) = any.downcast_ref::<SenderReport>()
            && report.reports.iter().any(|r| self.layers.contains(&r.ssrc))
        {
            let mut report = report.clone();
            report.reports.retain(|r| !self.layers.contains(&r.ssrc));
            return Some(Box::new(report));
        }
        None
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SimulcastReportFilter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &message.message.packet {
            let ssrc = packet.header.ssrc;
            if !self.layers.contains(&ssrc)
                && let Some(id) = self.rid_extension.get(&ssrc)
                && packet.header.get_extension(*id).is_some()
            {
                self.layers.insert(ssrc);
            }
        }
        self.reads.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if !self.layers.is_empty()
            && let Packet::Rtcp(packets) = &mut message.message.packet
        {
            for packet in packets.iter_mut() {
                if let Some(filtered) = self.without_layers(packet.as_ref()) {
                    *packet = filtered;
                }
            }
        }
        self.writes.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for SimulcastReportFilter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(id) = info
            .rtp_header_extensions
            .iter()
            .find(|extension| extension.uri == SDES_RTP_STREAM_ID_URI)
            .and_then(|extension| u8::try_from(extension.id).ok())
        {
            self.rid_extension.insert(info.ssrc, id);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.rid_extension.remove(&info.ssrc);
    }
}

/// The SSRCs a keyframe request names: the down-tracks a subscriber wants a keyframe on.
pub fn keyframe_request_ssrcs(
    packets: &[Box<dyn rtc::rtcp::Packet>],
) -> impl Iterator<Item = u32> + '_ {
    packets.iter().flat_map(|packet| {
        let any = packet.as_any();
        let mut ssrcs = Vec::new();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|entry| entry.ssrc));
        }
        ssrcs
    })
}
