//! `Tenant`: a partner organisation or the city's public space (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RoomAccess;
use crate::domain::RESERVED_TENANT_NAMES;

/// The CEL rule that refuses the reserved tenant names, written from the gateway's one list so
/// that the API server and the gateway can never disagree about them.
fn reserved_names_rule() -> Rule {
    let names: Vec<String> = RESERVED_TENANT_NAMES
        .iter()
        .map(|name| format!("'{name}'"))
        .collect();
    Rule::new(format!("!(self.metadata.name in [{}])", names.join(", ")))
        .message("this name is reserved for the platform's own paths")
}

/// A tenant of the platform. The operator gives it a namespace of its own (`tenant-<name>`),
/// where its owners manage its Rooms, with a quota, RBAC, a default-deny network policy and a
/// signing key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "treffpunkt.io",
    version = "v1alpha1",
    kind = "Tenant",
    status = "TenantStatus",
    shortname = "tnt",
    category = "treffpunkt",
    derive = "PartialEq",
    printcolumn(name = "Display name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Rooms", type_ = "integer", json_path = ".status.usage.rooms"),
    printcolumn(name = "Participants", type_ = "integer", json_path = ".status.usage.participants"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 56")
        .message("a tenant name is a DNS label of at most 56 characters (it becomes the namespace tenant-<name> and the first part of room addresses)"),
    validation = reserved_names_rule()
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// What people see as the space's title.
    #[schemars(length(min = 1, max = 100))]
    pub display_name: String,
    /// Users and groups who administer the tenant's rooms in its namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<TenantOwner>,
    /// How much of the platform the tenant may use.
    #[serde(default)]
    pub limits: TenantLimits,
    /// What the tenant allows.
    #[serde(default)]
    pub policy: TenantPolicy,
    /// How the tenant's rooms look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<Branding>,
    /// The MediaPools whose nodes may host the tenant's rooms; empty for any pool open to all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_pools: Vec<String>,
    /// A suspended tenant's rooms are closed and nobody may join them.
    #[serde(default)]
    pub suspended: bool,
}

/// Whether an owner is a user or a group, as the cluster's authentication names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OwnerKind {
    /// A user.
    User,
    /// A group.
    Group,
}

/// Someone who administers a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantOwner {
    /// User or Group.
    pub kind: OwnerKind,
    /// The user's or group's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_rooms() -> i32 {
    20
}

fn default_participants_per_room() -> i32 {
    20
}

fn default_participants() -> i32 {
    100
}

/// How much of the platform a tenant may use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.participantsPerRoom <= self.participants")
    .message("participantsPerRoom cannot exceed participants"))]
pub struct TenantLimits {
    /// Rooms that may exist at once (enforced by the namespace's quota).
    #[serde(default = "default_rooms")]
    #[schemars(range(min = 0, max = 10000))]
    pub rooms: i32,
    /// Participants in one room.
    #[serde(default = "default_participants_per_room")]
    #[schemars(range(min = 2, max = 500))]
    pub participants_per_room: i32,
    /// Participants in all the tenant's rooms together.
    #[serde(default = "default_participants")]
    #[schemars(range(min = 1, max = 100000))]
    pub participants: i32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            rooms: default_rooms(),
            participants_per_room: default_participants_per_room(),
            participants: default_participants(),
        }
    }
}

/// What a tenant allows. Nothing is ever recorded: Treffpunkt has no recording.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantPolicy {
    /// Opening a new room name creates the room.
    #[serde(default)]
    pub adhoc_rooms: bool,
    /// In an ad-hoc room, the first person in moderates (true unless turned off). In every
    /// room, when the last moderator leaves, whoever has been in longest moderates then.
    #[serde(default = "first_joiner_moderates")]
    pub first_joiner_moderates: bool,
    /// How rooms are entered unless they say otherwise.
    #[serde(default)]
    pub default_access: RoomAccess,
}

/// A tenant without a `policy` has the same as one with an empty one: the first person in an
/// ad-hoc room moderates.
impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            adhoc_rooms: false,
            first_joiner_moderates: first_joiner_moderates(),
            default_access: RoomAccess::default(),
        }
    }
}

fn first_joiner_moderates() -> bool {
    true
}

/// How a tenant's rooms look.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Branding {
    /// The title shown in the bar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub title: Option<String>,
    /// The accent colour, `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^#[0-9a-fA-F]{6}$')").message("a colour is written #rrggbb"))]
    pub primary_color: Option<String>,
    /// The logo as a `data:image/...` URL, so that no other host is ever contacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('data:image/') && self.size() <= 65536")
        .message("the logo must be a data:image/ URL of at most 64 KiB"))]
    pub logo: Option<String>,
}

/// What the operator reports about a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and `Suspended` while suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What the tenant uses now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TenantUsage>,
}

/// What a tenant uses now.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantUsage {
    /// Rooms that exist.
    pub rooms: i32,
    /// Rooms with someone in them.
    pub active_rooms: i32,
    /// Participants in all rooms.
    pub participants: i32,
}
