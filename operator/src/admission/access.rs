//! The door of a room: its password, or an invitation signed with the tenant's own key,
//! checked before anything is created or placed; and who comes in as a moderator (the
//! moderators' password, a moderator's invitation). A lobby (a moderator lets people in) is the
//! media node's to hold, since the people who decide are in the meeting there: the grant only
//! says that this person waits.

use std::time::Duration;

use tracing::warn;
use treffpunkt_proto::grant::{GrantError, Keyring, now_unix_ms};
use treffpunkt_proto::v1;

use super::{Refusal, RefusalCode};
use crate::domain::{
    Access, Credentials, Room, RoomKey, SIGNING_KEY_FIELD, SIGNING_KEY_SECRET, Tenant,
    password_matches,
};
use crate::invite::{Link, token};
use crate::store::Store;

/// How someone comes in through a room's door.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// They moderate: they brought the moderators' password or a moderator's invitation.
    pub moderator: bool,
    /// They wait in the lobby until a moderator lets them in.
    pub lobby: bool,
}

/// How `credentials` open `key` (stored as `room`, or a new ad-hoc room of `tenant` when
/// `None`), if they do. The moderators' password opens every door; a password that is neither
/// the room's nor the moderators' is wrong, whatever the room's access.
pub(super) async fn check(
    store: &impl Store,
    tenant: &Tenant,
    key: &RoomKey,
    room: Option<&Room>,
    credentials: &Credentials,
) -> Result<Entry, Refusal> {
    let typed = credentials.password.as_deref().filter(|p| !p.is_empty());
    let moderators = room.and_then(|room| room.moderator_password.as_ref());
    if let (Some(typed), Some(reference)) = (typed, moderators) {
        let stored = store
            .secret(&key.tenant, &reference.name, &reference.key)
            .await?
            .ok_or_else(|| missing(key, "its moderators' password Secret"))?;
        if password_matches(&stored, typed) {
            return Ok(Entry {
                moderator: true,
                lobby: false,
            });
        }
    }
    let access = room.map_or(tenant.policy.default_access, |room| room.access(tenant));
    let entry = match access {
        Access::Open | Access::Lobby => Entry {
            moderator: false,
            lobby: access == Access::Lobby,
        },
        Access::Password => {
            let Some(reference) = room.and_then(|room| room.password.as_ref()) else {
                // An ad-hoc room has no Secret for a password: a space whose rooms all need one
                // has only the rooms its admins made.
                return Err(Refusal::room_not_found(
                    "rooms of this space need a password; its admins make them",
                ));
            };
            let Some(typed) = typed else {
                return Err(Refusal::new(
                    RefusalCode::PasswordRequired,
                    "this room asks for its password",
                ));
            };
            let stored = store
                .secret(&key.tenant, &reference.name, &reference.key)
                .await?
                .ok_or_else(|| missing(key, "its password Secret"))?;
            if !password_matches(&stored, typed) {
                return Err(wrong_password());
            }
            return Ok(Entry::default());
        }
        Access::InviteOnly => {
            let moderator = invitation(store, key, credentials).await?;
            Entry {
                moderator,
                lobby: false,
            }
        }
    };
    // A password where none opens anything (the moderators' did not match) is a wrong one.
    if typed.is_some() {
        return Err(wrong_password());
    }
    Ok(entry)
}

fn wrong_password() -> Refusal {
    Refusal::new(
        RefusalCode::PasswordWrong,
        "that is not the room's password",
    )
}

/// Whether the invitation in `credentials` opens `key`: `Ok(true)` for a moderator's.
async fn invitation(
    store: &impl Store,
    key: &RoomKey,
    credentials: &Credentials,
) -> Result<bool, Refusal> {
    let Some(invite) = credentials.invite.as_deref().filter(|i| !i.is_empty()) else {
        return Err(Refusal::new(
            RefusalCode::InviteRequired,
            "this room lets in only people with an invitation link",
        ));
    };
    let signing = store
        .secret(&key.tenant, SIGNING_KEY_SECRET, SIGNING_KEY_FIELD)
        .await?
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| missing(key, "the tenant's signing key"))?;
    let room_ref = v1::RoomRef {
        tenant: key.tenant.as_str().to_owned(),
        name: key.name.as_str().to_owned(),
    };
    match Keyring::from_secret(&signing).open_invitation(invite, &room_ref, now_unix_ms()) {
        Ok(invitation) => Ok(invitation.moderator),
        Err(GrantError::Expired) => Err(Refusal::new(
            RefusalCode::InviteExpired,
            "the invitation has expired; ask for a new one",
        )),
        Err(_) => Err(Refusal::new(
            RefusalCode::InviteInvalid,
            "the invitation is not valid for this room",
        )),
    }
}

/// How long an invitation that a moderator copies in the call is valid.
pub const IN_CALL_INVITATION: Duration = Duration::from_secs(7 * 86_400);

/// What a participant of `key` (stored as `room`) hands on so that someone else comes in: for
/// an invite-only room a fresh invitation (as a guest) and when it expires, which only a
/// moderator gets; for any other room nothing, since its address is the way in.
pub(super) async fn invitation_for(
    store: &impl Store,
    tenant: &Tenant,
    key: &RoomKey,
    room: Option<&Room>,
    moderator: bool,
) -> Result<Option<(String, u64)>, Refusal> {
    let access = room.map_or(tenant.policy.default_access, |room| room.access(tenant));
    if access != Access::InviteOnly {
        return Ok(None);
    }
    if !moderator {
        return Err(Refusal::new(
            RefusalCode::NotModerator,
            "only a moderator may invite people into this room",
        ));
    }
    let signing = store
        .secret(&key.tenant, SIGNING_KEY_SECRET, SIGNING_KEY_FIELD)
        .await?
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| missing(key, "the tenant's signing key"))?;
    let link = Link {
        valid: IN_CALL_INVITATION,
        moderator: false,
    };
    Ok(Some(token(key, &signing, link, now_unix_ms())))
}

/// The refusal when what a protected room needs is not there: the person can do nothing about
/// it, the tenant's admins can.
fn missing(key: &RoomKey, what: &str) -> Refusal {
    warn!(room = %key, "a protected room cannot be entered: {what} is missing");
    Refusal::new(
        RefusalCode::Unavailable,
        "the room cannot be entered now; its admins are told",
    )
}
