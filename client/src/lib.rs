//! A Rust client of Treffpunkt's signalling protocol, on the `webrtc` crate: synthetic
//! participants that join a room through the gateway's WebSocket exactly as browsers do.
//!
//! The messages are the protocol's own types, [`treffpunkt_proto::signalling`]: the client
//! sends [`ClientMessage`]s ([`Participant::send`] for any of them)
//! and reads [`ServerMessage`]s, so that it cannot drift from what
//! the gateway speaks. They are re-exported as [`signalling`] for the client's users.
//!
//! A [`Participant`] joins under a name, publishes an audio and a video track of synthetic
//! packets ([`media`]), answers the node's renegotiation offers and keyframe requests, and
//! counts and verifies what it receives from everyone else. Like the web client, it follows
//! its session when it moves to another node (a new media connection), and resumes it when its
//! socket to the gateway drops (the media connection stays). Tests use it to check that media
//! really flows through the node; the load generator uses it to create load, so what it does
//! per packet stays cheap.
//!
//! What a participant sends is an [`Outgoing`] ([`outgoing`]): tests use its simple form,
//! [`Publish`]. Its camera may be sent in three simulcast layers, as browsers send theirs; the
//! node asks it to stop and resume layers, and for keyframes per layer. Its microphone's
//! packets carry an audio level that the owner changes at will
//! ([`Participant::set_audio_level`]), so that a test can make someone speak.
//!
//! What it receives is counted per remote track in [`TrackStats`], with the one-way latency of
//! every packet ([`Latency`]; sender and receiver share a clock when they run on one machine),
//! the bytes, and which simulcast layer arrived when. What the node tells it about the call
//! (speaker, paused videos, layers, chat) is kept in [`Notices`].
//!
//! [`Participant::join_janus`] joins a room of Janus's VideoRoom instead, through Janus's HTTP
//! API ([`janus`]), so that the benchmark drives the SFU users would otherwise pick with the
//! same participants and counts what they receive the same way.
//!
//! [`baseline`] is the bare UDP relay that the benchmarks measure beside the node.
//! [`loopback`] gives the tests and benchmarks that start processes ports to start them on.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod janus;
pub mod latency;
pub mod loopback;
pub mod media;
pub mod notices;
pub mod outgoing;
mod peer;
pub mod received;
pub mod relay;
mod sender;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use treffpunkt_proto::signalling::{ClientMessage, ServerMessage, Viewport};

pub use latency::Latency;
pub use media::Kind;
pub use notices::{Notices, VideoState};
pub use outgoing::{
    AUDIO_FRAME_MS, DTX_INTERVAL_MS, MAX_LAYERS, Outgoing, OutgoingAudio, OutgoingVideo, SILENCE,
};
pub use received::{TrackLog, TrackStats};
pub use treffpunkt_proto::signalling;

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
    /// What the room says about moderation and media state, as it arrived: raised hands, a
    /// new moderator, the room locked, who knocks, a moderator's request, someone's
    /// microphone or camera switched.
    Notice(ServerMessage),
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
    /// The room's password, for a room that asks for one.
    pub password: Option<String>,
    /// The invitation from a link, for an invite-only room.
    pub invite: Option<String>,
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
    /// The address its media socket binds to (loopback unless set): one of this host's, or of
    /// the network namespace the participant runs in.
    pub local_ip: Option<IpAddr>,
    /// The room's password, for a room that asks for one.
    pub password: Option<String>,
    /// The invitation from a link, for an invite-only room.
    pub invite: Option<String>,
}

impl From<JoinOptions> for Joining {
    fn from(options: JoinOptions) -> Self {
        Self {
            outgoing: options.publish.as_ref().map(Outgoing::from),
            media_via: options.media_via,
            local_ip: None,
            password: options.password,
            invite: options.invite,
        }
    }
}

/// A synthetic participant in a room.
pub struct Participant {
    /// The id the control plane gave this participant (it stays when the session moves).
    pub id: String,
    /// Who was in the room when it joined: (id, name).
    pub others_at_join: Vec<(String, String)>,
    /// Whether it moderates, as it was welcomed.
    pub moderator: bool,
    /// What it received.
    pub received: Received,
    /// When the join was sent.
    pub join_sent_at: Instant,
    control: mpsc::UnboundedSender<session::Control>,
    events: mpsc::UnboundedReceiver<RoomEvent>,
    counters: Arc<session::Counters>,
    sending: Arc<sender::Sending>,
    notices: notices::NoticeBoard,
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
        let (url, name) = (url.to_owned(), name.to_owned());
        Self::start(&joining.clone(), |wiring| {
            tokio::spawn(
                session::Task {
                    url,
                    name,
                    joining,
                    sending: wiring.sending,
                    notices: wiring.notices,
                    received: wiring.received,
                    events: wiring.events,
                    control: wiring.control,
                    joined: Some(wiring.joined),
                    counters: wiring.counters,
                }
                .run(),
            )
        })
        .await
    }

    /// Joins room `room` of the Janus VideoRoom server whose HTTP API is at `server`, for the
    /// benchmark's comparison ([`janus`]): with something to send it publishes (as the
    /// room's one publisher, whose source is [`janus::SOURCE`]), otherwise it subscribes to
    /// that publisher. Returns once media is connected.
    pub async fn join_janus(
        server: SocketAddr,
        room: u64,
        name: &str,
        joining: Joining,
    ) -> Result<Self> {
        let name = name.to_owned();
        Self::start(&joining.clone(), |wiring| {
            tokio::spawn(janus::Task::new(server, room, name, joining, wiring).run())
        })
        .await
    }

    /// Wires a participant to the signalling task that `spawn` starts, and waits until the
    /// task says it is in.
    async fn start(
        joining: &Joining,
        spawn: impl FnOnce(Wiring) -> JoinHandle<()>,
    ) -> Result<Self> {
        let join_sent_at = Instant::now();
        let received: Received = Arc::new(Mutex::default());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (joined_tx, joined) = oneshot::channel();
        let counters = Arc::new(session::Counters::default());
        let level = joining
            .outgoing
            .as_ref()
            .and_then(|outgoing| outgoing.audio.as_ref())
            .map_or(SILENCE, |audio| audio.level);
        let sending = Arc::new(sender::Sending::new(level));
        let notices = notices::NoticeBoard::default();
        let task = spawn(Wiring {
            sending: sending.clone(),
            notices: notices.clone(),
            received: received.clone(),
            events: events_tx,
            control: control_rx,
            joined: joined_tx,
            counters: counters.clone(),
        });
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
            moderator: joined.moderator,
            received,
            join_sent_at,
            control,
            events,
            counters,
            sending,
            notices,
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

    /// How many packets of `kind` it sent so far, over all its media connections and all
    /// simulcast layers (without simulcast, its next packet's index).
    pub fn sent(&self, kind: Kind) -> u32 {
        self.sending.sent(kind)
    }

    /// How many video packets of simulcast layer `layer` (0 without simulcast) it sent so far.
    pub fn sent_layer(&self, layer: usize) -> u32 {
        self.sending.sent_layer(layer)
    }

    /// Which of its video layers it sends now, lowest first: all until the node asks it to
    /// stop some.
    pub fn active_layers(&self) -> [bool; MAX_LAYERS] {
        self.sending.active_layers()
    }

    /// Sets the audio level its microphone packets carry from the next one on (RFC 6464: 0
    /// loudest, around 20-30 for speech, [`SILENCE`] for none).
    pub fn set_audio_level(&self, level: u8) {
        self.sending.set_audio_level(level);
    }

    /// What the node told it so far: the speaker, the state of each video, which layers to
    /// send, chat.
    pub fn notices(&self) -> Notices {
        self.notices.snapshot()
    }

    /// Tells the node how tall it shows each video (by stream id, the publisher's participant
    /// id for a camera); 0 for a video it does not show.
    pub fn set_viewports(&self, viewports: &[(&str, u32)]) {
        let viewports = viewports
            .iter()
            .map(|(stream_id, height)| Viewport {
                stream_id: (*stream_id).to_owned(),
                height: *height,
            })
            .collect();
        self.send(ClientMessage::Viewports { viewports });
    }

    /// Asks for audio only (no video at all), or for video again.
    pub fn set_audio_only(&self, audio_only: bool) {
        self.send(ClientMessage::ReceiveSettings { audio_only });
    }

    /// Writes a chat message to everyone else in the room.
    pub fn send_chat(&self, text: &str) {
        self.send(ClientMessage::Chat {
            text: text.to_owned(),
        });
    }

    /// How many media connections it made (one more with each move to another node).
    pub fn connections(&self) -> u32 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// How often it resumed its session after its socket dropped.
    pub fn resumes(&self) -> u32 {
        self.counters.resumes.load(Ordering::Relaxed)
    }

    /// Sends a signalling message.
    pub fn send(&self, message: ClientMessage) {
        let _ = self.control.send(session::Control::Send(message));
    }

    /// Sends `text` as a signalling message as it is, valid or not, as a misbehaving client
    /// would.
    pub fn send_raw(&self, text: impl Into<String>) {
        let _ = self.control.send(session::Control::Raw(text.into()));
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

/// What a participant shares with its signalling task.
pub(crate) struct Wiring {
    /// What it sends (the owner reads what was sent and sets the audio level; the server
    /// chooses the layers).
    pub sending: Arc<sender::Sending>,
    /// What the server told it.
    pub notices: notices::NoticeBoard,
    /// What it received.
    pub received: Received,
    /// What the room says, for the owner.
    pub events: mpsc::UnboundedSender<RoomEvent>,
    /// What the owner asks.
    pub control: mpsc::UnboundedReceiver<session::Control>,
    /// Answered once the participant is in and connected, or could not get in.
    pub joined: oneshot::Sender<Result<session::Joined>>,
    /// Counters the owner reads.
    pub counters: Arc<session::Counters>,
}

/// The signalling URL of a room on a gateway at `http_addr`.
pub fn signal_url(http_addr: std::net::SocketAddr, tenant: &str, room: &str) -> String {
    format!("ws://{http_addr}/api/v1/rooms/{tenant}/{room}/signal")
}
