//! The node's answers to its subscribers' NACKs.
//!
//! Each stream the node sends that negotiated NACK keeps what it sent in the last [`KEPT_FOR`]
//! (a second), at most [`MOST_KEPT`] packets, and a NACK is answered with those of the packets
//! it names that are still kept, marked as retransmissions (the pacer drops one that waited too
//! long to be of use).
//!
//! A window of time rather than a number of packets, because the streams differ a hundredfold:
//! `rtc`'s responder keeps one number of packets for every stream of a connection, so 256 were
//! four seconds of a thumbnail's 60 packets a second and 128 ms of a 16 Mbit/s stream's 2,000,
//! less than a line's round trip and the receiver's wait before it asks add up to (the repair
//! came too late on exactly the streams that lose most). A second is as long as a
//! retransmission is of any use to a receiver's jitter buffer, and memory now grows with what a
//! participant receives, not with how many streams.
//!
//! To a subscriber that took RTX (RFC 4588) a retransmission goes on the stream's repair
//! stream: its own SSRC, payload type and sequence numbers, the original sequence number before
//! the payload. To one that did not, it is the packet again, with the original's SSRC
//! and sequence number. Padding-only packets (the node's probes) are not kept: nobody needs
//! them again. A NACK is answered with at most [`MOST_ANSWERED`] packets, and a stream is sent
//! again at most as many packets in a second as it carried in its last (at least
//! [`LEAST_ALLOWED`]), so that neither one report nor a flood of them makes the node send its
//! memory again and again: real loss is a share of a stream, never more than all of it. What
//! was sent again and what was asked for too late is counted into the connection's
//! [`Repairs`], which the node's metrics read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rustc_hash::FxHashMap;

/// How long a sent packet is kept to be sent again.
pub const KEPT_FOR: Duration = Duration::from_secs(1);
/// The most packets one stream keeps: a second of 32 Mbit/s in packets of 1,000 bytes.
pub const MOST_KEPT: usize = 4_096;
/// The most packets one NACK is answered with: 250 ms of a 16 Mbit/s stream.
pub const MOST_ANSWERED: usize = 512;
/// The packets a stream may be sent again in a second even if it carried fewer: a thumbnail's
/// keyframe lost whole.
pub const LEAST_ALLOWED: usize = 64;

/// A packet as it was sent, and when.
struct Sent {
    at: Instant,
    packet: rtc::rtp::Packet,
}

/// A stream's repair stream, when its subscriber took RTX.
struct Rtx {
    ssrc: u32,
    payload_type: u8,
    /// The sequence number of the next repair.
    sequence: u16,
}

impl Rtx {
    /// The repair stream of a stream sent as `info` describes, if it has one.
    fn of(info: &StreamInfo) -> Option<Self> {
        let (ssrc, payload_type) = info.ssrc_rtx.zip(info.payload_type_rtx)?;
        Some(Self {
            ssrc,
            payload_type,
            // A random start, as for every RTP stream (RFC 3550).
            sequence: treffpunkt_proto::random::u32() as u16,
        })
    }

    /// `packet` as the next packet of the repair stream: the original's header on the repair
    /// stream, its sequence number in front of its payload.
    fn wrap(&mut self, packet: rtc::rtp::Packet) -> rtc::rtp::Packet {
        let mut payload = BytesMut::with_capacity(2 + packet.payload.len());
        payload.extend_from_slice(&packet.header.sequence_number.to_be_bytes());
        payload.extend_from_slice(&packet.payload);
        let mut header = packet.header;
        header.ssrc = self.ssrc;
        header.payload_type = self.payload_type;
        header.sequence_number = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        rtc::rtp::Packet {
            header,
            payload: payload.freeze(),
        }
    }
}

/// What one stream sent in the last [`KEPT_FOR`], oldest first, and where its repairs go.
#[derive(Default)]
struct Kept {
    sent: VecDeque<Sent>,
    rtx: Option<Rtx>,
    /// Packets sent again since `resending_since`, a second at most ago.
    resent: usize,
    resending_since: Option<Instant>,
}

impl Kept {
    /// How many packets may be sent again now, in this second's allowance.
    fn allowance(&mut self, now: Instant) -> usize {
        let since = *self.resending_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= Duration::from_secs(1) {
            self.resending_since = Some(now);
            self.resent = 0;
        }
        self.sent
            .len()
            .max(LEAST_ALLOWED)
            .saturating_sub(self.resent)
    }

    fn keep(&mut self, at: Instant, packet: rtc::rtp::Packet) {
        self.sent.push_back(Sent { at, packet });
        self.forget_older_than(at);
        while self.sent.len() > MOST_KEPT {
            self.sent.pop_front();
        }
    }

    /// Forgets what was sent longer than [`KEPT_FOR`] before `now`.
    fn forget_older_than(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|sent| now.saturating_duration_since(sent.at) > KEPT_FOR)
        {
            self.sent.pop_front();
        }
    }

    /// The packet with sequence number `sequence`, if it is kept.
    fn find(&self, sequence: u16) -> Option<&rtc::rtp::Packet> {
        let first = self.sent.front()?.packet.header.sequence_number;
        let distance = |sent: &Sent| sent.packet.header.sequence_number.wrapping_sub(first);
        let wanted = sequence.wrapping_sub(first);
        // Sequence numbers run on by one in the order sent: look there first.
        let index = match self.sent.get(usize::from(wanted)) {
            Some(sent) if sent.packet.header.sequence_number == sequence => usize::from(wanted),
            // A gap (a packet not kept): they still rise from the first on.
            _ => self.sent.partition_point(|sent| distance(sent) < wanted),
        };
        self.sent
            .get(index)
            .filter(|sent| sent.packet.header.sequence_number == sequence)
            .map(|sent| &sent.packet)
    }
}

/// The sequence numbers a NACK asks for, in its order.
fn asked_for(nack: &TransportLayerNack) -> impl Iterator<Item = u16> + '_ {
    nack.nacks.iter().flat_map(|pair| {
        let lost = pair.lost_packets;
        std::iter::once(pair.packet_id).chain(
            (0..16u16)
                .filter(move |bit| lost & (1 << bit) != 0)
                .map(move |bit| pair.packet_id.wrapping_add(bit + 1)),
        )
    })
}

/// What one connection's responder did since it began, shared with the node.
#[derive(Clone, Debug, Default)]
pub struct Repairs(Arc<RepairCounts>);

#[derive(Debug, Default)]
struct RepairCounts {
    sent: AtomicU64,
    not_kept: AtomicU64,
}

impl Repairs {
    /// Packets sent again, and packets asked for that were not kept (sent over a second before,
    /// or padding).
    pub fn counts(&self) -> (u64, u64) {
        let counts = &self.0;
        (
            counts.sent.load(Ordering::Relaxed),
            counts.not_kept.load(Ordering::Relaxed),
        )
    }
}

/// The interceptor in the chain's NACK responder slot: keeps what each stream sent and answers
/// NACKs from it.
#[derive(Default)]
pub struct Retransmissions {
    streams: FxHashMap<u32, Kept>,
    repairs: Repairs,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Retransmissions {
    /// A responder that counts what it does into `repairs`.
    pub fn counting_into(repairs: Repairs) -> Self {
        Self {
            repairs,
            ..Self::default()
        }
    }

    /// Queues the answer to `nack`, received at `now`.
    fn answer(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(kept) = self.streams.get_mut(&nack.media_ssrc) else {
            return;
        };
        kept.forget_older_than(now);
        let most = MOST_ANSWERED.min(kept.allowance(now));
        let (mut sent, mut not_kept) = (0, 0);
        for sequence in asked_for(nack) {
            if sent == most {
                break;
            }
            let Some(packet) = kept.find(sequence).cloned() else {
                not_kept += 1;
                continue;
            };
            let packet = match kept.rtx.as_mut() {
                Some(rtx) => rtx.wrap(packet),
                None => packet,
            };
            sent += 1;
            self.writes.push_back(TaggedPacket {
                now,
                transport: Default::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
            });
        }
        kept.resent += sent;
        let counts = &self.repairs.0;
        counts.sent.fetch_add(sent as u64, Ordering::Relaxed);
        counts.not_kept.fetch_add(not_kept, Ordering::Relaxed);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Retransmissions {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            for packet in packets {
                if let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() {
                    self.answer(message.now, nack);
                }
            }
        }
        self.reads.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &message.message.packet
            && !packet.payload.is_empty()
            && let Some(kept) = self.streams.get_mut(&packet.header.ssrc)
        {
            kept.keep(message.now, packet.clone());
        }
        self.writes.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for Retransmissions {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|feedback| feedback.typ == "nack" && feedback.parameter.is_empty());
        if nack {
            let kept = Kept {
                rtx: Rtx::of(info),
                ..Kept::default()
            };
            self.streams.insert(info.ssrc, kept);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests;
