//! The signed papers of a session: the grant that admits a participant at its node, and the
//! resume ticket with which the client picks its session up again after its socket dropped.
//!
//! The grant is signed with the keyring shared with the media nodes and names the one node that
//! may admit it; the ticket with the control plane's own keyring, and any replica's gateway
//! checks it. Both expire: a grant soon, since the node receives it at once; a ticket minutes
//! after the client's socket dropped (it gets fresh ones while the socket is up).
//!
//! A ticket resumes once. It carries the session's resume generation, and the node that holds
//! the session resumes it only with a ticket of the current generation and then counts up, so
//! every ticket sealed before is stale; the resumed client gets tickets of the new generation.
//! When the session's node was lost, the new session names the lost one it continues, and the
//! room's node opens only one such session (`OpenSession.continues`).

use std::time::Duration;

use treffpunkt_proto::grant::{Keyring, now_unix_ms};
use treffpunkt_proto::v1;

use super::{Member, Refusal, RefusalCode};
use crate::domain::{NodeId, RoomKey};

/// How long a grant for a node stays valid: long enough for the node to receive it, short
/// enough that a leaked one is useless.
pub const GRANT_LIFETIME: Duration = Duration::from_secs(60);
/// How long a resume ticket stays valid. While the client's socket is up it gets a fresh one
/// every [`TICKET_REFRESH`], so a ticket is good for a few minutes after the socket dropped
/// and then useless, wherever it was left.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How often a connected client gets a fresh ticket.
pub const TICKET_REFRESH: Duration = Duration::from_secs(60);

fn room_ref(room: &RoomKey) -> v1::RoomRef {
    v1::RoomRef {
        tenant: room.tenant.to_string(),
        name: room.name.to_string(),
    }
}

/// The command that opens session `session_id` for `member` in `room` on `node`, with its
/// signed grant.
pub(super) fn open_session(
    key: &Keyring,
    node: &NodeId,
    room: &RoomKey,
    member: &Member,
    session_id: &str,
) -> v1::OpenSession {
    let grant = v1::Grant {
        room: Some(room_ref(room)),
        participant_id: member.participant_id.clone(),
        display_name: member.name.to_string(),
        can_publish: true,
        can_subscribe: true,
        max_participants: member.max_participants,
        video_last_n: member.video_last_n,
        expires_at_unix_ms: now_unix_ms() + GRANT_LIFETIME.as_millis() as u64,
        node_id: node.to_string(),
        moderator: member.moderator,
        lobby: member.lobby,
        first_moderates: member.first_moderates,
    };
    v1::OpenSession {
        session_id: session_id.to_owned(),
        grant: Some(key.sign_grant(&grant)),
        continues: String::new(),
    }
}

/// The sealed ticket that resumes session `session_id` of `member` on instance `node_instance`
/// of `node`, at the session's resume generation `generation`.
pub(super) fn seal(
    key: &Keyring,
    room: &RoomKey,
    member: &Member,
    (node, node_instance): (&NodeId, &str),
    (session_id, generation): (&str, u64),
) -> String {
    let ticket = v1::ResumeTicket {
        generation,
        session_id: session_id.to_owned(),
        node_id: node.0.clone(),
        node_instance: node_instance.to_owned(),
        room: Some(room_ref(room)),
        participant_id: member.participant_id.clone(),
        display_name: member.name.to_string(),
        expires_at_unix_ms: now_unix_ms() + TICKET_LIFETIME.as_millis() as u64,
        moderator: member.moderator,
        lobby: member.lobby,
    };
    key.seal_ticket(&ticket)
}

/// The ticket sealed in `text`, if it is genuine, unexpired and for `room`.
pub(super) fn open(key: &Keyring, text: &str, room: &RoomKey) -> Result<v1::ResumeTicket, Refusal> {
    let ticket = key.open_ticket(text, now_unix_ms()).map_err(|_| {
        Refusal::new(
            RefusalCode::ResumeRefused,
            "the session cannot be resumed; join again",
        )
    })?;
    let named = ticket.room.clone().unwrap_or_default();
    if named.tenant != room.tenant.as_str() || named.name != room.name.as_str() {
        return Err(Refusal::new(
            RefusalCode::ResumeRefused,
            "the ticket is for another room",
        ));
    }
    Ok(ticket)
}
