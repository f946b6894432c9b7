//! What the node's streams to the control plane share: which are up, which replica each session
//! belongs to, and the messages held while a stream is away or full.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;
use treffpunkt_proto::features::Features;
use treffpunkt_proto::v1::{self, node_message::Kind as NodeKind};

use crate::node::Event;

/// Signals held for one session while its replica is away or its stream is full.
pub(super) const HELD_PER_SESSION: usize = 64;
/// Room messages held for one link of a spanning room while no stream takes them: the roster
/// of a large room that spreads passes through one link.
pub(super) const HELD_PER_LINK: usize = 4_096;
/// How long the last messages of a session that has ended wait for its replica: a replica away
/// longer than this has lost the participant's connection too, and the client has moved on.
pub(super) const CLOSED_HELD_FOR: Duration = Duration::from_secs(30);

type Outbound = mpsc::Sender<v1::NodeMessage>;
type Held<K> = HashMap<K, VecDeque<v1::NodeMessage>>;

/// A session and the replica it belongs to.
#[derive(Debug)]
pub(super) struct SessionRecord {
    pub(super) link: String,
    pub(super) room: String,
    /// When the session ended, while its last messages still wait for its replica's stream.
    pub(super) closed: Option<Instant>,
}

/// What the streams share: which are up, which session belongs to which, and what is held.
#[derive(Debug, Default)]
pub(super) struct Links {
    /// Streams that are up, by the replica's id (its address, for a control plane that does
    /// not name its replicas).
    pub(super) up: HashMap<String, Outbound>,
    /// The replicas that serve, as each stream's replica last told them.
    pub(super) replicas: HashMap<String, Vec<String>>,
    pub(super) sessions: HashMap<String, SessionRecord>,
    pub(super) held: Held<String>,
    /// Room messages of spanning rooms' links that no stream took yet, by link id.
    pub(super) held_relays: Held<u64>,
    /// Held messages dropped to stay within the bounds since this was last logged.
    pub(super) dropped: u64,
    pub(super) draining: Option<v1::Draining>,
    /// The links of spanning rooms, by link id.
    pub(super) room_links: HashMap<u64, RoomLink>,
    /// What each replica with a stream up understands (its `Registered.features`).
    pub(super) replica_features: HashMap<String, Features>,
}

/// A link of a spanning room, as the replica that opened it gave it.
#[derive(Debug)]
pub(super) struct RoomLink {
    /// The replica that opened it: its messages go back that way.
    pub(super) via: String,
    /// What the other node understands and that replica carries (`OpenLink.peer_features`).
    pub(super) peer_features: Features,
}

pub(super) type Shared = Arc<Mutex<Links>>;

pub(super) fn lock(links: &Shared) -> std::sync::MutexGuard<'_, Links> {
    // Critical sections only move entries between maps.
    links
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Links {
    /// Binds `session` to the replica `link`. When the session moves to another replica, what
    /// is held for it takes the forms that one understands (it may be of another release).
    pub(super) fn bind(&mut self, session: &str, link: &str, room: Option<String>) {
        let record = self
            .sessions
            .entry(session.to_owned())
            .or_insert_with(|| SessionRecord {
                link: link.to_owned(),
                room: String::new(),
                closed: None,
            });
        let moved = record.link != link;
        record.link = link.to_owned();
        if let Some(room) = room {
            record.room = room;
        }
        if moved {
            let features = self.session_features(session);
            if let Some(queue) = self.held.get_mut(session) {
                reform(queue, features);
            }
        }
    }

    /// What the replica of `session` understands: only the forms every release understands
    /// while that is not known.
    pub(super) fn session_features(&self, session: &str) -> Features {
        self.sessions
            .get(session)
            .and_then(|record| self.replica_features.get(&record.link))
            .copied()
            .unwrap_or_default()
    }

    /// What may be sent on `link`: what its other node understands, as the replica that
    /// opened it said, and what the replica it goes through now carries (another one while
    /// that one is away, perhaps of another release).
    pub(super) fn link_features(&self, link: u64) -> Features {
        let peer = (self.room_links.get(&link))
            .map_or_else(Features::default, |room_link| room_link.peer_features);
        match link_replica(&self.up, &self.room_links, link) {
            Some((replica, _)) => peer.and(
                self.replica_features
                    .get(replica)
                    .copied()
                    .unwrap_or_default(),
            ),
            None => peer,
        }
    }

    /// Sends `message` for `session` over its replica's stream, after what was held for the
    /// session, or holds it: while the replica is away, or while its stream is full (a burst
    /// of a large room), when [`Links::retry_held`] sends it later, in order.
    pub(super) fn route(&mut self, session: &str, message: v1::NodeMessage) {
        let stream = session_stream(&self.up, &self.sessions, session);
        send_or_hold(
            &mut self.held,
            session,
            stream,
            message,
            HELD_PER_SESSION,
            &mut self.dropped,
        );
    }

    /// Routes the message that `session` has ended, and forgets the session once nothing of
    /// it is held any more: what its replica's stream cannot take yet still goes out, for at
    /// most [`CLOSED_HELD_FOR`].
    pub(super) fn close(&mut self, session: &str, message: v1::NodeMessage, now: Instant) {
        self.route(session, message);
        match self.sessions.get_mut(session) {
            Some(record) if self.held.contains_key(session) => record.closed = Some(now),
            _ => {
                // Nothing held, or no replica it could ever go to.
                self.sessions.remove(session);
                self.held.remove(session);
            }
        }
    }

    /// Sends what is held for `session`, oldest first, while its replica's stream takes it;
    /// a session that has ended is forgotten once all of it went.
    pub(super) fn send_held(&mut self, session: &str) {
        let stream = session_stream(&self.up, &self.sessions, session);
        if drain(&mut self.held, session, stream)
            && self
                .sessions
                .get(session)
                .is_some_and(|record| record.closed.is_some())
        {
            self.sessions.remove(session);
        }
    }

    /// Sends a room message of the spanning room's `link` through the replica that opened the
    /// link (or any that is up, when that one is away), after what was held for the link, or
    /// holds it while no stream takes it.
    pub(super) fn relay(&mut self, link: u64, message: v1::NodeMessage) {
        let stream = link_stream(&self.up, &self.room_links, link);
        send_or_hold(
            &mut self.held_relays,
            &link,
            stream,
            message,
            HELD_PER_LINK,
            &mut self.dropped,
        );
    }

    /// Sends what was held for sessions and links whose stream is up: what a full stream
    /// could not take goes out once it has room (tried with every load report, once a second).
    /// What an ended session left behind for longer than [`CLOSED_HELD_FOR`] is dropped.
    pub(super) fn retry_held(&mut self, now: Instant) {
        let sessions: Vec<String> = self.held.keys().cloned().collect();
        for session in sessions {
            self.send_held(&session);
        }
        let links: Vec<u64> = self.held_relays.keys().copied().collect();
        for link in links {
            let stream = link_stream(&self.up, &self.room_links, link);
            drain(&mut self.held_relays, &link, stream);
        }
        let (held, dropped) = (&mut self.held, &mut self.dropped);
        self.sessions.retain(|session, record| {
            let expired = record
                .closed
                .is_some_and(|at| now.saturating_duration_since(at) > CLOSED_HELD_FOR);
            if expired {
                *dropped += held.remove(session).map_or(0, |queue| queue.len() as u64);
            }
            !expired
        });
        if self.dropped > 0 {
            warn!(
                dropped = self.dropped,
                "messages for the control plane were dropped: more were held than a session or room link may hold, or longer than an ended session's may wait"
            );
            self.dropped = 0;
        }
    }

    /// The stream to the replica `link` is up: what was held for its sessions goes out, and
    /// what is held for the links of spanning rooms takes the forms they may carry now.
    pub(super) fn stream_up(&mut self, link: &str, stream: Outbound, features: Features) {
        self.up.insert(link.to_owned(), stream);
        self.replica_features.insert(link.to_owned(), features);
        self.reform_held_relays();
        self.flush(link);
    }

    /// The stream to the replica `link` has ended.
    pub(super) fn stream_down(&mut self, link: &str) {
        self.up.remove(link);
        self.replicas.remove(link);
        self.replica_features.remove(link);
        self.reform_held_relays();
    }

    /// Turns what is held for each link into the forms the link may carry through the streams
    /// that are up now. A link's messages are formed for the replica they would go through
    /// when they are said; when the streams change, a roster held in the newer form may be
    /// bound for a replica of an earlier release (one that came back alone after an outage),
    /// which would drop it.
    fn reform_held_relays(&mut self) {
        let links: Vec<u64> = self.held_relays.keys().copied().collect();
        for link in links {
            let features = self.link_features(link);
            if let Some(queue) = self.held_relays.get_mut(&link) {
                reform(queue, features);
            }
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

    /// The rooms of the sessions that are on (not those that have ended and whose last
    /// messages wait), with the sessions in each.
    pub(super) fn hosted_rooms(&self) -> Vec<v1::HostedRoom> {
        let mut rooms: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (session, record) in &self.sessions {
            if record.closed.is_none() {
                rooms.entry(&record.room).or_default().push(session.clone());
            }
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

/// The signals and room messages in `queue` in the forms a receiver that understands
/// `features` understands.
fn reform(queue: &mut VecDeque<v1::NodeMessage>, features: Features) {
    if features == Features::ALL {
        return;
    }
    for message in std::mem::take(queue) {
        match message.kind {
            Some(NodeKind::Signal(v1::SessionSignal {
                session_id,
                signal: Some(signal),
            })) => queue.extend(super::forms::signal(signal, features).map(|signal| {
                super::event_message(Event::Signal {
                    session_id: session_id.clone(),
                    signal,
                })
            })),
            Some(NodeKind::Relay(relay))
                if matches!(relay.kind, Some(v1::room_relay::Kind::Participants(_))) =>
            {
                let (room, to_node) = (relay.room.clone(), relay.to_node.clone());
                match super::relay::from_wire(relay.clone()) {
                    Ok((link, message)) => {
                        queue.extend(super::forms::relay(message, features).map(|message| {
                            super::event_message(Event::Relay {
                                link,
                                room: room.clone(),
                                to_node: to_node.clone(),
                                message,
                            })
                        }));
                    }
                    // Not a roster the node would have made; it goes as it is.
                    Err(_) => queue.push_back(v1::NodeMessage {
                        kind: Some(NodeKind::Relay(relay)),
                    }),
                }
            }
            kind => queue.push_back(v1::NodeMessage { kind }),
        }
    }
}

/// The stream of the replica `session` belongs to, when it is up.
fn session_stream<'a>(
    up: &'a HashMap<String, Outbound>,
    sessions: &HashMap<String, SessionRecord>,
    session: &str,
) -> Option<&'a Outbound> {
    sessions
        .get(session)
        .and_then(|record| up.get(&record.link))
}

/// The stream a spanning room's `link` speaks through: the replica's that opened it, or any
/// that is up while that one is away.
fn link_stream<'a>(
    up: &'a HashMap<String, Outbound>,
    room_links: &HashMap<u64, RoomLink>,
    link: u64,
) -> Option<&'a Outbound> {
    link_replica(up, room_links, link).map(|(_, stream)| stream)
}

/// The replica `link` speaks through, with its stream: see [`link_stream`].
fn link_replica<'a>(
    up: &'a HashMap<String, Outbound>,
    room_links: &HashMap<u64, RoomLink>,
    link: u64,
) -> Option<(&'a String, &'a Outbound)> {
    room_links
        .get(&link)
        .and_then(|room_link| up.get_key_value(&room_link.via))
        .or_else(|| up.iter().next())
}

/// Sends `message` over `stream` when nothing is held under `key` before it; holds it behind
/// what is, otherwise, and sends what the stream takes. At most `cap` wait under a key: the
/// oldest goes for a newer one, counted in `dropped`.
fn send_or_hold<K, Q>(
    held: &mut Held<K>,
    key: &Q,
    stream: Option<&Outbound>,
    message: v1::NodeMessage,
    cap: usize,
    dropped: &mut u64,
) where
    K: Hash + Eq + std::borrow::Borrow<Q>,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    // Behind what is held, the oldest goes first; alone, it was just tried.
    let (message, behind) = match stream {
        Some(stream) if !held.contains_key(key) => match stream.try_send(message) {
            Ok(()) => return,
            Err(error) => (error.into_inner(), false),
        },
        _ => (message, true),
    };
    let queue = held.entry(key.to_owned()).or_default();
    if queue.len() == cap {
        queue.pop_front();
        *dropped += 1;
    }
    queue.push_back(message);
    if behind {
        drain(held, key, stream);
    }
}

/// Sends what is held under `key` over `stream`, oldest first, while it takes them; whether
/// nothing is held there any more.
fn drain<K, Q>(held: &mut Held<K>, key: &Q, stream: Option<&Outbound>) -> bool
where
    K: Hash + Eq + std::borrow::Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    let Some(queue) = held.get_mut(key) else {
        return true;
    };
    let Some(stream) = stream else {
        return false;
    };
    while let Some(message) = queue.pop_front() {
        if let Err(error) = stream.try_send(message) {
            queue.push_front(error.into_inner());
            return false;
        }
    }
    held.remove(key);
    true
}
