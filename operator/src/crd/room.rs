//! `Room`: a meeting room, in its tenant's namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RoomAccess;

/// A meeting room. Persistent rooms are made by a tenant's admins; ad-hoc rooms by the gateway
/// when someone opens a new name (if the tenant allows it), and they are removed after they have
/// been empty for a while. The status is also the consistent record of which media node hosts
/// the room.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "treffpunkt.io",
    version = "v1alpha1",
    kind = "Room",
    namespaced,
    status = "RoomStatus",
    shortname = "rm",
    category = "treffpunkt",
    derive = "PartialEq",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".status.tenant"),
    printcolumn(name = "Participants", type_ = "integer", json_path = ".status.participants"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 63")
        .message("a room name is a DNS label (a-z, 0-9, '-') of at most 63 characters: it is part of the room's address")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.access) || self.access != 'Password' || has(self.passwordSecretRef)")
    .message("access Password needs passwordSecretRef"))]
pub struct RoomSpec {
    /// The title people see; the room's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub display_name: Option<String>,
    /// How people get in; the tenant's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<RoomAccess>,
    /// The Secret key that holds the room's password (access Password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// The Secret key that holds the moderators' password: whoever enters it on the pre-join
    /// screen moderates the meeting (and needs no other password, invitation or lobby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderator_password_secret_ref: Option<SecretKeyRef>,
    /// The room's own participant limit, if lower than its tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 500))]
    pub max_participants: Option<i32>,
    /// How many of the latest speakers' cameras each participant receives; the platform's
    /// default (16) when unset. Screen shares and audio always reach everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub video_last_n: Option<i32>,
    /// Persistent rooms stay until deleted; ad-hoc rooms go after being empty for a while.
    #[serde(default)]
    pub lifetime: Lifetime,
}

/// A key of a Secret in the room's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Whether a room outlives its meetings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Lifetime {
    /// Stays until deleted.
    #[default]
    Persistent,
    /// Removed after it has been empty for a while.
    AdHoc,
}

/// Where a room stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RoomPhase {
    /// Nobody is in it.
    Idle,
    /// A meeting is on.
    Active,
    /// It admits nobody (its tenant is suspended or it is not accepted).
    Closed,
}

/// What the operator and the gateway report about a room.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatus {
    /// Idle, Active or Closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RoomPhase>,
    /// The tenant the room belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The media node that hosts the room (written by the gateway that placed it); the first
    /// of `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Every media node that hosts the room, when it spans several: the first it was placed
    /// on, then those it spread to (written by the gateway that placed it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Participants in the room now.
    #[serde(default)]
    pub participants: i32,
    /// The address to share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    /// Since when an ad-hoc room has been empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<Time>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: whether the room fits its tenant's limits and policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl RoomStatus {
    /// The nodes that host the room: `nodes`, or `node` as written before rooms spanned nodes.
    pub fn hosts(&self) -> Vec<String> {
        if self.nodes.is_empty() {
            self.node.iter().cloned().collect()
        } else {
            self.nodes.clone()
        }
    }
}
