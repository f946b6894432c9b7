//! The control plane's domain: tenants, rooms, who may join, where a room is placed, and how
//! many media nodes a pool runs.
//!
//! Nothing here knows Kubernetes, gRPC or HTTP. The store, the fleet and the gateway convert
//! between their wire types and these, and decide nothing on their own.

mod access;
pub mod autoscale;
mod names;
mod network;
pub mod placement;
mod room;
mod tenant;

pub use access::{
    Access, Credentials, SIGNING_KEY_FIELD, SIGNING_KEY_SECRET, SecretRef, password_matches,
};
pub use names::{
    DisplayName, MAX_DISPLAY_NAME_CHARS, RESERVED_TENANT_NAMES, RoomName, TenantName,
    is_object_name,
};
pub use network::{IpNet, IpNetError};
pub use placement::{
    NodeId, NodeView, PoolAccess, choose_node, host_with_room, is_near, may_use, owns,
};
pub use room::{DEFAULT_VIDEO_LAST_N, Revision, Room, RoomKey, RoomLifetime, admit};
pub use tenant::{Branding, Tenant, TenantLimits, TenantPolicy};

/// Why the domain refused something. Each variant is a clear answer for the person or the
/// operator who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A tenant or room name is not a DNS label.
    #[error("invalid {kind} name {value:?}: {why}")]
    InvalidName {
        /// "tenant" or "room".
        kind: &'static str,
        /// The refused value, cut to a bounded length.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The display name is empty after trimming.
    #[error("please enter a name")]
    DisplayNameEmpty,
    /// The display name is too long.
    #[error("the name is longer than {max} characters")]
    DisplayNameTooLong {
        /// The limit in characters.
        max: usize,
    },
    /// The display name contains control characters.
    #[error("the name contains characters that are not allowed")]
    DisplayNameInvalid,
    /// The room has as many participants as it may.
    #[error("the room is full ({limit} participants)")]
    RoomFull {
        /// The room's limit.
        limit: u32,
    },
    /// The tenant is suspended and admits nobody.
    #[error("this space is suspended")]
    TenantSuspended,
    /// The tenant's rooms together have as many participants as it may.
    #[error("this space has as many participants as it may ({limit})")]
    TenantFull {
        /// The tenant's limit.
        limit: u32,
    },
}
