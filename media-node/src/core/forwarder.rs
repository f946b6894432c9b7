//! The forwarder of one down-track: one publication as one subscriber receives it.
//!
//! Per packet it decides whether to forward and how to rewrite it. The subscriber sees one
//! continuous stream under the down-track's own SSRC, whichever simulcast layer it comes from:
//!
//! - video starts at a keyframe, and moves to another layer only at that layer's keyframe, so
//!   the subscriber never gets frames it cannot decode;
//! - sequence numbers continue across layer switches, across the publisher's padding-only
//!   packets that the node drops, and around the node's own padding that probes the
//!   subscriber's line, so the subscriber does not ask for packets that never come;
//! - timestamps continue across switches, advanced by the time that passed;
//! - VP8 picture ids and TL0PICIDX continue across switches.

use std::time::Instant;

/// What the forwarder needs to know of one incoming packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// The simulcast layer it belongs to (0 without simulcast).
    pub layer: usize,
    /// The publisher's sequence number.
    pub sequence_number: u16,
    /// The publisher's RTP timestamp.
    pub timestamp: u32,
    /// Whether the packet starts a keyframe (always true for audio).
    pub keyframe: bool,
    /// Whether the packet carries no media, only padding.
    pub padding_only: bool,
    /// The VP8 picture id (15 bits), if any.
    pub picture_id: Option<u16>,
    /// The VP8 TL0PICIDX, if any.
    pub tl0_picture_index: Option<u8>,
}

/// Where a forwarded packet goes, and how it is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The down-track's SSRC on the subscriber's leg.
    pub ssrc: u32,
    /// The rewritten sequence number.
    pub sequence_number: u16,
    /// The rewritten timestamp.
    pub timestamp: u32,
    /// The rewritten VP8 picture id, when the payload carries one.
    pub picture_id: Option<u16>,
    /// The rewritten VP8 TL0PICIDX, when the payload carries one.
    pub tl0_picture_index: Option<u8>,
}

/// Whether `a` comes after `b` in RTP's wrapping 16-bit sequence space.
fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// What the subscriber has been sent last.
#[derive(Clone, Copy, Debug)]
struct Sent {
    sequence_number: u16,
    timestamp: u32,
    picture_id: Option<u16>,
    tl0_picture_index: Option<u8>,
    at: Instant,
}

/// The per-subscriber state of one forwarded publication.
#[derive(Clone, Debug)]
pub struct Forwarder {
    ssrc: u32,
    /// The RTP clock rate, for advancing timestamps across a switch.
    clock_rate: u32,
    /// Whether a new layer must start at a keyframe (video).
    needs_keyframe: bool,
    /// The layer being forwarded, if any.
    current: Option<usize>,
    /// The layer wanted; `None` pauses the down-track.
    target: Option<usize>,
    /// Subtracted from incoming sequence numbers of the current layer.
    sequence_offset: u16,
    /// The newest incoming sequence number of the current layer.
    newest: Option<u16>,
    timestamp_offset: u32,
    picture_id_offset: u16,
    tl0_offset: u8,
    last: Option<Sent>,
    /// When the current layer began.
    switched_at: Option<Instant>,
}

impl Forwarder {
    /// A forwarder writing under `ssrc`, for a publication whose clock runs at `clock_rate`.
    /// Video (`needs_keyframe`) switches layers only at keyframes. It starts on layer 0.
    pub fn new(ssrc: u32, clock_rate: u32, needs_keyframe: bool) -> Self {
        Self {
            ssrc,
            clock_rate,
            needs_keyframe,
            current: None,
            target: Some(0),
            sequence_offset: 0,
            newest: None,
            timestamp_offset: 0,
            picture_id_offset: 0,
            tl0_offset: 0,
            switched_at: None,
            last: None,
        }
    }

    /// The down-track's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The layer being forwarded now.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Since when the forwarder has been forwarding the layer it wants, if it is.
    pub fn on_target_since(&self) -> Option<Instant> {
        self.switched_at
            .filter(|_| self.current.is_some() && self.current == self.target)
    }

    /// Whether the forwarder waits for a keyframe of its target layer.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// Wants `layer` from now on (`None` pauses). A switch up happens at the higher layer's next
    /// keyframe, and until then the current layer goes on. A switch down stops the current layer
    /// at once (the line is likely too full for it) and goes on at the lower layer's keyframe.
    pub fn set_target(&mut self, layer: Option<usize>) {
        self.target = layer;
        if layer.is_none() || layer < self.current {
            self.current = None;
        }
    }

    /// The publication behind the down-track is replaced by another (its publisher moved to
    /// another node): nothing is forwarded until a layer is wanted again and, for video, its
    /// keyframe arrives; from there the stream continues from what the subscriber saw last.
    pub fn rebase(&mut self) {
        self.current = None;
        self.target = None;
        self.newest = None;
        self.switched_at = None;
    }

    /// Decides about one packet: `Some` to forward it with the rewritten header.
    pub fn forward(&mut self, now: Instant, packet: &PacketMeta) -> Option<Rewrite> {
        if self.target.is_some()
            && Some(packet.layer) == self.target
            && self.current != self.target
            && (packet.keyframe || !self.needs_keyframe)
            && !packet.padding_only
        {
            self.switch_to(now, packet);
        }
        if self.current != Some(packet.layer) {
            return None;
        }
        // The packet a switch starts with is the newest (what the subscriber saw last is
        // then this one, and padding continues after it).
        let is_newest = self
            .newest
            .is_none_or(|newest| is_newer(packet.sequence_number, newest));
        if packet.padding_only {
            if is_newest {
                // Close the gap this packet would leave.
                self.newest = Some(packet.sequence_number);
                self.sequence_offset = self.sequence_offset.wrapping_add(1);
            }
            return None;
        }
        if is_newest {
            self.newest = Some(packet.sequence_number);
        }
        let rewrite = Rewrite {
            ssrc: self.ssrc,
            sequence_number: packet.sequence_number.wrapping_sub(self.sequence_offset),
            timestamp: packet.timestamp.wrapping_sub(self.timestamp_offset),
            picture_id: packet
                .picture_id
                .map(|id| id.wrapping_sub(self.picture_id_offset) & 0x7fff),
            tl0_picture_index: packet
                .tl0_picture_index
                .map(|index| index.wrapping_sub(self.tl0_offset)),
        };
        if is_newest {
            self.last = Some(Sent {
                sequence_number: rewrite.sequence_number,
                timestamp: rewrite.timestamp,
                picture_id: rewrite.picture_id,
                tl0_picture_index: rewrite.tl0_picture_index,
                at: now,
            });
        }
        Some(rewrite)
    }

    /// Takes `count` sequence numbers for padding-only packets the node sends on this
    /// down-track to probe the subscriber's line: they follow what the subscriber saw last, and
    /// the media after them continues behind them. Returns the first sequence number and the
    /// timestamp to send them with (the last one sent). A down-track that never sent starts
    /// its sequence with the padding (a subscriber whose video never played must be probed
    /// too, or its estimate never grows to what the video needs), and its first media
    /// continues from there.
    ///
    /// A packet of the current layer that arrives late (older than the newest forwarded) after
    /// padding was inserted maps onto the shifted sequence; the node does not reorder, so this
    /// is as rare as reordering before the node.
    pub fn take_padding(&mut self, now: Instant, count: u16) -> (u16, u32) {
        // Where a new sequence starts matters to nobody; the SSRC is arbitrary enough.
        let ssrc = self.ssrc;
        let last = self.last.get_or_insert(Sent {
            sequence_number: ssrc as u16,
            timestamp: ssrc.rotate_left(16),
            picture_id: None,
            tl0_picture_index: None,
            at: now,
        });
        let first = last.sequence_number.wrapping_add(1);
        last.sequence_number = last.sequence_number.wrapping_add(count);
        self.sequence_offset = self.sequence_offset.wrapping_sub(count);
        (first, last.timestamp)
    }

    /// Starts forwarding `packet`'s layer so that everything the subscriber sees continues
    /// from what it saw last.
    fn switch_to(&mut self, now: Instant, packet: &PacketMeta) {
        self.current = Some(packet.layer);
        self.switched_at = Some(now);
        self.newest = None;
        let Some(last) = self.last else {
            // The first packet ever: nothing to continue from.
            return;
        };
        let next_sequence = last.sequence_number.wrapping_add(1);
        self.sequence_offset = packet.sequence_number.wrapping_sub(next_sequence);
        // Advance the timestamp by the time that passed, at least one tick.
        let elapsed = now.saturating_duration_since(last.at);
        let ticks = ((elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u32).max(1);
        let next_timestamp = last.timestamp.wrapping_add(ticks);
        self.timestamp_offset = packet.timestamp.wrapping_sub(next_timestamp);
        if let (Some(incoming), Some(previous)) = (packet.picture_id, last.picture_id) {
            let next = previous.wrapping_add(1) & 0x7fff;
            self.picture_id_offset = incoming.wrapping_sub(next) & 0x7fff;
        }
        if let (Some(incoming), Some(previous)) = (packet.tl0_picture_index, last.tl0_picture_index)
        {
            self.tl0_offset = incoming.wrapping_sub(previous.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn packet(
        layer: usize,
        sequence_number: u16,
        keyframe: bool,
        padding_only: bool,
    ) -> PacketMeta {
        PacketMeta {
            layer,
            sequence_number,
            timestamp: u32::from(sequence_number) * 3000,
            keyframe,
            padding_only,
            picture_id: None,
            tl0_picture_index: None,
        }
    }

    #[test]
    fn video_starts_at_a_keyframe() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(7, 90_000, true);
        assert_eq!(forwarder.forward(now, &packet(0, 10, false, false)), None);
        assert_eq!(forwarder.forward(now, &packet(0, 11, false, false)), None);
        let first = forwarder.forward(now, &packet(0, 12, true, false)).unwrap();
        assert_eq!(first.ssrc, 7);
        assert!(
            forwarder
                .forward(now, &packet(0, 13, false, false))
                .is_some()
        );
    }

    #[test]
    fn dropped_padding_leaves_no_gap_across_the_wrap() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(7, 48_000, false);
        let mut out = Vec::new();
        for (seq, padding) in [
            (65533u16, false),
            (65534, true),
            (65535, false),
            (0, true),
            (1, true),
            (2, false),
            (3, false),
        ] {
            if let Some(rewrite) = forwarder.forward(now, &packet(0, seq, false, padding)) {
                out.push(rewrite.sequence_number);
            }
        }
        for pair in out.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "continuous: {out:?}");
        }
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn probe_padding_takes_its_place_in_the_sequence() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(7, 90_000, true);
        let first = forwarder
            .forward(now, &packet(0, 65534, true, false))
            .unwrap();
        assert_eq!(
            forwarder.take_padding(now, 3),
            (first.sequence_number.wrapping_add(1), first.timestamp),
            "padding follows the last packet, with its timestamp"
        );
        let next = forwarder
            .forward(now, &packet(0, 65535, false, false))
            .unwrap();
        assert_eq!(next.sequence_number, first.sequence_number.wrapping_add(4));
        // Paused, padded, and resumed: still continuous.
        forwarder.set_target(None);
        let (padding, _) = forwarder.take_padding(now, 2);
        assert_eq!(padding, next.sequence_number.wrapping_add(1));
        forwarder.set_target(Some(0));
        let resumed = forwarder.forward(now, &packet(0, 9, true, false)).unwrap();
        assert_eq!(
            resumed.sequence_number,
            next.sequence_number.wrapping_add(3)
        );
    }

    #[test]
    fn a_video_that_never_played_starts_its_sequence_with_the_padding() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(7, 90_000, true);
        let (first, timestamp) = forwarder.take_padding(now, 3);
        assert_eq!(forwarder.take_padding(now, 2).0, first.wrapping_add(3));
        let later = now + Duration::from_millis(100);
        let media = forwarder
            .forward(later, &packet(0, 40_000, true, false))
            .unwrap();
        assert_eq!(
            media.sequence_number,
            first.wrapping_add(5),
            "the first media follows the padding"
        );
        assert!(
            media.timestamp.wrapping_sub(timestamp) >= 9_000,
            "and its timestamp the time that passed since"
        );
    }

    #[test]
    fn late_packets_keep_their_place() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(7, 48_000, false);
        let a = forwarder
            .forward(now, &packet(0, 100, false, false))
            .unwrap();
        let c = forwarder
            .forward(now, &packet(0, 102, false, false))
            .unwrap();
        let b = forwarder
            .forward(now, &packet(0, 101, false, false))
            .unwrap();
        assert_eq!(b.sequence_number, a.sequence_number + 1);
        assert_eq!(c.sequence_number, a.sequence_number + 2);
    }

    #[test]
    fn a_paused_down_track_forwards_nothing_until_resumed_at_a_keyframe() {
        let now = Instant::now();
        let mut forwarder = Forwarder::new(7, 90_000, true);
        assert!(forwarder.forward(now, &packet(0, 1, true, false)).is_some());
        forwarder.set_target(None);
        assert_eq!(forwarder.forward(now, &packet(0, 2, true, false)), None);
        forwarder.set_target(Some(0));
        assert_eq!(forwarder.forward(now, &packet(0, 3, false, false)), None);
        let resumed = forwarder.forward(now, &packet(0, 4, true, false)).unwrap();
        assert_eq!(resumed.sequence_number, 2, "continues where it stopped");
    }
}
