//! Links between the nodes of a room that spans nodes.
//!
//! When a room is placed on more than one node, every two of its nodes get a link: the control
//! plane opens it on both with the same id and key ([`Fleet::span`]). Media crosses a link
//! directly between the nodes' media ports; everything else the nodes tell each other about the
//! room comes here as a `RoomRelay` and is carried to the other end ([`Fleet::relay`]).
//!
//! Every replica may open the links of the rooms it admits participants to, and every replica
//! may carry their messages, without asking the others: a link's id is a digest of the room and
//! its two nodes (each with the instance attached now), and its key is derived from it with the
//! control plane's own secret, so that each replica comes to the same link. A message is carried
//! only if its link's id is the one of the room, the node it came from and the node it names:
//! a node can speak only on its own links.
//!
//! A link ends when either node is lost (the other is told, and the participants that were on
//! the lost node leave the room there) or when nobody has been in its room on either node for
//! [`LINK_IDLE`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ring::digest;
use tracing::{debug, info, warn};
use treffpunkt_proto::features::Features;
use treffpunkt_proto::grant::Keyring;
use treffpunkt_proto::v1::{self, control_message::Kind as ControlKind};

use super::{AttachedNode, Fleet, FleetState, room_loads};
use crate::domain::{NodeId, RoomKey};

/// How long a link whose room nobody is in on either node stays open.
pub const LINK_IDLE: Duration = Duration::from_secs(30);

/// A link this replica opened.
#[derive(Debug, Clone)]
pub(super) struct OpenedLink {
    room: RoomKey,
    ends: [NodeId; 2],
    /// The key it was opened with, to open it again when the secret changes.
    key: [u8; 32],
    /// Since when nobody has been in the room on either end.
    idle_since: Option<Instant>,
}

/// The id of the link of `room` between `a` and `b` (their order does not matter), each with the
/// instance attached now.
fn link_id(room: &str, a: (&str, &str), b: (&str, &str)) -> u64 {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [room, first.0, first.1, second.0, second.1] {
        context.update(part.as_bytes());
        context.update(b"\0");
    }
    let digest = context.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(id)
}

/// The node's id and instance, and its UDP media address.
fn end_of(id: &NodeId, node: &AttachedNode) -> Option<(String, String, v1::MediaAddress)> {
    let address = node
        .register
        .media_addresses
        .iter()
        .find(|address| address.protocol() == v1::TransportProtocol::Udp)?;
    Some((
        id.0.clone(),
        node.register.instance_id.clone(),
        address.clone(),
    ))
}

impl Fleet {
    /// Opens the links between every two of `hosts`, the nodes of `room`, that are attached
    /// here, unless this replica opened them already with the same key. `secret` is the
    /// control plane's own keyring (not the one it shares with the nodes).
    pub fn span(&self, room: &RoomKey, hosts: &[NodeId], secret: &Keyring) {
        let mut state = self.lock();
        let room_text = room.to_string();
        for (index, a) in hosts.iter().enumerate() {
            for b in &hosts[index + 1..] {
                open_link(&mut state, room, &room_text, [a, b], secret);
            }
        }
    }

    /// A node's message for the node at the other end of one of its links: carried there if
    /// the link is the one of its room between the two.
    pub(crate) fn relay(&self, from: &NodeId, mut relay: v1::RoomRelay) {
        let state = self.lock();
        let (Some(sender), Some(receiver)) = (
            state.nodes.get(from),
            state.nodes.get(&NodeId(relay.to_node.clone())),
        ) else {
            debug!(%from, to = %relay.to_node, "a relayed message for a node not attached here");
            return;
        };
        let expected = link_id(
            &relay.room,
            (&from.0, &sender.register.instance_id),
            (&relay.to_node, &receiver.register.instance_id),
        );
        if expected != relay.link_id {
            warn!(%from, to = %relay.to_node, "a relayed message on a link that is not the node's");
            return;
        }
        relay.room.clear();
        relay.to_node.clear();
        let message = v1::ControlMessage::new(ControlKind::Relayed(relay));
        if receiver.to_node.try_send(message).is_err() {
            debug!(%from, "a node does not keep up with relayed messages");
        }
    }
}

fn open_link(
    state: &mut FleetState,
    room: &RoomKey,
    room_text: &str,
    [a, b]: [&NodeId; 2],
    secret: &Keyring,
) {
    let (Some(node_a), Some(node_b)) = (state.nodes.get(a), state.nodes.get(b)) else {
        return;
    };
    // A draining node keeps its links while its participants are still there.
    if node_a.lost_since.is_some() || node_b.lost_since.is_some() {
        return;
    }
    let (Some(end_a), Some(end_b)) = (end_of(a, node_a), end_of(b, node_b)) else {
        return;
    };
    let id = link_id(room_text, (&end_a.0, &end_a.1), (&end_b.0, &end_b.1));
    let key = secret.derive(&id.to_be_bytes());
    if state.links.get(&id).is_some_and(|link| link.key == key) {
        return;
    }
    // The first end is the one of the lower id, so the two ends never seal alike.
    let first_is_a = (end_a.0.as_str(), end_a.1.as_str()) <= (end_b.0.as_str(), end_b.1.as_str());
    let ends = [
        (node_a, node_b, &end_b, first_is_a),
        (node_b, node_a, &end_a, !first_is_a),
    ];
    for (node, peer_node, peer, first) in ends {
        // What the node may send its peer: what the peer names and this replica carries.
        let peer_features = Features::ALL.and(Features::from_names(&peer_node.register.features));
        let open = v1::OpenLink {
            link_id: id,
            room: room_text.to_owned(),
            address: Some(peer.2.clone()),
            key: key.to_vec(),
            first,
            peer_node: peer.0.clone(),
            peer_features: peer_features.names(),
        };
        let _ = node
            .to_node
            .try_send(v1::ControlMessage::new(ControlKind::OpenLink(open)));
    }
    info!(%room, a = %a, b = %b, "link opened");
    state.links.insert(
        id,
        OpenedLink {
            room: room.clone(),
            ends: [a.clone(), b.clone()],
            key,
            idle_since: None,
        },
    );
}

impl FleetState {
    /// Closes the links of a node that is gone: the other end is told.
    pub(super) fn close_links_of(&mut self, node: &NodeId) {
        let gone: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, link)| link.ends.contains(node))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(link) = self.links.remove(&id) {
                info!(room = %link.room, %node, "link closed: a node is gone");
                self.send_close(id, &link);
            }
        }
    }

    /// Closes the links whose room nobody has been in, on either node, for [`LINK_IDLE`].
    pub(super) fn close_idle_links(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (id, link) in &mut self.links {
            let present: u32 = link
                .ends
                .iter()
                .filter_map(|end| self.nodes.get(end))
                .map(|node| room_loads(&node.load).get(&link.room).copied().unwrap_or(0))
                .sum();
            let routed = self
                .sessions
                .values()
                .any(|session| session.room == link.room && link.ends.contains(&session.node));
            if present > 0 || routed {
                link.idle_since = None;
            } else if now.saturating_duration_since(*link.idle_since.get_or_insert(now))
                >= LINK_IDLE
            {
                idle.push(*id);
            }
        }
        for id in idle {
            if let Some(link) = self.links.remove(&id) {
                debug!(room = %link.room, "link closed: nobody in its room");
                self.send_close(id, &link);
            }
        }
    }

    fn send_close(&self, id: u64, link: &OpenedLink) {
        for end in &link.ends {
            if let Some(node) = self.nodes.get(end) {
                let close = v1::CloseLink { link_id: id };
                let _ = node
                    .to_node
                    .try_send(v1::ControlMessage::new(ControlKind::CloseLink(close)));
            }
        }
    }
}

/// The links this replica opened, by id.
pub(super) type OpenedLinks = HashMap<u64, OpenedLink>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_the_same_from_either_end_and_new_with_each_instance() {
        let one = link_id("club/board", ("a", "1"), ("b", "1"));
        assert_eq!(one, link_id("club/board", ("b", "1"), ("a", "1")));
        assert_ne!(one, link_id("club/board", ("a", "2"), ("b", "1")));
        assert_ne!(one, link_id("club/other", ("a", "1"), ("b", "1")));
    }
}
