//! Admission: the join as a use case, over the [`Store`] and the [`Fleet`], with no socket and
//! no HTTP in it.
//!
//! A participant asks to join a room under a name ([`Admission::join`]):
//!
//! 1. the name is checked ([`DisplayName`]);
//! 2. the tenant is read, once for the whole join; the room is read, or, if the tenant allows
//!    ad-hoc rooms, created;
//! 3. [`domain::admit`] decides whether one more person may join (suspended tenant, full room);
//! 4. the room is placed (`placement`): it keeps its live node, or goes to the least-loaded
//!    node its tenant may use, recorded with compare-and-set so that racing gateways agree;
//! 5. a session is opened on that node with a signed grant, and a resume ticket is sealed for
//!    the client (`tickets`).
//!
//! What comes back is an [`Admitted`]: who the participant is ([`Member`]) and where its
//! session runs ([`Attachment`], with the channel of the node's events for it and the ticket).
//! A refusal is a [`Refusal`] with a stable [`RefusalCode`] the client translates.
//!
//! A client whose socket dropped comes back with its ticket ([`Admission::resume`]), through
//! any replica; if the session's node is gone, it gets a new session on another node. A session
//! whose node goes away or drains while the participant is in the call is moved
//! ([`Admission::move_session`]).
//!
//! The gateway ([`crate::gateway`]) calls this from the signalling WebSocket and relays the
//! session afterwards; it decides nothing of the above itself.

mod placement;
mod refusal;
mod tickets;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use treffpunkt_proto::grant::GrantKey;
use treffpunkt_proto::{random, v1};

pub use refusal::{Refusal, RefusalCode};
pub use tickets::{GRANT_LIFETIME, TICKET_LIFETIME};

use crate::domain::{self, DisplayName, DomainError, NodeId, Room, RoomKey, Tenant};
use crate::fleet::{ClientEvent, Fleet};
use crate::store::{Store, StoreError};

/// Bytes of a participant id: unique within a room.
const PARTICIPANT_ID_BYTES: usize = 8;
/// Bytes of a session id: unguessable, since it names the session on every node.
const SESSION_ID_BYTES: usize = 16;

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
}

/// Where a participant's session runs.
#[derive(Debug)]
pub struct Attachment {
    /// The node that carries it.
    pub node: NodeId,
    /// The session's id at the node.
    pub session_id: String,
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

/// The join use case: checks, placement and sessions over a store of tenants and rooms and the
/// fleet of media nodes.
#[derive(Debug)]
pub struct Admission<S> {
    store: Arc<S>,
    fleet: Arc<Fleet>,
    grant_key: GrantKey,
}

impl<S: Store> Admission<S> {
    /// Admission over `store`, placing rooms on the nodes of `fleet` and signing grants and
    /// tickets with `grant_key`.
    pub fn new(store: Arc<S>, fleet: Arc<Fleet>, grant_key: GrantKey) -> Self {
        Self {
            store,
            fleet,
            grant_key,
        }
    }

    /// Lets `name` into `room`: checks the name, the tenant's and room's policy and limits,
    /// places the room and opens a session there.
    pub async fn join(&self, room: &RoomKey, name: &str) -> Result<Admitted, Refusal> {
        let name = DisplayName::new(name)?;
        let tenant = self.tenant(room).await?;
        let stored = self.room_or_adhoc(&tenant, room).await?;
        domain::admit(&tenant, &stored, self.fleet.presence(room))?;
        debug!(%room, "join admitted");
        let member = Member {
            participant_id: random::hex(PARTICIPANT_ID_BYTES),
            name,
            max_participants: stored.participant_limit(&tenant),
            video_last_n: stored.video_last_n(),
        };
        let attachment = self.open(&tenant, stored, &member).await?;
        Ok(Admitted {
            member,
            attachment,
            moved: false,
        })
    }

    /// Picks up the session that `ticket` names in `room`, through this replica; when its node
    /// is gone, the participant gets a new session on another node.
    pub async fn resume(&self, room: &RoomKey, ticket: &str) -> Result<Admitted, Refusal> {
        let ticket = tickets::open(&self.grant_key, ticket, room)?;
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
        };
        let node = NodeId(ticket.node_id.clone());
        match self
            .fleet
            .resume_session(&node, room.clone(), &ticket.session_id)
            .await
        {
            Ok(events) => {
                info!(%room, %node, "session resumed");
                let ticket_text =
                    tickets::seal(&self.grant_key, room, &member, &node, &ticket.session_id);
                let attachment = Attachment {
                    node,
                    session_id: ticket.session_id,
                    events,
                    ticket: ticket_text,
                };
                Ok(Admitted {
                    member,
                    attachment,
                    moved: false,
                })
            }
            Err(_) => {
                let stored = stored.ok_or_else(|| Refusal::room_not_found("no such room"))?;
                let attachment = self.open(&tenant, stored, &member).await?;
                Ok(Admitted {
                    member,
                    attachment,
                    moved: true,
                })
            }
        }
    }

    /// Moves `member`'s session `from` its node (gone or draining) to the room's node now,
    /// placing the room again if needed. The old session is closed.
    pub async fn move_session(
        &self,
        room: &RoomKey,
        member: &Member,
        from: &Attachment,
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
        let attachment = self.open(&tenant, stored, member).await?;
        info!(%room, from = %from.node, to = %attachment.node, "session moved");
        Ok(attachment)
    }

    async fn tenant(&self, room: &RoomKey) -> Result<Tenant, Refusal> {
        self.store
            .tenant(&room.tenant)
            .await?
            .ok_or_else(|| Refusal::room_not_found("no such space"))
    }

    /// The room, created as an ad-hoc room if it does not exist and `tenant` allows that.
    async fn room_or_adhoc(&self, tenant: &Tenant, key: &RoomKey) -> Result<Room, Refusal> {
        match self.store.room(key).await? {
            Some(room) => Ok(room),
            None if tenant.policy.adhoc_rooms => {
                match self.store.create_room(Room::adhoc(key.clone())).await {
                    Ok(room) => Ok(room),
                    // Someone else opened the same new name at the same moment.
                    Err(StoreError::AlreadyExists(_)) => self
                        .store
                        .room(key)
                        .await?
                        .ok_or_else(|| Refusal::room_not_found("the room was removed")),
                    Err(error) => Err(error.into()),
                }
            }
            None => Err(Refusal::room_not_found("no such room")),
        }
    }

    /// Places `room` (keeping a live node) and opens a session for `member` there.
    async fn open(
        &self,
        tenant: &Tenant,
        room: Room,
        member: &Member,
    ) -> Result<Attachment, Refusal> {
        let key = room.key.clone();
        let node = self.place(tenant, room).await?;
        let session_id = random::hex(SESSION_ID_BYTES);
        let open = tickets::open_session(&self.grant_key, &key, member, &session_id);
        let events = self
            .fleet
            .open_session(&node, key.clone(), open)
            .await
            .map_err(|error| {
                warn!(%error, "could not open a session");
                Refusal::new(
                    RefusalCode::Unavailable,
                    "the media node is unavailable, try again",
                )
            })?;
        let ticket = tickets::seal(&self.grant_key, &key, member, &node, &session_id);
        Ok(Attachment {
            node,
            session_id,
            events,
            ticket,
        })
    }
}
