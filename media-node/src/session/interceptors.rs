//! The node's own interceptors in each connection's `rtc` chain.
//!
//! - [`KeyframeRequests`]: in `rtc`, inbound RTCP stops at the end of the interceptor chain
//!   unless an interceptor marks it for the application. This one marks keyframe requests (PLI,
//!   FIR), last in the chain so that every other interceptor has seen all of the RTCP first, and
//!   drops the rest. The node reads subscribers' requests through it; the Rust test client reads
//!   the node's requests to its publishers through the same one.
//! - [`WireTap`], wire-most: counts the RTP and RTCP packets that arrive through SRTP, that is,
//!   that authenticated (the node's gate learns from it which SSRCs a client really sends on),
//!   and keeps report blocks about simulcast layers out of the node's RTCP reports, so that
//!   browsers keep tagging every packet with its layer.
//! - [`RtxUnwrap`]: turns a repair that came as RTX back into the packet it repairs before the
//!   NACK generator sees it. The Rust test client uses it, as a browser does this itself.
//!
//! Every packet a connection sends or receives is moved through each interceptor of its chain
//! (into the interceptor's queue and out again), so the node's own duties share as few
//! interceptors as their places in the chain allow.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI;
use rtc::shared::error::Error as RtcError;
use rustc_hash::{FxHashMap, FxHashSet};

/// Where [`KeyframeRequests`] goes in a chain: after every default interceptor.
pub const KEYFRAME_REQUESTS_SLOT: usize = 14_000;
/// Where [`WireTap`] goes: wire-most, so that it counts every packet SRTP let through before
/// any interceptor acts on it, and sees every report the interceptors write.
pub const WIRE_TAP_SLOT: usize = 500;

/// Hands inbound keyframe requests (PLI, FIR) to the application and drops every other inbound
/// RTCP packet, which the interceptors wire-ward of it have already acted on. It sits last in the
/// chain ([`KEYFRAME_REQUESTS_SLOT`]) so that it narrows down only what they have seen.
#[derive(Default)]
pub struct KeyframeRequests {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
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

impl Interceptor for KeyframeRequests {
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
/// It also counts what arrives into [`Arrivals`], and passes everything else on unchanged. It
/// sits wire-most ([`WIRE_TAP_SLOT`]), so it sees the reports the interceptors write.
pub struct WireTap {
    arrivals: Arrivals,
    /// The rid extension's id on each bound remote stream that negotiated it.
    rid_extension: FxHashMap<u32, u8>,
    /// SSRCs that arrived with a rid: simulcast layers.
    layers: FxHashSet<u32>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl WireTap {
    /// A tap that counts into `arrivals`.
    pub fn new(arrivals: Arrivals) -> Self {
        Self {
            arrivals,
            rid_extension: FxHashMap::default(),
            layers: FxHashSet::default(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

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

impl Protocol<TaggedPacket, TaggedPacket, ()> for WireTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.arrivals.0.fetch_add(1, Ordering::Relaxed);
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

impl Interceptor for WireTap {
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

/// Where [`RtxUnwrap`] goes: wire-ward of every interceptor that keeps track of what arrived.
pub const RTX_UNWRAP_SLOT: usize = 600;

/// Turns a packet that arrives on a stream's RTX stream (RFC 4588: its own SSRC and payload
/// type, the repaired packet's sequence number in front of its payload) back into the packet it
/// repairs, for the rest of the chain and the application.
///
/// `rtc` hands RTX to its interceptors as it arrived and takes it apart only application-ward
/// of them, so its NACK generator, whose log is kept by the stream's SSRC, never learns that a
/// repair came and asks for the packet again until its next request finds it (over a line of
/// 150 ms round trip that loses 1 %, the node sent 156 packets again for 91 lost without this,
/// 132 for 95 with it). A packet of another payload type than the RTX format's, or too short
/// to carry a sequence number, passes on unchanged.
#[derive(Default)]
pub struct RtxUnwrap {
    /// For each RTX stream: its payload type, the stream it repairs and that stream's payload
    /// type.
    repairs: FxHashMap<u32, Rtx>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// An RTX stream as [`RtxUnwrap`] knows it.
struct Rtx {
    payload_type: u8,
    repaired_ssrc: u32,
    repaired_payload_type: u8,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut message.message.packet
            && let Some(rtx) = self.repairs.get(&packet.header.ssrc)
            && packet.header.payload_type == rtx.payload_type
            && let Some(original) = packet.payload.get(..2)
        {
            packet.header.sequence_number = u16::from_be_bytes([original[0], original[1]]);
            packet.header.ssrc = rtx.repaired_ssrc;
            packet.header.payload_type = rtx.repaired_payload_type;
            packet.payload = packet.payload.slice(2..);
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

impl Interceptor for RtxUnwrap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let (Some(ssrc), Some(payload_type)) = (info.ssrc_rtx, info.payload_type_rtx) {
            let rtx = Rtx {
                payload_type,
                repaired_ssrc: info.ssrc,
                repaired_payload_type: info.payload_type,
            };
            self.repairs.insert(ssrc, rtx);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.remove(&rtx);
        }
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

/// How many RTP packets and RTCP compounds arrived through SRTP on one connection: each one
/// authenticated. Shared between the connection's [`WireTap`] and the node.
#[derive(Clone, Debug, Default)]
pub struct Arrivals(Arc<AtomicU64>);

impl Arrivals {
    /// How many so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    use super::*;

    fn arriving(ssrc: u32, payload_type: u8, sequence_number: u16, payload: &[u8]) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    ssrc,
                    payload_type,
                    sequence_number,
                    ..Default::default()
                },
                payload: payload.to_vec().into(),
            })),
        }
    }

    fn passed(unwrap: &mut RtxUnwrap, packet: TaggedPacket) -> rtc::rtp::Packet {
        unwrap.handle_read(packet).expect("every packet is taken");
        match unwrap.poll_read().map(|read| read.message.packet) {
            Some(Packet::Rtp(packet)) => packet,
            _ => panic!("the packet goes on, as RTP"),
        }
    }

    #[test]
    fn a_repair_on_the_rtx_stream_goes_on_as_the_packet_it_repairs() {
        let mut unwrap = RtxUnwrap::default();
        unwrap.bind_remote_stream(&StreamInfo {
            ssrc: 10,
            payload_type: 96,
            ssrc_rtx: Some(11),
            payload_type_rtx: Some(97),
            ..Default::default()
        });
        let repaired = passed(&mut unwrap, arriving(11, 97, 500, &[0x12, 0x34, 7, 8, 9]));
        assert_eq!(
            (
                repaired.header.ssrc,
                repaired.header.payload_type,
                repaired.header.sequence_number
            ),
            (10, 96, 0x1234)
        );
        assert_eq!(&repaired.payload[..], &[7, 8, 9]);
        let plain = passed(&mut unwrap, arriving(10, 96, 3, &[1, 2, 3]));
        assert_eq!((plain.header.ssrc, plain.header.sequence_number), (10, 3));
        assert_eq!(&plain.payload[..], &[1, 2, 3]);
        let other = passed(&mut unwrap, arriving(11, 96, 501, &[0, 1, 2]));
        assert_eq!(other.header.ssrc, 11, "not RTX's payload type: as it came");
        let short = passed(&mut unwrap, arriving(11, 97, 501, &[1]));
        assert_eq!(
            (short.header.ssrc, short.payload.len()),
            (11, 1),
            "too short: as it came"
        );
        unwrap.unbind_remote_stream(&StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            ..Default::default()
        });
        let unbound = passed(&mut unwrap, arriving(11, 97, 502, &[0, 1, 2]));
        assert_eq!(unbound.header.ssrc, 11);
    }
}
