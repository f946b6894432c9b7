//! Keyframe requests towards one publisher, rate-limited.
//!
//! Every new subscriber and every subscriber that lost a picture wants a keyframe, and a
//! keyframe costs the publisher many times the bits of an inter frame. Requests within
//! [`MIN_INTERVAL`] of the last one are merged into one sent when the interval ends, so the
//! publisher's uplink is not flooded and nobody waits longer than the interval.

use std::time::{Duration, Instant};

/// The shortest time between two keyframe requests to one publication.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// The request state of one publication.
#[derive(Clone, Debug, Default)]
pub struct KeyframeRequests {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequests {
    /// Someone wants a keyframe. Returns `true` when the request should go out now; otherwise
    /// it is held until [`Self::deadline`].
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.duration_since(last) < MIN_INTERVAL => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When a held request is due, if one is held.
    pub fn deadline(&self) -> Option<Instant> {
        // A request is only ever held because one was sent recently.
        self.last_sent
            .filter(|_| self.pending)
            .map(|last| last + MIN_INTERVAL)
    }

    /// Returns `true` when a held request is due at `now` (and counts it as sent).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(due) if due <= now => {
                self.pending = false;
                self.last_sent = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_within_the_interval_are_merged_and_sent_at_its_end() {
        let start = Instant::now();
        let mut requests = KeyframeRequests::default();
        assert!(requests.request(start), "the first goes out at once");
        for ms in [10, 50, 200] {
            assert!(!requests.request(start + Duration::from_millis(ms)));
        }
        assert_eq!(requests.deadline(), Some(start + MIN_INTERVAL));
        assert!(!requests.poll(start + Duration::from_millis(499)));
        assert!(requests.poll(start + MIN_INTERVAL), "one merged request");
        assert!(
            !requests.poll(start + Duration::from_secs(2)),
            "and only one"
        );
        assert!(requests.request(start + Duration::from_secs(3)));
    }
}
