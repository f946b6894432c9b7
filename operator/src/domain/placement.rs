//! Placement: which media node hosts a new room.
//!
//! A room that has a live node stays there. A new room goes to the least-loaded node that is
//! not draining and has room to spare; when none has, the join is refused rather than every
//! running call degraded.

use std::fmt;

/// A media node's id, as it registered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What placement needs to know of one attached node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// Participants the node hosts now (as it reported, plus admissions not yet reported).
    pub participants: u32,
    /// Participants the node accepts in total.
    pub max_participants: u32,
    /// A draining node takes no new rooms.
    pub draining: bool,
}

impl NodeView {
    /// The share of capacity in use, in thousandths, so that nodes of different sizes compare.
    fn load_permille(&self) -> u64 {
        if self.max_participants == 0 {
            return u64::MAX;
        }
        u64::from(self.participants) * 1000 / u64::from(self.max_participants)
    }

    fn has_room(&self) -> bool {
        !self.draining && self.participants < self.max_participants
    }
}

/// The node for a new room: the least loaded of those that can take it, ties broken by id so
/// that the choice is deterministic. `None` when the platform is full.
pub fn choose_node<'a>(nodes: impl IntoIterator<Item = &'a NodeView>) -> Option<&'a NodeView> {
    nodes
        .into_iter()
        .filter(|node| node.has_room())
        .min_by(|a, b| {
            a.load_permille()
                .cmp(&b.load_permille())
                .then_with(|| a.id.cmp(&b.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u32, max: u32, draining: bool) -> NodeView {
        NodeView {
            id: NodeId(id.to_owned()),
            participants,
            max_participants: max,
            draining,
        }
    }

    #[test]
    fn picks_the_least_loaded_node_relative_to_its_size() {
        let nodes = [
            node("a", 50, 100, false),
            node("b", 30, 40, false),
            node("c", 10, 100, false),
        ];
        assert_eq!(choose_node(&nodes).unwrap().id.0, "c");
    }

    #[test]
    fn skips_draining_and_full_nodes() {
        let nodes = [
            node("a", 0, 100, true),
            node("b", 40, 40, false),
            node("c", 99, 100, false),
        ];
        assert_eq!(choose_node(&nodes).unwrap().id.0, "c");
    }

    #[test]
    fn no_node_means_the_platform_is_full() {
        let nodes = [node("a", 0, 100, true), node("b", 40, 40, false)];
        assert!(choose_node(&nodes).is_none());
        assert!(choose_node(&[]).is_none());
    }
}
