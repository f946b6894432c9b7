//! Why a join, a resume or a move was refused: a stable code for the client and a message for
//! developers.

use std::fmt;

use tracing::warn;

use crate::domain::DomainError;
use crate::store::StoreError;

/// The stable code of a refusal; the client translates it for the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// `room-not-found`: no such tenant or room (or an invalid name), or it was removed.
    RoomNotFound,
    /// `name-empty`: the display name is blank.
    NameEmpty,
    /// `name-too-long`: the display name is too long.
    NameTooLong,
    /// `name-invalid`: the display name has characters that are not allowed.
    NameInvalid,
    /// `room-full`: the room has as many participants as it may.
    RoomFull,
    /// `tenant-suspended`: the tenant admits nobody.
    TenantSuspended,
    /// `tenant-full`: the tenant's rooms together have as many participants as it may.
    TenantFull,
    /// `room-limit`: the tenant may have no more rooms.
    RoomLimit,
    /// `platform-full`: no media node can take the room.
    PlatformFull,
    /// `unavailable`: the store or the media node failed; trying again may help.
    Unavailable,
    /// `resume-refused`: the ticket is not genuine, has expired or is for another room.
    ResumeRefused,
    /// `password-required`: the room asks for its password.
    PasswordRequired,
    /// `password-wrong`: the password is not the room's.
    PasswordWrong,
    /// `invite-required`: the room lets in only people with an invitation link.
    InviteRequired,
    /// `invite-invalid`: the invitation is not genuine, is for another room, or was revoked.
    InviteInvalid,
    /// `invite-expired`: the invitation has expired.
    InviteExpired,
    /// `not-moderator`: only a moderator may do that (invite into an invite-only room).
    NotModerator,
}

impl RefusalCode {
    /// The code as the client receives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomNotFound => "room-not-found",
            Self::NameEmpty => "name-empty",
            Self::NameTooLong => "name-too-long",
            Self::NameInvalid => "name-invalid",
            Self::RoomFull => "room-full",
            Self::TenantSuspended => "tenant-suspended",
            Self::TenantFull => "tenant-full",
            Self::RoomLimit => "room-limit",
            Self::PlatformFull => "platform-full",
            Self::Unavailable => "unavailable",
            Self::ResumeRefused => "resume-refused",
            Self::PasswordRequired => "password-required",
            Self::PasswordWrong => "password-wrong",
            Self::InviteRequired => "invite-required",
            Self::InviteInvalid => "invite-invalid",
            Self::InviteExpired => "invite-expired",
            Self::NotModerator => "not-moderator",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a join was refused: the code for the client and an English message for developers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The stable code.
    pub code: RefusalCode,
    /// What happened, in English.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(super) fn room_not_found(message: &str) -> Self {
        Self::new(RefusalCode::RoomNotFound, message)
    }
}

impl From<DomainError> for Refusal {
    fn from(error: DomainError) -> Self {
        let code = match error {
            DomainError::InvalidName { .. } => RefusalCode::RoomNotFound,
            DomainError::DisplayNameEmpty => RefusalCode::NameEmpty,
            DomainError::DisplayNameTooLong { .. } => RefusalCode::NameTooLong,
            DomainError::DisplayNameInvalid => RefusalCode::NameInvalid,
            DomainError::RoomFull { .. } => RefusalCode::RoomFull,
            DomainError::TenantSuspended => RefusalCode::TenantSuspended,
            DomainError::TenantFull { .. } => RefusalCode::TenantFull,
        };
        Self::new(code, error.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::RoomLimit(_) => Self::new(RefusalCode::RoomLimit, error.to_string()),
            StoreError::NotFound(_) => Self::new(RefusalCode::RoomNotFound, error.to_string()),
            other => {
                // The person only learns to try again; the operator needs the cause.
                warn!(error = %other, "store failed during a join");
                Self::new(
                    RefusalCode::Unavailable,
                    "the service is unavailable, try again",
                )
            }
        }
    }
}
