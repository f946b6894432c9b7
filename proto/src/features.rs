//! What each party understands beyond the forms every release understands.
//!
//! Media nodes, control-plane replicas and pages of two releases meet while a fleet is upgraded
//! one part at a time: a node's pod is replaced while its rooms' other nodes run on, a page
//! loaded before the upgrade resumes through a new gateway. Each party names what it
//! understands — a node in `Register.features`, a replica in `Registered.features`, the replica
//! that opens a link for both its ends in `OpenLink.peer_features`, a page in the `features` of
//! its join or resume — and a sender uses a newer form only with a receiver that named it, the
//! older form otherwise. A name this release does not know is ignored.
//!
//! A new kind in a `oneof` (a relay, a signal, a command) needs a feature of its own here
//! before it is sent: the generated code of an earlier release drops a field it does not know,
//! so the message arrives empty and is refused. New fields beside the ones a receiver knows
//! need none: they are ignored, and each must mean nothing when absent.

/// Several participants in one message: the roster a node relays when a room spreads to
/// another (`RoomRelay.participants`), and what the node then tells its participants
/// (`Signal.participants_joined`, the page's `participants-joined`). Without it, one message
/// per participant (`RoomRelay.participant`, `participant-joined`).
pub const ROSTER_BATCHES: &str = "roster-batches";

/// A set of the features this release knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// [`ROSTER_BATCHES`].
    pub roster_batches: bool,
}

impl Features {
    /// Everything this release understands.
    pub const ALL: Self = Self {
        roster_batches: true,
    };

    /// The features `names` name that this release knows; the others are ignored.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        Self {
            roster_batches: names.iter().any(|name| name.as_ref() == ROSTER_BATCHES),
        }
    }

    /// The names of the features in the set, as they go on the wire.
    pub fn names(self) -> Vec<String> {
        let mut names = Vec::new();
        if self.roster_batches {
            names.push(ROSTER_BATCHES.to_owned());
        }
        names
    }

    /// What both sets hold.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        Self {
            roster_batches: self.roster_batches && other.roster_batches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_ignored() {
        assert_eq!(Features::from_names(&Features::ALL.names()), Features::ALL);
        assert_eq!(Features::from_names::<&str>(&[]), Features::default());
        assert!(Features::default().names().is_empty());
        let newer = ["a-feature-of-a-later-release", ROSTER_BATCHES];
        assert_eq!(Features::from_names(&newer), Features::ALL);
        assert_eq!(
            Features::from_names(&["a-feature-of-a-later-release"]),
            Features::default()
        );
    }

    #[test]
    fn both_must_understand_a_feature() {
        assert_eq!(Features::ALL.and(Features::default()), Features::default());
        assert_eq!(Features::ALL.and(Features::ALL), Features::ALL);
    }
}
