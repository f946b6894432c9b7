//! The custom resources of group `treffpunkt.io`, version `v1alpha1`: [`Tenant`]
//! (cluster-scoped), [`Room`] and [`MediaPool`] (namespaced).
//!
//! The Rust types are the source of truth: the CRDs in `charts/treffpunkt/crds/` are generated
//! from them (`cargo run --bin crdgen`), and a test fails when the committed files drift. Rules
//! that a type cannot express are CEL rules (`x-kubernetes-validations`) that the API server
//! checks, so a wrong manifest is refused with a readable message before the operator sees it.
//! The same YAML works with kubectl and as the seed file of standalone mode.

// Several printer columns share `type_ = "integer"`; clippy reads the derive's arguments as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
mod pool;
#[allow(clippy::duplicated_attributes)]
mod room;
#[allow(clippy::duplicated_attributes)]
mod tenant;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use pool::{
    MediaNodeTemplate, MediaPool, MediaPoolSpec, MediaPoolStatus, NetworkMode, PoolNetwork,
    Replicas, ScaleRecord,
};
pub use room::{Lifetime, Room, RoomPhase, RoomSpec, RoomStatus, SecretKeyRef};
pub use tenant::{
    Branding, OwnerKind, Tenant, TenantLimits, TenantOwner, TenantPolicy, TenantSpec, TenantStatus,
    TenantUsage,
};

use crate::domain;

/// The API group.
pub const GROUP: &str = "treffpunkt.io";
/// The prefix of every tenant's namespace.
pub const TENANT_NAMESPACE_PREFIX: &str = "tenant-";
/// The reason of a Tenant's `Ready=False` when `tenant-<name>` exists but was not made by the
/// operator for that Tenant.
pub const NAMESPACE_NOT_OWNED: &str = "NamespaceNotOwned";

/// How people get into a room.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RoomAccess {
    /// Anyone with the address.
    #[default]
    Open,
    /// Anyone who knows the password.
    Password,
    /// A moderator lets people in.
    Lobby,
    /// Only invited people.
    InviteOnly,
}

impl From<RoomAccess> for domain::Access {
    fn from(access: RoomAccess) -> Self {
        match access {
            RoomAccess::Open => Self::Open,
            RoomAccess::Password => Self::Password,
            RoomAccess::Lobby => Self::Lobby,
            RoomAccess::InviteOnly => Self::InviteOnly,
        }
    }
}

fn secret_ref(reference: &room::SecretKeyRef) -> domain::SecretRef {
    domain::SecretRef {
        name: reference.name.clone(),
        key: reference.key.clone(),
    }
}

/// The namespace of a tenant.
pub fn tenant_namespace(tenant: &str) -> String {
    format!("{TENANT_NAMESPACE_PREFIX}{tenant}")
}

/// The tenant a namespace belongs to, by its name.
pub fn namespace_tenant(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix(TENANT_NAMESPACE_PREFIX)
        .filter(|t| !t.is_empty())
}

/// Every CRD of the operator.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Tenant::crd(), Room::crd(), MediaPool::crd()]
}

/// One CRD as YAML, the form committed to the chart.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd).expect("a CRD serialises to YAML");
    format!(
        "# Generated from the Rust types in operator/src/crd by `cargo run --bin crdgen`. Do not edit.\n{body}"
    )
}

/// Sets condition `type_` in `conditions`, keeping its transition time when the status does
/// not change, so that writing the same state again is a no-op.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(condition) => {
            if condition.status != status {
                condition.last_transition_time = Time(Timestamp::now());
            }
            condition.status = status.to_owned();
            condition.reason = reason.to_owned();
            condition.message = message.to_owned();
            condition.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::now()),
        }),
    }
}

/// Whether condition `type_` is `True`.
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

impl Tenant {
    /// Whether the operator reports `namespace` as this tenant's own: made by it for this
    /// Tenant.
    pub fn owns_namespace(&self, namespace: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|status| status.namespace.as_deref())
            == Some(namespace)
    }

    /// The domain's view of this tenant, if its name is valid.
    pub fn to_domain(&self) -> Option<domain::Tenant> {
        let name = domain::TenantName::new(self.metadata.name.clone()?).ok()?;
        let limits = &self.spec.limits;
        Some(domain::Tenant {
            name,
            display_name: self.spec.display_name.clone(),
            limits: domain::TenantLimits {
                max_rooms: u32::try_from(limits.rooms).unwrap_or(0),
                max_participants_per_room: u32::try_from(limits.participants_per_room).unwrap_or(0),
                max_participants: u32::try_from(limits.participants).unwrap_or(0),
            },
            policy: domain::TenantPolicy {
                adhoc_rooms: self.spec.policy.adhoc_rooms,
                default_access: self.spec.policy.default_access.into(),
                first_joiner_moderates: self.spec.policy.first_joiner_moderates,
            },
            suspended: self.spec.suspended,
            media_pools: self.spec.media_pools.clone(),
            branding: self
                .spec
                .branding
                .clone()
                .map(|branding| domain::Branding {
                    title: branding.title,
                    primary_color: branding.primary_color,
                    logo: branding.logo,
                })
                .unwrap_or_default(),
        })
    }
}

impl Room {
    /// The room's tenant and name, if it sits in a tenant's namespace.
    pub fn key(&self) -> Option<domain::RoomKey> {
        let namespace = self.metadata.namespace.as_deref()?;
        Some(domain::RoomKey {
            tenant: domain::TenantName::new(namespace_tenant(namespace)?).ok()?,
            name: domain::RoomName::new(self.metadata.name.clone()?).ok()?,
        })
    }

    /// The domain's view of this room, if it sits in a tenant's namespace.
    pub fn to_domain(&self) -> Option<domain::Room> {
        let key = self.key()?;
        Some(domain::Room {
            key,
            display_name: self.spec.display_name.clone(),
            max_participants: self
                .spec
                .max_participants
                .and_then(|m| u32::try_from(m).ok()),
            video_last_n: self.spec.video_last_n.and_then(|n| u32::try_from(n).ok()),
            lifetime: match self.spec.lifetime {
                Lifetime::Persistent => domain::RoomLifetime::Persistent,
                Lifetime::AdHoc => domain::RoomLifetime::AdHoc,
            },
            access: self.spec.access.map(Into::into),
            password: self.spec.password_secret_ref.as_ref().map(secret_ref),
            moderator_password: self
                .spec
                .moderator_password_secret_ref
                .as_ref()
                .map(secret_ref),
            nodes: self
                .status
                .as_ref()
                .map(RoomStatus::hosts)
                .unwrap_or_default()
                .into_iter()
                .map(domain::NodeId)
                .collect(),
            revision: domain::Revision(self.metadata.resource_version.clone().unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crds_generate_with_their_rules() {
        let crds = crds();
        assert_eq!(crds.len(), 3);
        let room = serde_json::to_value(&crds[1]).unwrap();
        assert_eq!(room["spec"]["scope"], "Namespaced");
        assert_eq!(room["spec"]["names"]["shortNames"][0], "rm");
        let columns: Vec<&str> = room["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Tenant", "Participants", "Node", "Phase", "Age"]);
        let tenant = serde_json::to_value(&crds[0]).unwrap();
        assert_eq!(tenant["spec"]["scope"], "Cluster");
        let rules =
            &tenant["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"];
        assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");
    }

    #[test]
    fn a_tenant_that_says_nothing_of_its_policy_lets_the_first_person_in_moderate() {
        let spec: TenantSpec =
            serde_json::from_value(serde_json::json!({ "displayName": "Skatclub" }))
                .expect("a display name is all a tenant needs");
        assert!(spec.policy.first_joiner_moderates, "without a policy");
        let spec: TenantSpec = serde_json::from_value(serde_json::json!({
            "displayName": "Skatclub",
            "policy": { "adhocRooms": true },
        }))
        .expect("a policy may name only some of its fields");
        assert!(
            spec.policy.first_joiner_moderates,
            "with a policy that does not say"
        );
        let tenant = serde_json::to_value(&crds()[0]).expect("a CRD serialises");
        let default = &tenant["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["policy"]["default"];
        assert_eq!(
            default["firstJoinerModerates"], true,
            "and the API server's default says the same: {default}"
        );
    }

    #[test]
    fn namespaces_map_to_tenants_and_back() {
        assert_eq!(tenant_namespace("skatclub"), "tenant-skatclub");
        assert_eq!(namespace_tenant("tenant-skatclub"), Some("skatclub"));
        assert_eq!(namespace_tenant("kube-system"), None);
        assert_eq!(namespace_tenant("tenant-"), None);
    }

    #[test]
    fn setting_the_same_condition_keeps_its_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, "Ready", true, "Reconciled", "ok", Some(1));
        let first = conditions.clone();
        set_condition(&mut conditions, "Ready", true, "Reconciled", "ok", Some(1));
        assert_eq!(conditions, first);
        set_condition(&mut conditions, "Ready", false, "Failed", "no", Some(2));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "False");
    }
}
