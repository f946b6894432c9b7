//! The door of a protected room: its password, or an invitation signed with the tenant's own
//! key, checked before anything is created or placed. A lobby (a moderator lets people in) is
//! the media node's to hold, since the people who decide are in the call there.

use tracing::warn;
use treffpunkt_proto::grant::{GrantError, Keyring, now_unix_ms};
use treffpunkt_proto::v1;

use super::{Refusal, RefusalCode};
use crate::domain::{
    Access, Credentials, Room, RoomKey, SIGNING_KEY_FIELD, SIGNING_KEY_SECRET, Tenant,
    password_matches,
};
use crate::store::Store;

/// Whether `credentials` open `key` (stored as `room`, or a new ad-hoc room of `tenant` when
/// `None`).
pub(super) async fn check(
    store: &impl Store,
    tenant: &Tenant,
    key: &RoomKey,
    room: Option<&Room>,
    credentials: &Credentials,
) -> Result<(), Refusal> {
    let access = room.map_or(tenant.policy.default_access, |room| room.access(tenant));
    match access {
        Access::Open | Access::Lobby => Ok(()),
        Access::Password => {
            let Some(reference) = room.and_then(|room| room.password.as_ref()) else {
                // An ad-hoc room has no Secret for a password: a space whose rooms all need one
                // has only the rooms its admins made.
                return Err(Refusal::room_not_found(
                    "rooms of this space need a password; its admins make them",
                ));
            };
            let Some(typed) = credentials.password.as_deref().filter(|p| !p.is_empty()) else {
                return Err(Refusal::new(
                    RefusalCode::PasswordRequired,
                    "this room asks for its password",
                ));
            };
            let stored = store
                .secret(&key.tenant, &reference.name, &reference.key)
                .await?
                .ok_or_else(|| missing(key, "its password Secret"))?;
            if password_matches(&stored, typed) {
                Ok(())
            } else {
                Err(Refusal::new(
                    RefusalCode::PasswordWrong,
                    "that is not the room's password",
                ))
            }
        }
        Access::InviteOnly => {
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
                Ok(_) => Ok(()),
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
    }
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
