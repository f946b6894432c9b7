//! Who is speaking: the dominant speaker of a room, from the audio levels publishers put into
//! their packets (RFC 6464: 0 is the loudest, 127 silence, in -dBov).
//!
//! Each participant's loudness is averaged over a short window. The loudest one becomes the
//! dominant speaker only when clearly louder than the current one for a little while, so that a
//! cough does not move the large tile around.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::PeerId;

/// The window loudness is averaged over.
const WINDOW: Duration = Duration::from_millis(600);
/// Levels above this (quieter than -60 dBov) count as silence.
const SILENCE: u8 = 60;
/// How much louder a challenger must be than the dominant speaker.
const MARGIN: f64 = 4.0;
/// How long a challenger must stay louder before it takes over.
const HOLD: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
struct Voice {
    /// (when, how loud: 0 silence .. 60 loudest).
    samples: VecDeque<(Instant, u8)>,
}

impl Voice {
    fn loudness(&mut self, now: Instant) -> f64 {
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.samples.pop_front();
        }
        if self.samples.is_empty() {
            return 0.0;
        }
        // Missing packets (DTX during silence) count as silence.
        let expected = (WINDOW.as_millis() / 20) as f64;
        let total: f64 = self.samples.iter().map(|(_, v)| f64::from(*v)).sum();
        total / expected.max(self.samples.len() as f64)
    }
}

/// The dominant speaker of one room.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    voices: FxHashMap<PeerId, Voice>,
    dominant: Option<PeerId>,
    challenger: Option<(PeerId, Instant)>,
    /// Speakers, most recent first, for "the last N speakers".
    recent: Vec<PeerId>,
}

impl SpeakerDetector {
    /// Records an audio packet's level.
    pub fn level(&mut self, now: Instant, peer: PeerId, level: u8) {
        let loudness = SILENCE.saturating_sub(level.min(127));
        let voice = self.voices.entry(peer).or_default();
        voice.samples.push_back((now, loudness));
        if voice.samples.len() > 256 {
            voice.samples.pop_front();
        }
    }

    /// Forgets a participant who left.
    pub fn forget(&mut self, peer: PeerId) {
        self.voices.remove(&peer);
        self.recent.retain(|p| *p != peer);
        if self.dominant == Some(peer) {
            self.dominant = None;
        }
        if self.challenger.is_some_and(|(p, _)| p == peer) {
            self.challenger = None;
        }
    }

    /// The dominant speaker now.
    pub fn dominant(&self) -> Option<PeerId> {
        self.dominant
    }

    /// How recently `peer` was the dominant speaker: 0 for now, 1 for the one before, ...;
    /// `None` if never.
    pub fn recency(&self, peer: PeerId) -> Option<usize> {
        self.recent.iter().position(|p| *p == peer)
    }

    /// Re-evaluates the dominant speaker; returns the new one when it changed.
    pub fn evaluate(&mut self, now: Instant) -> Option<PeerId> {
        let mut loudest: Option<(PeerId, f64)> = None;
        let mut dominant_loudness = 0.0;
        for (peer, voice) in &mut self.voices {
            let loudness = voice.loudness(now);
            if Some(*peer) == self.dominant {
                dominant_loudness = loudness;
            }
            if loudness > 1.0 && loudest.is_none_or(|(_, l)| loudness > l) {
                loudest = Some((*peer, loudness));
            }
        }
        let (candidate, loudness) = loudest?;
        if Some(candidate) == self.dominant || loudness < dominant_loudness + MARGIN {
            self.challenger = None;
            return None;
        }
        match self.challenger {
            Some((peer, since)) if peer == candidate => {
                if now.duration_since(since) < HOLD && self.dominant.is_some() {
                    return None;
                }
            }
            _ => {
                self.challenger = Some((candidate, now));
                if self.dominant.is_some() {
                    return None;
                }
            }
        }
        self.challenger = None;
        self.dominant = Some(candidate);
        self.recent.retain(|p| *p != candidate);
        self.recent.insert(0, candidate);
        Some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `peer` speaks at `level` for `duration`, 50 packets a second, evaluated every 200 ms;
    /// returns when (since `start`) the detector announced a change to `peer`, if it did.
    fn speak(
        detector: &mut SpeakerDetector,
        start: Instant,
        peer: PeerId,
        level: u8,
        duration: Duration,
    ) -> Option<Duration> {
        let mut announced = None;
        let mut t = Duration::ZERO;
        while t < duration {
            detector.level(start + t, peer, level);
            if t.as_millis().is_multiple_of(200)
                && detector.evaluate(start + t) == Some(peer)
                && announced.is_none()
            {
                announced = Some(t);
            }
            t += Duration::from_millis(20);
        }
        announced
    }

    #[test]
    fn the_one_who_speaks_is_announced_within_a_second() {
        let mut detector = SpeakerDetector::default();
        let start = Instant::now();
        let first = speak(&mut detector, start, PeerId(1), 20, Duration::from_secs(2));
        assert!(
            first.is_some_and(|t| t <= Duration::from_secs(1)),
            "{first:?}"
        );
        // Now 2 speaks and 1 is silent.
        let later = start + Duration::from_secs(2);
        let second = speak(&mut detector, later, PeerId(2), 25, Duration::from_secs(2));
        assert!(
            second.is_some_and(|t| t <= Duration::from_secs(1)),
            "{second:?}"
        );
        assert_eq!(detector.dominant(), Some(PeerId(2)));
        assert_eq!(detector.recency(PeerId(1)), Some(1));
    }

    #[test]
    fn a_short_noise_does_not_take_over() {
        let mut detector = SpeakerDetector::default();
        let start = Instant::now();
        speak(&mut detector, start, PeerId(1), 20, Duration::from_secs(2));
        // 2 coughs for 100 ms while 1 goes on speaking.
        let mut t = Duration::from_secs(2);
        while t < Duration::from_secs(4) {
            detector.level(start + t, PeerId(1), 20);
            if t < Duration::from_millis(2100) {
                detector.level(start + t, PeerId(2), 0);
            }
            if t.as_millis().is_multiple_of(200) {
                detector.evaluate(start + t);
            }
            t += Duration::from_millis(20);
        }
        assert_eq!(detector.dominant(), Some(PeerId(1)));
    }

    #[test]
    fn silence_announces_nobody() {
        let mut detector = SpeakerDetector::default();
        let start = Instant::now();
        assert_eq!(
            speak(&mut detector, start, PeerId(1), 127, Duration::from_secs(2)),
            None
        );
    }
}
