//! What the node's streams to the control plane share: which are up, which replica each session
//! belongs to, and the messages held while a stream is away or full.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::warn;
use treffpunkt_proto::v1;

/// Signals held for one session while its replica is away or its stream is full.
pub(super) const HELD_PER_SESSION: usize = 64;
/// Room messages held for one link of a spanning room while no stream takes them: the roster
/// of a large room that spreads passes through one link.
pub(super) const HELD_PER_LINK: usize = 4_096;

/// A session and the replica it belongs to.
#[derive(Debug)]
pub(super) struct SessionRecord {
    pub(super) link: String,
    pub(super) room: String,
}

/// What the streams share: which are up, which session belongs to which, and what is held.
#[derive(Debug, Default)]
pub(super) struct Links {
    /// Streams that are up, by the replica's id (its address, for a control plane that does
    /// not name its replicas).
    pub(super) up: HashMap<String, mpsc::Sender<v1::NodeMessage>>,
    /// The replicas that serve, as each stream's replica last told them.
    pub(super) replicas: HashMap<String, Vec<String>>,
    pub(super) sessions: HashMap<String, SessionRecord>,
    pub(super) held: HashMap<String, VecDeque<v1::NodeMessage>>,
    /// Room messages of spanning rooms' links that no stream took yet, by link id.
    pub(super) held_relays: HashMap<u64, VecDeque<v1::NodeMessage>>,
    /// Held messages dropped to stay within the bounds since this was last logged.
    pub(super) dropped: u64,
    pub(super) draining: Option<v1::Draining>,
    /// The replica that opened each link of a spanning room, by link id: its messages go
    /// back that way.
    pub(super) room_links: HashMap<u64, String>,
}

pub(super) type Shared = Arc<Mutex<Links>>;

pub(super) fn lock(links: &Shared) -> std::sync::MutexGuard<'_, Links> {
    // Critical sections only move entries between maps.
    links
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Links {
    pub(super) fn bind(&mut self, session: &str, link: &str, room: Option<String>) {
        let record = self
            .sessions
            .entry(session.to_owned())
            .or_insert_with(|| SessionRecord {
                link: link.to_owned(),
                room: String::new(),
            });
        record.link = link.to_owned();
        if let Some(room) = room {
            record.room = room;
        }
    }

    /// Sends `message` for `session` over its replica's stream, after what was held for the
    /// session, or holds it: while the replica is away, or while its stream is full (a burst
    /// of a large room), when [`Links::retry_held`] sends it later, in order.
    pub(super) fn route(&mut self, session: &str, message: v1::NodeMessage) {
        let stream = self
            .sessions
            .get(session)
            .and_then(|record| self.up.get(&record.link));
        let message = match stream {
            Some(stream) if !self.held.contains_key(session) => match stream.try_send(message) {
                Ok(()) => return,
                Err(error) => error.into_inner(),
            },
            _ => message,
        };
        let held = self.held.entry(session.to_owned()).or_default();
        if held.len() == HELD_PER_SESSION {
            held.pop_front();
            self.dropped += 1;
        }
        held.push_back(message);
        self.send_held(session);
    }

    /// Sends what is held for `session`, oldest first, while its replica's stream takes it.
    pub(super) fn send_held(&mut self, session: &str) {
        let stream = self
            .sessions
            .get(session)
            .and_then(|record| self.up.get(&record.link));
        let (Some(stream), Some(held)) = (stream, self.held.get_mut(session)) else {
            return;
        };
        if send_in_order(stream, held) {
            self.held.remove(session);
        }
    }

    /// Sends a room message of the spanning room's `link` through the replica that opened the
    /// link (or any that is up, when that one is away), after what was held for the link, or
    /// holds it while no stream takes it.
    pub(super) fn relay(&mut self, link: u64, message: v1::NodeMessage) {
        let held = self.held_relays.entry(link).or_default();
        if held.len() == HELD_PER_LINK {
            held.pop_front();
            self.dropped += 1;
        }
        held.push_back(message);
        self.send_held_relay(link);
    }

    /// Sends what is held for the room link `link`, oldest first, while a stream takes it.
    pub(super) fn send_held_relay(&mut self, link: u64) {
        let stream = self
            .room_links
            .get(&link)
            .and_then(|via| self.up.get(via))
            .or_else(|| self.up.values().next());
        let (Some(stream), Some(held)) = (stream, self.held_relays.get_mut(&link)) else {
            return;
        };
        if send_in_order(stream, held) {
            self.held_relays.remove(&link);
        }
    }

    /// Sends what was held for sessions and links whose stream is up: what a full stream
    /// could not take goes out once it has room (tried with every load report, once a second).
    pub(super) fn retry_held(&mut self) {
        let sessions: Vec<String> = self.held.keys().cloned().collect();
        for session in sessions {
            self.send_held(&session);
        }
        let links: Vec<u64> = self.held_relays.keys().copied().collect();
        for link in links {
            self.send_held_relay(link);
        }
        if self.dropped > 0 {
            warn!(
                dropped = self.dropped,
                "messages for the control plane were dropped: more were held than a session or room link may hold"
            );
            self.dropped = 0;
        }
    }

    /// Sends what was held for the sessions of `link`; what its stream cannot take yet stays
    /// held, in order.
    pub(super) fn flush(&mut self, link: &str) {
        let sessions: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, record)| record.link == link)
            .map(|(id, _)| id.clone())
            .collect();
        for session in sessions {
            self.send_held(&session);
        }
    }

    /// How many replicas that serve this node has no stream to.
    pub(super) fn missing(&self) -> usize {
        let mut known: Vec<&String> = self
            .replicas
            .iter()
            .filter(|(link, _)| self.up.contains_key(*link))
            .flat_map(|(_, ids)| ids)
            .filter(|id| !self.up.contains_key(*id))
            .collect();
        known.sort();
        known.dedup();
        known.len()
    }

    pub(super) fn hosted_rooms(&self) -> Vec<v1::HostedRoom> {
        let mut rooms: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (session, record) in &self.sessions {
            rooms.entry(&record.room).or_default().push(session.clone());
        }
        rooms
            .into_iter()
            .filter_map(|(room, session_ids)| {
                let (tenant, name) = room.split_once('/')?;
                Some(v1::HostedRoom {
                    room: Some(v1::RoomRef {
                        tenant: tenant.to_owned(),
                        name: name.to_owned(),
                    }),
                    session_ids,
                })
            })
            .collect()
    }
}

/// Sends `held` over `stream`, oldest first, while it takes them; whether all went.
fn send_in_order(
    stream: &mpsc::Sender<v1::NodeMessage>,
    held: &mut VecDeque<v1::NodeMessage>,
) -> bool {
    while let Some(message) = held.pop_front() {
        if let Err(error) = stream.try_send(message) {
            held.push_front(error.into_inner());
            return false;
        }
    }
    true
}
