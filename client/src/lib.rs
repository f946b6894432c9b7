//! A Rust client of Treffpunkt's signalling protocol, on the `webrtc` crate: synthetic
//! participants that join a room through the gateway's WebSocket exactly as browsers do.
//!
//! A [`Participant`] joins under a name, publishes an audio and a video track of synthetic
//! packets ([`media`]), answers the node's renegotiation offers and keyframe requests, and
//! counts and verifies what it receives from everyone else. Like the web client, it follows its session when it moves to
//! another node (a new media connection), and resumes it when its socket to the gateway drops
//! (the media connection stays). Tests use it to check that media really flows through the
//! node; the load generator uses it to create load, so what it does per packet stays cheap.
//!
//! What a participant sends is an [`Outgoing`] ([`outgoing`]): tests use its simple form,
//! [`Publish`]. What it receives is counted per remote track in [`TrackStats`], with the
//! one-way latency of every packet ([`Latency`]): sender and receiver share a clock when they
//! run on one machine.
#![forbid(unsafe_code)]

mod feedback;
pub mod latency;
pub mod media;
pub mod outgoing;
mod peer;
pub mod relay;
mod session;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use latency::Latency;
pub use media::Kind;
pub use outgoing::{Outgoing, OutgoingAudio, OutgoingVideo};

/// What can go wrong for a synthetic participant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway refused the join; `code` is the protocol's error code.
    #[error("join refused: {code}: {message}")]
    Refused {
        /// The stable error code.
        code: String,
        /// The detail.
        message: String,
    },
    /// The WebSocket failed.
    #[error("signalling: {0}")]
    Signalling(String),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// What was asked for is not supported yet.
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the room tells a participant after joining.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// Someone joined.
    Joined {
        /// Their id.
        id: String,
        /// Their name.
        name: String,
    },
    /// Someone left.
    Left {
        /// Their id.
        id: String,
        /// `left` or `connection-lost`.
        reason: String,
    },
    /// An error signal.
    Error {
        /// The stable code.
        code: String,
    },
    /// The session ended.
    Closed {
        /// Why.
        reason: String,
    },
}

/// How a synthetic participant publishes.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Video packets per second (one packet per frame).
    pub video_fps: u32,
    /// Video payload size in bytes.
    pub video_packet_size: usize,
    /// Every how many frames a keyframe is sent.
    pub keyframe_interval: u32,
    /// Audio payload size in bytes (Opus at 50 packets per second).
    pub audio_packet_size: usize,
}

impl Default for Publish {
    fn default() -> Self {
        Self {
            video_fps: 30,
            video_packet_size: 1000,
            keyframe_interval: 15,
            audio_packet_size: 120,
        }
    }
}

/// What one participant received from one remote track.
#[derive(Clone, Debug, Default)]
pub struct TrackStats {
    /// Intact packets received.
    pub packets: u64,
    /// Packets whose payload was not what the sender sent (or not addressed to this stream).
    pub corrupt: u64,
    /// When the first intact packet arrived.
    pub first_at: Option<Instant>,
    /// When the last intact packet arrived.
    pub last_at: Option<Instant>,
    /// The lowest index seen.
    pub lowest_index: Option<u32>,
    /// The highest index seen.
    pub highest_index: Option<u32>,
    /// Distinct indices seen: retransmissions of a packet count once.
    pub distinct: u64,
    /// The longest time between two intact packets.
    pub longest_gap: Duration,
    /// The one-way latency of every intact packet: its arrival less the send time it carries.
    pub latency: Latency,
}

impl TrackStats {
    /// The share of packets between the lowest and highest index that arrived.
    pub fn coverage(&self) -> f64 {
        match (self.lowest_index, self.highest_index) {
            (Some(low), Some(high)) => self.distinct as f64 / f64::from(high - low + 1),
            _ => 0.0,
        }
    }
}

/// The indices seen on a track, one bit each: a receiver records every packet, for as long as
/// a call lasts.
#[derive(Debug, Default)]
struct SeenIndices {
    /// The index of the first bit.
    base: u32,
    bits: Vec<u64>,
    /// Indices below `base` (a packet that overtook earlier ones) or implausibly far above.
    elsewhere: HashSet<u32>,
}

impl SeenIndices {
    /// Beyond this many bits past `base` an index is kept in the set (32 MiB of bits).
    const MAX_BITS: u32 = 1 << 28;

    /// Marks `index` seen; `true` when it was not before.
    fn insert(&mut self, index: u32) -> bool {
        if self.bits.is_empty() && self.elsewhere.is_empty() {
            // Leave room for packets that arrive out of order just after the first one.
            self.base = index.saturating_sub(1024) & !63;
        }
        let offset = index.wrapping_sub(self.base);
        if index < self.base || offset >= Self::MAX_BITS {
            return self.elsewhere.insert(index);
        }
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        new
    }
}

#[derive(Debug, Default)]
struct TrackRecord {
    stats: TrackStats,
    seen: SeenIndices,
}

/// What arrived on one remote track. Clones share the record: the receiving task keeps one and
/// records into it without looking the track up again.
#[derive(Clone, Debug, Default)]
pub struct TrackLog(Arc<Mutex<TrackRecord>>);

impl TrackLog {
    /// What was received so far.
    pub fn stats(&self) -> TrackStats {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone()
    }

    /// Counts one packet: intact (with its index and send time) or not; `now` and `now_us`
    /// are the arrival on the monotonic clock and in microseconds since the Unix epoch.
    fn record(&self, intact: Option<(u32, u64)>, now: Instant, now_us: u64) {
        let mut record = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let TrackRecord { stats, seen } = &mut *record;
        let Some((index, sent_at_us)) = intact else {
            stats.corrupt += 1;
            return;
        };
        stats.packets += 1;
        stats.first_at.get_or_insert(now);
        if let Some(last) = stats.last_at {
            stats.longest_gap = stats.longest_gap.max(now.duration_since(last));
        }
        stats.last_at = Some(now);
        stats.lowest_index = Some(stats.lowest_index.map_or(index, |l| l.min(index)));
        stats.highest_index = Some(stats.highest_index.map_or(index, |h| h.max(index)));
        if seen.insert(index) {
            stats.distinct += 1;
        }
        stats.latency.record(now_us.saturating_sub(sent_at_us));
    }
}

/// Received media, by the sender's participant id and kind.
pub type Received = Arc<Mutex<HashMap<(String, Kind), TrackLog>>>;

/// How a synthetic participant joins.
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    /// What it publishes; `None` for a listener.
    pub publish: Option<Publish>,
    /// Send media to this address (a relay in front of the node) instead of the node's
    /// candidate.
    pub media_via: Option<SocketAddr>,
}

/// How a synthetic participant joins, in full: [`JoinOptions`] with the whole [`Outgoing`]
/// instead of its simple form.
#[derive(Clone, Debug, Default)]
pub struct Joining {
    /// What it sends; `None` (or nothing in it) for a listener.
    pub outgoing: Option<Outgoing>,
    /// Send media to this address (a relay in front of the node) instead of the node's
    /// candidate.
    pub media_via: Option<SocketAddr>,
}

impl From<JoinOptions> for Joining {
    fn from(options: JoinOptions) -> Self {
        Self {
            outgoing: options.publish.as_ref().map(Outgoing::from),
            media_via: options.media_via,
        }
    }
}

/// A synthetic participant in a room.
pub struct Participant {
    /// The id the control plane gave this participant (it stays when the session moves).
    pub id: String,
    /// Who was in the room when it joined: (id, name).
    pub others_at_join: Vec<(String, String)>,
    /// What it received.
    pub received: Received,
    /// When the join was sent.
    pub join_sent_at: Instant,
    control: mpsc::UnboundedSender<session::Control>,
    events: mpsc::UnboundedReceiver<RoomEvent>,
    counters: Arc<session::Counters>,
    sent: Arc<peer::Indices>,
    task: JoinHandle<()>,
}

impl Participant {
    /// Joins the room whose signalling WebSocket is at `url` under `name`, publishing as
    /// `publish` says, and returns once media is connected.
    pub async fn join(url: &str, name: &str, publish: Option<Publish>) -> Result<Self> {
        Self::join_with(url, name, session::publishing(publish)).await
    }

    /// Joins as [`Self::join`] does, with more options.
    pub async fn join_with(url: &str, name: &str, options: JoinOptions) -> Result<Self> {
        Self::join_as(url, name, options.into()).await
    }

    /// Joins as [`Self::join`] does, sending what `joining` says.
    pub async fn join_as(url: &str, name: &str, joining: Joining) -> Result<Self> {
        if joining
            .outgoing
            .as_ref()
            .and_then(|o| o.video.as_ref())
            .is_some_and(|v| v.simulcast)
        {
            return Err(Error::Unsupported(
                "simulcast: the media node does not negotiate it yet",
            ));
        }
        let join_sent_at = Instant::now();
        let received: Received = Arc::new(Mutex::default());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (joined_tx, joined) = oneshot::channel();
        let counters = Arc::new(session::Counters::default());
        let sent = Arc::new(peer::Indices::default());
        let task = tokio::spawn(
            session::Task {
                url: url.to_owned(),
                name: name.to_owned(),
                joining,
                indices: sent.clone(),
                received: received.clone(),
                events: events_tx,
                control: control_rx,
                joined: Some(joined_tx),
                counters: counters.clone(),
            }
            .run(),
        );
        let joined = match tokio::time::timeout(Duration::from_secs(20), joined).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(Error::Signalling("the session ended".into())),
            Err(_) => {
                task.abort();
                return Err(Error::Timeout("the media connection"));
            }
        };
        Ok(Self {
            id: joined.id,
            others_at_join: joined.others,
            received,
            join_sent_at,
            control,
            events,
            counters,
            sent,
            task,
        })
    }

    /// The next thing the room says, waiting at most `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<RoomEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// What was received from `source`'s track of `kind` so far.
    pub fn stats(&self, source: &str, kind: Kind) -> TrackStats {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(source.to_owned(), kind))
            .map(TrackLog::stats)
            .unwrap_or_default()
    }

    /// What was received so far from every remote track: (source, kind, what arrived).
    pub fn tracks(&self) -> Vec<(String, Kind, TrackStats)> {
        let logs: Vec<((String, Kind), TrackLog)> = self
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(key, log)| (key.clone(), log.clone()))
            .collect();
        logs.into_iter()
            .map(|((source, kind), log)| (source, kind, log.stats()))
            .collect()
    }

    /// How many packets of `kind` it sent so far, over all its media connections (its next
    /// packet's index).
    pub fn sent(&self, kind: Kind) -> u32 {
        self.sent.sent(kind)
    }

    /// How many media connections it made (one more with each move to another node).
    pub fn connections(&self) -> u32 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// How often it resumed its session after its socket dropped.
    pub fn resumes(&self) -> u32 {
        self.counters.resumes.load(Ordering::Relaxed)
    }

    /// Sends a raw signalling message, as a misbehaving client would.
    pub fn send_raw(&self, message: Value) {
        let _ = self.control.send(session::Control::Raw(message));
    }

    /// Leaves the room and closes the connection.
    pub async fn leave(self) {
        let (done, left) = oneshot::channel();
        if self.control.send(session::Control::Leave(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), left).await;
        }
        self.task.abort();
    }
}

/// The signalling URL of a room on a gateway at `http_addr`.
pub fn signal_url(http_addr: std::net::SocketAddr, tenant: &str, room: &str) -> String {
    format!("ws://{http_addr}/api/v1/rooms/{tenant}/{room}/signal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_indices_count_each_index_once_in_any_order() {
        let mut seen = SeenIndices::default();
        let indices = [
            5_000u32,
            5_002,
            5_001,
            4_990,
            5_002,
            3_000,
            3_000,
            4_000_000_000,
            5_001,
        ];
        let new: Vec<bool> = indices.iter().map(|&i| seen.insert(i)).collect();
        assert_eq!(
            new,
            [true, true, true, true, false, true, false, true, false]
        );
    }

    #[test]
    fn a_track_log_counts_loss_and_latency() {
        let log = TrackLog::default();
        let now = Instant::now();
        for index in (0..100u32).filter(|i| i % 10 != 3) {
            log.record(Some((index, 1_000)), now, 1_000 + 2_000);
        }
        log.record(Some((4, 1_000)), now, 5_000); // a retransmission
        log.record(None, now, 0);
        let stats = log.stats();
        assert_eq!((stats.packets, stats.distinct, stats.corrupt), (91, 90, 1));
        assert!(
            (stats.coverage() - 0.9).abs() < 1e-9,
            "{}",
            stats.coverage()
        );
        assert_eq!(stats.latency.samples(), 91);
        let p50 = stats.latency.percentile(50.0).unwrap();
        assert!((1_900..=2_100).contains(&p50), "{p50}");
    }
}
