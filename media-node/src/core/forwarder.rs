//! The forwarder of one down-track: one publication as one subscriber receives it.
//!
//! Per packet it decides whether to forward and with which sequence number and timestamp. The
//! subscriber sees one continuous stream under the down-track's own SSRC:
//!
//! - video starts at a keyframe, so a new subscriber never gets frames it cannot decode;
//! - packets the node drops on purpose (padding-only probes) leave no gap in the sequence, so
//!   the subscriber does not ask for packets that will never come.

/// What the forwarder needs to know of one incoming packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// The publisher's sequence number.
    pub sequence_number: u16,
    /// The publisher's RTP timestamp.
    pub timestamp: u32,
    /// Whether the packet starts a keyframe (always true for audio).
    pub keyframe: bool,
    /// Whether the packet carries no media, only padding.
    pub padding_only: bool,
}

/// Where a forwarded packet goes, and how its header is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The down-track's SSRC on the subscriber's leg.
    pub ssrc: u32,
    /// The rewritten sequence number.
    pub sequence_number: u16,
    /// The rewritten timestamp.
    pub timestamp: u32,
}

/// Whether `a` comes after `b` in RTP's wrapping 16-bit sequence space.
fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// The per-subscriber state of one forwarded publication.
#[derive(Clone, Debug)]
pub struct Forwarder {
    ssrc: u32,
    /// Waiting for a keyframe before anything is forwarded.
    waiting_for_keyframe: bool,
    /// Subtracted from incoming sequence numbers: how many newest packets were dropped.
    sequence_offset: u16,
    /// The newest incoming sequence number seen since forwarding began.
    newest: Option<u16>,
}

impl Forwarder {
    /// A forwarder writing under `ssrc`. Video (`needs_keyframe`) waits for a keyframe.
    pub fn new(ssrc: u32, needs_keyframe: bool) -> Self {
        Self {
            ssrc,
            waiting_for_keyframe: needs_keyframe,
            sequence_offset: 0,
            newest: None,
        }
    }

    /// The down-track's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Whether the forwarder still waits for a keyframe.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Decides about one packet: `Some` to forward it with the rewritten header.
    pub fn forward(&mut self, packet: &PacketMeta) -> Option<Rewrite> {
        if self.waiting_for_keyframe {
            if !packet.keyframe || packet.padding_only {
                return None;
            }
            self.waiting_for_keyframe = false;
            // Continue the outgoing sequence exactly where it stood.
            if let Some(newest) = self.newest {
                let next_out = newest.wrapping_sub(self.sequence_offset).wrapping_add(1);
                self.sequence_offset = packet.sequence_number.wrapping_sub(next_out);
            }
            self.newest = Some(packet.sequence_number);
        }
        let newest = *self.newest.get_or_insert(packet.sequence_number);
        let is_newest = is_newer(packet.sequence_number, newest);
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
        Some(Rewrite {
            ssrc: self.ssrc,
            sequence_number: packet.sequence_number.wrapping_sub(self.sequence_offset),
            timestamp: packet.timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sequence_number: u16, keyframe: bool, padding_only: bool) -> PacketMeta {
        PacketMeta {
            sequence_number,
            timestamp: u32::from(sequence_number) * 3000,
            keyframe,
            padding_only,
        }
    }

    #[test]
    fn video_starts_at_a_keyframe() {
        let mut forwarder = Forwarder::new(7, true);
        assert_eq!(forwarder.forward(&packet(10, false, false)), None);
        assert_eq!(forwarder.forward(&packet(11, false, false)), None);
        let first = forwarder.forward(&packet(12, true, false)).unwrap();
        assert_eq!(first.ssrc, 7);
        assert!(forwarder.forward(&packet(13, false, false)).is_some());
    }

    #[test]
    fn dropped_padding_leaves_no_gap_across_the_wrap() {
        let mut forwarder = Forwarder::new(7, false);
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
            if let Some(rewrite) = forwarder.forward(&packet(seq, false, padding)) {
                out.push(rewrite.sequence_number);
            }
        }
        for pair in out.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "continuous: {out:?}");
        }
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn late_packets_keep_their_place() {
        let mut forwarder = Forwarder::new(7, false);
        let a = forwarder.forward(&packet(100, false, false)).unwrap();
        let c = forwarder.forward(&packet(102, false, false)).unwrap();
        let b = forwarder.forward(&packet(101, false, false)).unwrap();
        assert_eq!(b.sequence_number, a.sequence_number + 1);
        assert_eq!(c.sequence_number, a.sequence_number + 2);
    }
}
