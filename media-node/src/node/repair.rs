//! Repair of what a link between two nodes loses.
//!
//! Nodes of a partner's site reach the others over the internet, and a link loses packets as
//! any line does. The sending node keeps what it relayed on each link for a while
//! ([`History`], the last [`HISTORY`] packets); the receiving node follows each relayed
//! stream's sequence numbers ([`Arrivals`]) and asks for a gap of up to [`MAX_GAP`] packets at
//! once, with a NACK frame on the link, which the sender answers with what it still keeps. A
//! larger jump is a stream that started over or a layer the receiver did not want for a
//! while, not loss. A packet that comes twice (one that was late rather than lost, and was
//! sent again) is forwarded once.
//!
//! The participants' own connections repair their losses as they always do: a subscriber's
//! NACK is answered by its own node from what that node sent it. A repaired relay packet comes
//! late, so it reaches the subscribers a round trip between the nodes later than the rest.

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::relay::Media;
use crate::core::PeerId;

/// How many relayed packets each link keeps to send again: about a second of a large room's
/// video and sound.
pub const HISTORY: usize = 2048;
/// The most packets one gap may miss and still be asked for.
pub const MAX_GAP: u16 = 16;
/// The most streams followed per link; past it, they are followed afresh.
const MAX_STREAMS: usize = 4096;

/// One relayed packet, kept.
#[derive(Clone, Debug)]
pub(super) struct Kept {
    pub publisher: PeerId,
    pub media: Media,
    pub payload: Bytes,
}

/// The packets a link sent last, oldest first.
#[derive(Debug, Default)]
pub(super) struct History {
    kept: VecDeque<Kept>,
}

impl History {
    /// Keeps a packet that was sent; the oldest goes when the history is full.
    pub fn keep(&mut self, publisher: PeerId, media: &Media, payload: &Bytes) {
        if self.kept.len() == HISTORY {
            self.kept.pop_front();
        }
        self.kept.push_back(Kept {
            publisher,
            media: *media,
            payload: payload.clone(),
        });
    }

    /// The kept packet of `publisher`'s stream `ssrc` with `sequence_number`, if it is still
    /// kept (the newest are looked at first: a gap is asked for as soon as it shows).
    pub fn find(&self, publisher: u64, ssrc: u32, sequence_number: u16) -> Option<&Kept> {
        self.kept.iter().rev().find(|kept| {
            kept.publisher.0 == publisher
                && kept.media.ssrc == ssrc
                && kept.media.sequence_number == sequence_number
        })
    }
}

/// What the arrival of one relayed packet says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The stream's newest; with the gap before it, if one is to be asked for (the first
    /// missed sequence number and how many).
    New { missed: Option<(u16, u16)> },
    /// Older than the newest and not seen before: a late or a repaired packet.
    Late,
    /// Seen before.
    Again,
}

/// The last 64 sequence numbers of one stream: which arrived.
#[derive(Clone, Copy, Debug)]
struct Window {
    highest: u16,
    /// Bit `n` is `highest - n`.
    seen: u64,
}

/// The relayed streams a link brings, each followed by its sequence numbers.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    streams: FxHashMap<(u64, u32), Window>,
}

impl Arrivals {
    /// Records the arrival of `publisher`'s packet `sequence_number` of stream `ssrc`.
    pub fn arrive(&mut self, publisher: u64, ssrc: u32, sequence_number: u16) -> Arrival {
        let key = (publisher, ssrc);
        let Some(window) = self.streams.get_mut(&key) else {
            if self.streams.len() >= MAX_STREAMS {
                self.streams.clear();
            }
            let window = Window {
                highest: sequence_number,
                seen: 1,
            };
            self.streams.insert(key, window);
            return Arrival::New { missed: None };
        };
        let ahead = sequence_number.wrapping_sub(window.highest);
        if ahead != 0 && ahead < 0x8000 {
            let first_missed = window.highest.wrapping_add(1);
            window.seen = if ahead >= 64 { 0 } else { window.seen << ahead };
            window.seen |= 1;
            window.highest = sequence_number;
            let missed = (2..=MAX_GAP + 1)
                .contains(&ahead)
                .then_some((first_missed, ahead - 1));
            return Arrival::New { missed };
        }
        let back = window.highest.wrapping_sub(sequence_number);
        if back >= 64 {
            // Too old to tell: forwarded, as a late packet would be.
            return Arrival::Late;
        }
        if window.seen & (1 << back) != 0 {
            return Arrival::Again;
        }
        window.seen |= 1 << back;
        Arrival::Late
    }

    /// Forgets every stream (the link was opened anew).
    pub fn clear(&mut self) {
        self.streams.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(sequence_number: u16) -> Media {
        Media {
            ssrc: 7,
            sequence_number,
            timestamp: 0,
            marker: false,
            audio_level: None,
        }
    }

    #[test]
    fn a_gap_is_asked_for_once_and_what_fills_it_is_taken_once() {
        let mut arrivals = Arrivals::default();
        assert_eq!(arrivals.arrive(1, 7, 65_534), Arrival::New { missed: None });
        assert_eq!(arrivals.arrive(1, 7, 65_535), Arrival::New { missed: None });
        // 0 and 1 are lost, across the wrap.
        assert_eq!(
            arrivals.arrive(1, 7, 2),
            Arrival::New {
                missed: Some((0, 2))
            }
        );
        assert_eq!(arrivals.arrive(1, 7, 1), Arrival::Late);
        assert_eq!(arrivals.arrive(1, 7, 1), Arrival::Again);
        assert_eq!(arrivals.arrive(1, 7, 2), Arrival::Again);
        assert_eq!(arrivals.arrive(2, 7, 2), Arrival::New { missed: None });
        // A jump past the widest gap is a new start.
        assert_eq!(arrivals.arrive(1, 7, 500), Arrival::New { missed: None });
        assert_eq!(arrivals.arrive(1, 7, 3), Arrival::Late, "too old to tell");
    }

    #[test]
    fn the_history_keeps_the_newest_packets() {
        let mut history = History::default();
        let payload = Bytes::from_static(b"frame");
        for sequence_number in 0..(HISTORY as u16 + 10) {
            history.keep(PeerId(3), &media(sequence_number), &payload);
        }
        assert!(history.find(3, 7, 5).is_none(), "gone, the history is full");
        let kept = history.find(3, 7, HISTORY as u16 + 9).unwrap();
        assert_eq!(kept.payload, payload);
        assert!(history.find(4, 7, 20).is_none(), "another publisher's");
        assert!(history.find(3, 8, 20).is_none(), "another stream's");
    }
}
