//! Admission: the join as a use case, over the [`Store`] and the [`Fleet`], with no socket and
//! no HTTP in it.
//!
//! A participant asks to join a room under a name ([`Admission::join`]):
//!
//! 1. the name is checked ([`DisplayName`]);
//! 2. the tenant is read, once for the whole join, and a suspended tenant admits nobody;
//! 3. the room is read, and what its door asks is checked (the `access` module): the room's
//!    password, or an invitation signed with the tenant's own key;
//! 4. a new name becomes an ad-hoc room only after everything that could refuse the join has
//!    been checked: the tenant allows ad-hoc rooms, has fewer rooms than its limit, and a node
//!    it may use has room to spare. A refused join creates nothing, and two joins that race to
//!    create the same name share the one room;
//! 5. [`domain::admit`] decides whether one more person may join (suspended tenant, full room);
//! 6. the room is placed (`placement`): it keeps its live node, or goes to the least-loaded
//!    node its tenant may use, recorded with compare-and-set so that racing gateways agree;
//! 7. a session is opened on that node with a signed grant, and a resume ticket is sealed for
//!    the client (`tickets`).
//!
//! An ad-hoc room whose creating join still failed (its node went away in between) is removed
//! again at once; one that nobody is in [`UNJOINED_ROOM_TTL`] after its creation is removed then
//! by [`Admission::run_unjoined_sweeper`] (the `unjoined` module), which runs beside the
//! gateway.
//!
//! What comes back is an [`Admitted`]: who the participant is ([`Member`]) and where its
//! session runs ([`Attachment`], with the channel of the node's events for it and the ticket).
//! A refusal is a [`Refusal`] with a stable [`RefusalCode`] the client translates.
//!
//! A client whose socket dropped comes back with its ticket ([`Admission::resume`]), through
//! any replica; if the session's node is gone or does not answer, it gets a new session on
//! another node. A session whose node goes away or drains while the participant is in the call
//! is moved ([`Admission::move_session`]).
//!
//! The gateway ([`crate::gateway`]) calls this from the signalling WebSocket and relays the
//! session afterwards; it decides nothing of the above itself.
//!
//! # Limits
//!
//! The limits admission holds are the tenant's and the platform's, each refused with its code
//! before anything is created:
//!
//! | limit | from | code |
//! |---|---|---|
//! | the display name: 1 to 64 characters, something visible, no control or bidirectional characters | [`DisplayName`] | `name-empty`, `name-too-long`, `name-invalid` |
//! | a suspended tenant admits nobody | the Tenant | `tenant-suspended` |
//! | a Password room: its password (the gateway limits wrong ones per address and room) | the Room's Secret | `password-required`, `password-wrong` |
//! | an InviteOnly room: an unexpired invitation into it, signed with the tenant's key | the tenant's signing key | `invite-required`, `invite-invalid`, `invite-expired` |
//! | new names only where the tenant allows ad-hoc rooms | the Tenant's policy | `room-not-found` |
//! | rooms per tenant, counted from the store ([`Store::count_rooms`]) and enforced again by it on create | the Tenant's limits | `room-limit` |
//! | a node the tenant may use with room to spare | the fleet | `platform-full` |
//! | participants per room | the Room, within the Tenant's limit | `room-full` |
//! | a new ad-hoc room with nobody in it after [`Admission::unjoined_ttl`] | the gateway's limits | removed |
//!
//! What one client may open and how often it may ask (connections, sockets, joins per minute,
//! time to join) is the gateway's to limit, before it calls admission.

mod access;
mod placement;
mod refusal;
mod tickets;
mod unjoined;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use treffpunkt_proto::grant::{Keyring, SharedKeyring};
use treffpunkt_proto::{random, v1};

pub use refusal::{Refusal, RefusalCode};
pub use tickets::{GRANT_LIFETIME, TICKET_LIFETIME, TICKET_REFRESH};
pub use unjoined::UNJOINED_ROOM_TTL;

use crate::domain::{
    self, Credentials, DisplayName, DomainError, NodeId, Room, RoomKey, Tenant, TenantName,
};
use crate::fleet::{ClientEvent, Fleet, FleetError, ResumeError, Resumed};
use crate::store::{Store, StoreError};

/// Bytes of a participant id: unique within a room.
const PARTICIPANT_ID_BYTES: usize = 8;
/// Bytes of a session id: unguessable, since it names the session on every node.
const SESSION_ID_BYTES: usize = 16;
/// How many nodes that filled up while a join was placed it passes over before it is refused
/// as `platform-full`.
const MAX_FULL_NODES: usize = 3;
/// How long a resume waits for its session's node to attach to this replica (which may have
/// just started) before the session moves to another node.
const RESUME_ATTACH_WAIT: Duration = Duration::from_secs(6);

/// The participant a session speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Their id in the room; it stays when the session moves or resumes.
    pub participant_id: String,
    /// Their name.
    pub name: DisplayName,
    /// How many participants the room admits, for the node's own check.
    pub max_participants: u32,
    /// How many speakers' cameras the participant receives.
    pub video_last_n: u32,
    /// They moderate.
    pub moderator: bool,
    /// They wait in the lobby until a moderator lets them in.
    pub lobby: bool,
    /// They moderate if nobody in the room does when they come in (an ad-hoc room of a tenant
    /// that lets the first person in moderate).
    pub first_moderates: bool,
    /// The room's title, when it has one.
    pub room_title: Option<String>,
}

/// Where a participant's session runs.
#[derive(Debug)]
pub struct Attachment {
    /// The node that carries it.
    pub node: NodeId,
    /// The session's id at the node.
    pub session_id: String,
    /// The instance of the node that opened the session (its tickets name it).
    pub node_instance: String,
    /// The session's resume generation: its tickets carry it, and the node resumes the
    /// session only with a ticket of the current one.
    pub generation: u64,
    /// What the node says to the participant.
    pub events: mpsc::Receiver<ClientEvent>,
    /// The sealed ticket with which the client resumes this session should its socket drop.
    pub ticket: String,
}

/// A participant let in: who, and where their session runs.
#[derive(Debug)]
pub struct Admitted {
    /// Who.
    pub member: Member,
    /// Where.
    pub attachment: Attachment,
    /// The session could not be resumed where it ran and was opened on another node: the
    /// client's media connection went with the old node and must be made again.
    pub moved: bool,
}

/// The keyrings that admission signs with.
#[derive(Clone, Debug)]
pub struct Keys {
    /// For grants, shared with the media nodes.
    pub grants: SharedKeyring,
    /// For resume tickets, the control plane's alone: a media node cannot make tickets.
    pub tickets: SharedKeyring,
}

impl Keys {
    /// Keys that sign grants with `grants` and tickets with `tickets`.
    pub fn new(grants: Keyring, tickets: Keyring) -> Self {
        Self {
            grants: SharedKeyring::new(grants),
            tickets: SharedKeyring::new(tickets),
        }
    }
}

/// The join use case: checks, placement and sessions over a store of tenants and rooms and the
/// fleet of media nodes.
#[derive(Debug)]
pub struct Admission<S> {
    store: Arc<S>,
    fleet: Arc<Fleet>,
    keys: Keys,
    /// The ad-hoc rooms this replica created within the last `unjoined_ttl`.
    unjoined: unjoined::UnjoinedRooms,
    unjoined_ttl: Duration,
    /// Where placement conflicts are counted.
    pub(crate) metrics: crate::metrics::Metrics,
}

impl<S: Store> Admission<S> {
    /// Admission over `store`, placing rooms on the nodes of `fleet` and signing grants and
    /// tickets with `keys`. New ad-hoc rooms that nobody is in after [`UNJOINED_ROOM_TTL`] are
    /// removed then.
    pub fn new(store: Arc<S>, fleet: Arc<Fleet>, keys: Keys) -> Self {
        Self {
            store,
            fleet,
            keys,
            unjoined: unjoined::UnjoinedRooms::default(),
            unjoined_ttl: UNJOINED_ROOM_TTL,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same, with new ad-hoc rooms that nobody is in after `ttl` removed then.
    pub fn with_unjoined_ttl(mut self, ttl: Duration) -> Self {
        self.unjoined_ttl = ttl;
        self
    }

    /// How long a new ad-hoc room that this replica created may stay with nobody in it.
    pub fn unjoined_ttl(&self) -> Duration {
        self.unjoined_ttl
    }

    /// Lets `name` into `room`: checks the name, the tenant's and room's policy and limits,
    /// what the room asks at its door (`credentials`), places the room and opens a session
    /// there.
    pub async fn join(
        &self,
        room: &RoomKey,
        name: &str,
        credentials: &Credentials,
    ) -> Result<Admitted, Refusal> {
        let name = DisplayName::new(name)?;
        let tenant = self.tenant(room).await?;
        if tenant.suspended {
            return Err(DomainError::TenantSuspended.into());
        }
        let existing = self.store.room(room).await?;
        let entry =
            access::check(&*self.store, &tenant, room, existing.as_ref(), credentials).await?;
        let (stored, created) = self.room_or_adhoc(&tenant, room, existing).await?;
        match self
            .admit_and_open(&tenant, stored, name, entry, credentials.from)
            .await
        {
            Ok((member, attachment)) => Ok(Admitted {
                member,
                attachment,
                moved: false,
            }),
            Err(refusal) => {
                // The room this join created goes with its refusal, unless someone is in it.
                if created {
                    self.remove_created(room).await;
                }
                Err(refusal)
            }
        }
    }

    /// Lets one more person into `room` of `tenant` and opens their session.
    async fn admit_and_open(
        &self,
        tenant: &Tenant,
        room: Room,
        name: DisplayName,
        entry: access::Entry,
        from: Option<IpAddr>,
    ) -> Result<(Member, Attachment), Refusal> {
        let in_tenant = self.fleet.tenant_presence(&tenant.name);
        domain::admit(tenant, &room, self.fleet.presence(&room.key), in_tenant)?;
        debug!(room = %room.key, "join admitted");
        let member = Member {
            participant_id: random::hex(PARTICIPANT_ID_BYTES),
            name,
            max_participants: room.participant_limit(tenant),
            video_last_n: room.video_last_n(),
            moderator: entry.moderator,
            lobby: entry.lobby,
            first_moderates: room.lifetime == domain::RoomLifetime::AdHoc
                && tenant.policy.first_joiner_moderates,
            room_title: room.display_name.clone(),
        };
        let attachment = self.open(tenant, room, &member, "", from).await?;
        Ok((member, attachment))
    }

    /// Picks up the session that `ticket` names in `room`, through this replica, if the ticket
    /// is the session's current one (each resumes once); when its node is gone (a replica that
    /// just started first gives the node a few seconds to dial it), drains, lost the session or
    /// does not answer, the participant gets a new session on another node (near `from`, the
    /// client's address, where there is a choice), once per lost session.
    pub async fn resume(
        &self,
        room: &RoomKey,
        ticket: &str,
        from: Option<IpAddr>,
    ) -> Result<Admitted, Refusal> {
        let ticket = tickets::open(&self.keys.tickets.get(), ticket, room)?;
        let name = DisplayName::new(&ticket.display_name)?;
        let tenant = self.tenant(room).await?;
        if tenant.suspended {
            return Err(DomainError::TenantSuspended.into());
        }
        let stored = self.store.room(room).await?;
        let member = Member {
            participant_id: ticket.participant_id.clone(),
            name,
            max_participants: stored
                .as_ref()
                .map_or(0, |stored| stored.participant_limit(&tenant)),
            video_last_n: stored
                .as_ref()
                .map_or(domain::DEFAULT_VIDEO_LAST_N, Room::video_last_n),
            // The role the participant had when the ticket was sealed, so that a session that
            // moves to another node keeps it there.
            moderator: ticket.moderator,
            lobby: ticket.lobby,
            first_moderates: stored.as_ref().is_some_and(|stored| {
                stored.lifetime == domain::RoomLifetime::AdHoc
                    && tenant.policy.first_joiner_moderates
            }),
            room_title: stored
                .as_ref()
                .and_then(|stored| stored.display_name.clone()),
        };
        let node = NodeId(ticket.node_id.clone());
        let presented = (ticket.node_instance.as_str(), ticket.generation);
        let mut resumed = self
            .fleet
            .resume_session(&node, room.clone(), &ticket.session_id, presented)
            .await;
        // A replica that just started may not have the node back yet: the node dials it again
        // within seconds, and moving the session would cut its media for longer than that.
        if resumed
            .as_ref()
            .is_err_and(|e| *e == ResumeError::NodeUnavailable)
            && self.wait_for_node(&node).await
        {
            resumed = self
                .fleet
                .resume_session(&node, room.clone(), &ticket.session_id, presented)
                .await;
        }
        match resumed {
            Ok(Resumed { events, generation }) => {
                info!(%room, %node, "session resumed");
                let mut attachment = Attachment {
                    node,
                    session_id: ticket.session_id,
                    node_instance: ticket.node_instance,
                    generation,
                    events,
                    ticket: String::new(),
                };
                attachment.ticket = self.fresh_ticket(room, &member, &attachment);
                Ok(Admitted {
                    member,
                    attachment,
                    moved: false,
                })
            }
            Err(ResumeError::Refused) => Err(Refusal::new(
                RefusalCode::ResumeRefused,
                "the session has ended or was resumed already; join again",
            )),
            // The node is gone, draining, lost the session or does not answer: a new session
            // continues it, once. The node, if it still holds it, closes it.
            Err(
                error @ (ResumeError::NodeUnavailable | ResumeError::Lost | ResumeError::NoAnswer),
            ) => {
                info!(%room, %node, %error, "the session continues on another node");
                let reason = v1::CloseReason::ConnectionLost;
                self.fleet.close_on(&node, &ticket.session_id, reason).await;
                let stored = stored.ok_or_else(|| Refusal::room_not_found("no such room"))?;
                let continues = ticket.session_id.as_str();
                let attachment = self.open(&tenant, stored, &member, continues, from).await?;
                Ok(Admitted {
                    member,
                    attachment,
                    moved: true,
                })
            }
        }
    }

    /// Whether `node`, not attached to this replica, attaches within [`RESUME_ATTACH_WAIT`]:
    /// waited for only while the replica is new (a replica that ran for a while knows its
    /// nodes), and not for a node that is attached but lost or draining.
    async fn wait_for_node(&self, node: &NodeId) -> bool {
        if !self.fleet.is_new() || self.fleet.instance_of(node).is_some() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + RESUME_ATTACH_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Attached draining or lost, it will not take the session: no use waiting on.
            if self.fleet.instance_of(node).is_some() {
                return self.fleet.is_available(node);
            }
        }
        info!(%node, "the session's node did not attach to this new replica in time");
        false
    }

    /// What `member` of `room` hands on to invite someone: an invitation (and when it expires)
    /// for an invite-only room, which only a moderator gets, or nothing where the room's address
    /// lets people in.
    pub async fn invitation(
        &self,
        room: &RoomKey,
        member: &Member,
    ) -> Result<Option<(String, u64)>, Refusal> {
        let tenant = self.tenant(room).await?;
        let stored = self.store.room(room).await?;
        access::invitation_for(
            &*self.store,
            &tenant,
            room,
            stored.as_ref(),
            member.moderator,
        )
        .await
    }

    /// A fresh resume ticket for `member`'s session `attachment` in `room`.
    pub fn fresh_ticket(&self, room: &RoomKey, member: &Member, attachment: &Attachment) -> String {
        let node = (&attachment.node, attachment.node_instance.as_str());
        tickets::seal(
            &self.keys.tickets.get(),
            room,
            member,
            node,
            (&attachment.session_id, attachment.generation),
        )
    }

    /// Moves `member`'s session `from` its node (gone or draining) to the room's node now,
    /// placing the room again if needed (near `address`, the client's, if known). The old
    /// session is closed.
    pub async fn move_session(
        &self,
        room: &RoomKey,
        member: &Member,
        from: &Attachment,
        address: Option<IpAddr>,
    ) -> Result<Attachment, Refusal> {
        self.fleet
            .close_session(&from.session_id, v1::CloseReason::ConnectionLost)
            .await;
        let stored = self
            .store
            .room(room)
            .await?
            .ok_or_else(|| Refusal::room_not_found("the room was removed"))?;
        let tenant = self.tenant(room).await?;
        let attachment = self.open(&tenant, stored, member, "", address).await?;
        info!(%room, from = %from.node, to = %attachment.node, "session moved");
        Ok(attachment)
    }

    /// The tenant called `name`, for its pages.
    pub async fn space(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        self.store.tenant(name).await
    }

    async fn tenant(&self, room: &RoomKey) -> Result<Tenant, Refusal> {
        self.store
            .tenant(&room.tenant)
            .await?
            .ok_or_else(|| Refusal::room_not_found("no such space"))
    }

    /// The room (`existing`, as read), and whether this call created it: an ad-hoc room is
    /// created if the room does not exist and `tenant` allows that. Everything that would refuse a join into the new
    /// room is checked before it is created: the tenant's room limit, a node with room to
    /// spare, and the room's own admission.
    async fn room_or_adhoc(
        &self,
        tenant: &Tenant,
        key: &RoomKey,
        existing: Option<Room>,
    ) -> Result<(Room, bool), Refusal> {
        if let Some(room) = existing {
            return Ok((room, false));
        }
        if !tenant.policy.adhoc_rooms {
            return Err(Refusal::room_not_found("no such room"));
        }
        if self.store.count_rooms(&tenant.name).await? >= tenant.limits.max_rooms {
            return Err(StoreError::RoomLimit(tenant.name.clone()).into());
        }
        self.check_capacity(tenant).await?;
        let room = Room::adhoc(key.clone());
        domain::admit(tenant, &room, 0, self.fleet.tenant_presence(&tenant.name))?;
        match self.store.create_room(room).await {
            Ok(room) => {
                let due = tokio::time::Instant::now() + self.unjoined_ttl;
                self.unjoined.created(key, due);
                Ok((room, true))
            }
            // Someone else opened the same new name at the same moment: share their room.
            Err(StoreError::AlreadyExists(_)) => self
                .store
                .room(key)
                .await?
                .map(|room| (room, false))
                .ok_or_else(|| Refusal::room_not_found("the room was removed")),
            Err(error) => Err(error.into()),
        }
    }

    /// Places `room` (keeping a live node) and opens a session for `member` there, near
    /// `from` where there is a choice; the session `continues` one whose node was lost, if not
    /// empty. A node that filled up between its choice and the session's opening (joins that
    /// raced for its last places) is passed over: the room is placed again, and spreads.
    async fn open(
        &self,
        tenant: &Tenant,
        mut room: Room,
        member: &Member,
        continues: &str,
        from: Option<IpAddr>,
    ) -> Result<Attachment, Refusal> {
        let key = room.key.clone();
        for _ in 0..=MAX_FULL_NODES {
            let (node, hosts) = self.place(tenant, room, from).await?;
            if hosts.len() > 1 {
                // Before the session opens, so that the node knows the rest of the room when
                // the participant comes in.
                self.fleet.span(&key, &hosts, &self.keys.tickets.get());
            }
            let session_id = random::hex(SESSION_ID_BYTES);
            let mut open =
                tickets::open_session(&self.keys.grants.get(), &node, &key, member, &session_id);
            open.continues = continues.to_owned();
            // The instance that takes the session: if the node restarts under its id, the
            // session's tickets still name the one that had it.
            let node_instance = self.fleet.instance_of(&node).unwrap_or_default();
            let events = match self.fleet.open_session(&node, key.clone(), open).await {
                Ok(events) => events,
                Err(FleetError::Full(_)) => {
                    room = self
                        .store
                        .room(&key)
                        .await?
                        .ok_or_else(|| Refusal::room_not_found("the room was removed"))?;
                    continue;
                }
                Err(error) => {
                    warn!(%error, "could not open a session");
                    return Err(Refusal::new(
                        RefusalCode::Unavailable,
                        "the media node is unavailable, try again",
                    ));
                }
            };
            let mut attachment = Attachment {
                node,
                session_id,
                node_instance,
                generation: 0,
                events,
                ticket: String::new(),
            };
            attachment.ticket = self.fresh_ticket(&key, member, &attachment);
            return Ok(attachment);
        }
        Err(Refusal::new(
            RefusalCode::PlatformFull,
            "the platform is full, try again later",
        ))
    }
}
