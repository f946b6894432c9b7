//! Rooms and the decision whether one more person may join.

use std::fmt;

use super::{Access, DomainError, NodeId, RoomName, SecretRef, Tenant, TenantName};

/// A room's identity: its tenant and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// The tenant that owns the room.
    pub tenant: TenantName,
    /// The room's name within the tenant.
    pub name: RoomName,
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// An opaque version of a stored room (in a cluster, its resourceVersion). Two equal revisions
/// mean the room did not change in between.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Revision(pub String);

/// Whether a room outlives its meetings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomLifetime {
    /// Made by an administrator; stays until deleted.
    Persistent,
    /// Made by the gateway when someone opened a new name; removed after it has been empty
    /// for a while.
    AdHoc,
}

/// How many speakers' cameras a participant receives in a room that does not say: more tiles
/// than this are too small to see on a phone or a laptop, and each costs downlink.
pub const DEFAULT_VIDEO_LAST_N: u32 = 16;

/// A meeting room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// Tenant and name.
    pub key: RoomKey,
    /// The title people see; the room's name when unset.
    pub display_name: Option<String>,
    /// The room's own participant limit, if lower than its tenant's.
    pub max_participants: Option<u32>,
    /// How many speakers' cameras each participant receives; [`DEFAULT_VIDEO_LAST_N`] when
    /// unset.
    pub video_last_n: Option<u32>,
    /// Persistent or ad hoc.
    pub lifetime: RoomLifetime,
    /// How people get in; the tenant's default when unset.
    pub access: Option<Access>,
    /// Where the room's password is kept (access Password).
    pub password: Option<SecretRef>,
    /// Where the moderators' password is kept.
    pub moderator_password: Option<SecretRef>,
    /// The media nodes that host the room, once placed: the first one it was placed on, then
    /// those it spread to when it outgrew them.
    pub nodes: Vec<NodeId>,
    /// Changes on every write; placement compares it so that two gateways racing to place one
    /// room agree on one node.
    pub revision: Revision,
}

impl Room {
    /// A new ad-hoc room of `tenant`, not yet placed.
    pub fn adhoc(key: RoomKey) -> Self {
        Self {
            key,
            display_name: None,
            max_participants: None,
            video_last_n: None,
            lifetime: RoomLifetime::AdHoc,
            access: None,
            password: None,
            moderator_password: None,
            nodes: Vec::new(),
            revision: Revision::default(),
        }
    }

    /// How many speakers' cameras each participant receives.
    pub fn video_last_n(&self) -> u32 {
        self.video_last_n.unwrap_or(DEFAULT_VIDEO_LAST_N)
    }

    /// How people get into this room of `tenant`.
    pub fn access(&self, tenant: &Tenant) -> Access {
        self.access.unwrap_or(tenant.policy.default_access)
    }

    /// How many participants this room admits under `tenant`'s limits.
    pub fn participant_limit(&self, tenant: &Tenant) -> u32 {
        let tenant_limit = tenant.limits.max_participants_per_room;
        self.max_participants
            .map_or(tenant_limit, |own| own.min(tenant_limit))
    }
}

/// Decides whether one more person may join `room`, which has `present` participants now, of
/// `in_tenant` in all the tenant's rooms.
pub fn admit(
    tenant: &Tenant,
    room: &Room,
    present: u32,
    in_tenant: u32,
) -> Result<(), DomainError> {
    if tenant.suspended {
        return Err(DomainError::TenantSuspended);
    }
    let limit = room.participant_limit(tenant);
    if present >= limit {
        return Err(DomainError::RoomFull { limit });
    }
    let limit = tenant.limits.max_participants;
    if in_tenant >= limit {
        return Err(DomainError::TenantFull { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(max: Option<u32>) -> Room {
        Room {
            max_participants: max,
            ..Room::adhoc(RoomKey {
                tenant: TenantName::new("public").unwrap(),
                name: RoomName::new("chor").unwrap(),
            })
        }
    }

    #[test]
    fn the_lower_of_room_and_tenant_limit_applies() {
        let mut tenant = Tenant::public();
        tenant.limits.max_participants_per_room = 10;
        assert_eq!(room(None).participant_limit(&tenant), 10);
        assert_eq!(room(Some(3)).participant_limit(&tenant), 3);
        assert_eq!(room(Some(50)).participant_limit(&tenant), 10);
    }

    #[test]
    fn a_full_room_refuses_the_next_person() {
        let tenant = Tenant::public();
        let small = room(Some(2));
        assert_eq!(admit(&tenant, &small, 1, 1), Ok(()));
        assert_eq!(
            admit(&tenant, &small, 2, 2),
            Err(DomainError::RoomFull { limit: 2 })
        );
    }

    #[test]
    fn a_tenant_at_its_participant_limit_refuses_the_next_person_in_any_room() {
        let mut tenant = Tenant::public();
        tenant.limits.max_participants = 30;
        assert_eq!(admit(&tenant, &room(None), 5, 29), Ok(()));
        assert_eq!(
            admit(&tenant, &room(None), 0, 30),
            Err(DomainError::TenantFull { limit: 30 })
        );
    }

    #[test]
    fn a_suspended_tenant_admits_nobody() {
        let mut tenant = Tenant::public();
        tenant.suspended = true;
        assert_eq!(
            admit(&tenant, &room(None), 0, 0),
            Err(DomainError::TenantSuspended)
        );
    }
}
