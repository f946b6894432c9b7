//! The Tenant reconciler: a namespace per tenant with everything a partner organisation needs
//! and nothing more.
//!
//! It makes the namespace `tenant-<name>`, a tenant-admin Role and a RoleBinding for the
//! tenant's owners, a ResourceQuota whose object count of Rooms is the tenant's room limit, a
//! default-deny NetworkPolicy, the RoleBinding that gives the operator itself its rights on the
//! namespace's Secrets (it holds none elsewhere), and the tenant's signing-key Secret (created
//! once, never rotated by a reconciliation). A suspended tenant's rooms are closed.
//!
//! All of it is made for the Tenant and carries its controller reference. A namespace or an
//! object of one of these names that the operator did not make for this Tenant is someone
//! else's: it is never adopted or changed, nothing is written into such a namespace, and the
//! Tenant's `Ready` condition says so (`NamespaceNotOwned`, `ObjectNotOwned`) with an event.
//! Deleting a Tenant deletes its own namespace, and the Tenant goes only once the namespace is
//! gone; someone else's namespace stays as it is, with everything in it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec, Secret};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tracing::{info, warn};

use super::ownership::{self, Claim};
use super::{
    Context, Error, MANAGED_BY, MANAGER, Result, SECRETS_BINDING, TENANT_LABEL, TenantSecrets,
    error_policy,
};
use crate::crd::{self, OwnerKind, Room, Tenant, TenantStatus, TenantUsage};
use crate::domain::{RoomKey, RoomName, TenantName};

const FINALIZER: &str = "tenants.treffpunkt.io/cleanup";
/// The Role and RoleBinding of a tenant's admins.
pub const ADMIN_ROLE: &str = "treffpunkt-tenant-admin";
pub use crate::domain::SIGNING_KEY_SECRET;
/// The ResourceQuota of a tenant.
pub const QUOTA: &str = "treffpunkt";
/// The NetworkPolicy that denies all traffic of pods in a tenant's namespace.
pub const NETWORK_POLICY: &str = "treffpunkt-default-deny";

/// Runs the Tenant reconciler until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // Children in the tenant's namespace cannot be mapped to their cluster-scoped owner by
    // `owns()`; they carry the tenant's name in a label instead.
    fn owner<K: ResourceExt>(child: K) -> Option<ObjectRef<Tenant>> {
        child
            .labels()
            .get(TENANT_LABEL)
            .map(|name| ObjectRef::new(name))
    }
    let tenants = &ctx.watches.tenants;
    Controller::for_shared_stream(tenants.everything_then_changes(), tenants.store())
        .owns(Api::<Namespace>::all(client.clone()), managed.clone())
        .watches(Api::<Role>::all(client.clone()), managed.clone(), owner)
        .watches(
            Api::<RoleBinding>::all(client.clone()),
            managed.clone(),
            owner,
        )
        .watches(
            Api::<ResourceQuota>::all(client.clone()),
            managed.clone(),
            owner,
        )
        .watches(Api::<NetworkPolicy>::all(client.clone()), managed, owner)
        // The tenant's usage in its status: rooms made or removed, participants coming and going.
        .watches_shared_stream(ctx.watches.rooms.changes(), |room| {
            tenant_of(room.metadata.namespace.as_deref()?)
        })
        .reconcile_on(
            BroadcastStream::new(ctx.fleet.room_changes())
                .filter_map(|room| async move { Some(ObjectRef::new(room.ok()?.tenant.as_str())) }),
        )
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |object, error, ctx| error_policy("tenant", object.as_ref(), error, &ctx),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The tenant whose own namespace `namespace` would be.
fn tenant_of(namespace: &str) -> Option<ObjectRef<Tenant>> {
    crd::namespace_tenant(namespace).map(ObjectRef::new)
}

async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let _measure = ctx.metrics.reconcile("tenant");
    let object = tenant.clone();
    let api = Api::<Tenant>::all(ctx.client.clone());
    finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(tenant) => apply(&tenant, &ctx).await,
            Finalizer::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
    .inspect(|_| ctx.succeeded("tenant", &*object))
}

fn labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (TENANT_LABEL.to_owned(), tenant.to_owned()),
    ])
}

fn metadata(
    name: &str,
    namespace: Option<&str>,
    tenant: &str,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(tenant)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn strings(values: &[&str]) -> Option<Vec<String>> {
    Some(values.iter().map(|v| (*v).to_owned()).collect())
}

/// What a tenant's admins may do in its namespace: manage rooms and their password Secrets,
/// and look at the quota and events.
fn admin_rules() -> Vec<PolicyRule> {
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let read = ["get", "list", "watch"];
    vec![
        PolicyRule {
            api_groups: strings(&[crd::GROUP]),
            resources: strings(&["rooms"]),
            verbs: all.map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        },
        PolicyRule {
            api_groups: strings(&[crd::GROUP]),
            resources: strings(&["rooms/status"]),
            verbs: read.map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        },
        PolicyRule {
            api_groups: strings(&[""]),
            resources: strings(&["secrets"]),
            verbs: all.map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        },
        PolicyRule {
            api_groups: strings(&[""]),
            resources: strings(&["resourcequotas", "events"]),
            verbs: read.map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        },
    ]
}

/// The binding of the tenant-admin Role to the tenant's owners.
fn admin_binding(tenant: &Tenant, namespace: &str, owner: &OwnerReference) -> RoleBinding {
    let subjects: Vec<Subject> = tenant
        .spec
        .owners
        .iter()
        .map(|owner| Subject {
            kind: match owner.kind {
                OwnerKind::User => "User",
                OwnerKind::Group => "Group",
            }
            .to_owned(),
            name: owner.name.clone(),
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            namespace: None,
        })
        .collect();
    RoleBinding {
        metadata: metadata(ADMIN_ROLE, Some(namespace), &tenant.name_any(), owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: ADMIN_ROLE.to_owned(),
        },
        // An empty list would be dropped by the server and make every apply a change.
        subjects: (!subjects.is_empty()).then_some(subjects),
    }
}

/// The quota whose count of Rooms is the tenant's room limit.
fn room_quota(tenant: &Tenant, namespace: &str, owner: &OwnerReference) -> ResourceQuota {
    ResourceQuota {
        metadata: metadata(QUOTA, Some(namespace), &tenant.name_any(), owner),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                format!("count/rooms.{}", crd::GROUP),
                Quantity(tenant.spec.limits.rooms.to_string()),
            )])),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    }
}

/// A policy that selects every pod of the namespace and allows no traffic at all.
fn default_deny(namespace: &str, tenant: &str, owner: &OwnerReference) -> NetworkPolicy {
    NetworkPolicy {
        metadata: metadata(NETWORK_POLICY, Some(namespace), tenant, owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: strings(&["Ingress", "Egress"]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Why a tenant is not Ready.
#[derive(Clone, Debug, PartialEq)]
enum Trouble {
    /// `tenant-<name>` exists and was not made for this Tenant.
    NamespaceNotOwned,
    /// The tenant's namespace is being deleted (by someone else: the Tenant is not).
    NamespaceTerminating,
    /// Objects under the names of the tenant's children were not made for it.
    ObjectsNotOwned(Vec<String>),
}

impl Trouble {
    fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceNotOwned => crd::NAMESPACE_NOT_OWNED,
            Self::NamespaceTerminating => "NamespaceTerminating",
            Self::ObjectsNotOwned(_) => "ObjectNotOwned",
        }
    }

    fn message(&self, namespace: &str) -> String {
        match self {
            Self::NamespaceNotOwned => format!(
                "namespace {namespace} exists and was not made by the operator for this Tenant: \
                 nothing is written into it and it is not deleted with the Tenant; delete it to \
                 let the operator make the tenant's own, or give the Tenant another name"
            ),
            Self::NamespaceTerminating => {
                format!("namespace {namespace} is being deleted; it is made again once it is gone")
            }
            Self::ObjectsNotOwned(objects) => format!(
                "{} in namespace {namespace} not made by the operator for this Tenant, left as \
                 they are; delete them to let the operator make its own",
                objects.join(", ")
            ),
        }
    }
}

async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let namespace = crd::tenant_namespace(&name);
    let owner = tenant
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    let desired = Namespace {
        metadata: metadata(&namespace, None, &name, &owner),
        ..Namespace::default()
    };
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let trouble = match ownership::apply_owned(&namespaces, &desired, &owner.uid).await? {
        Claim::Foreign => Some(Trouble::NamespaceNotOwned),
        Claim::Ours(ns) if ns.metadata.deletion_timestamp.is_some() => {
            Some(Trouble::NamespaceTerminating)
        }
        Claim::Ours(_) => {
            let foreign = apply_children(tenant, ctx, &namespace, &owner).await?;
            (!foreign.is_empty()).then_some(Trouble::ObjectsNotOwned(foreign))
        }
    };

    let key_tenant = TenantName::new(name.as_str()).ok();
    if tenant.spec.suspended
        && let Some(tenant_name) = &key_tenant
    {
        close_rooms(ctx, &namespace, tenant_name).await?;
    }

    // Rooms in someone else's namespace are not the tenant's.
    let own = trouble != Some(Trouble::NamespaceNotOwned);
    let usage = if own {
        Some(usage(ctx, &namespace, key_tenant.as_ref()).await?)
    } else {
        None
    };
    let status = status(
        tenant,
        own.then_some(namespace.as_str()),
        trouble.as_ref(),
        usage,
    );
    if tenant.status.as_ref() != Some(&status) {
        write_status(tenant, ctx, &status).await?;
    }
    // Every change that concerns the tenant (its spec, its objects, its rooms and
    // participants) brings it back at once; at rest, an hourly look costs a few reads.
    Ok(Action::requeue(match trouble {
        None => Duration::from_secs(3600),
        Some(_) => Duration::from_secs(15),
    }))
}

/// Applies `desired` into the tenant's namespace if the object of its name is the tenant's or
/// missing; names it in `foreign` if it is someone else's.
async fn apply_child<K>(
    ctx: &Context,
    desired: &K,
    owner: &OwnerReference,
    foreign: &mut Vec<String>,
) -> Result<Claim<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    apply_child_from(ctx, desired, desired, owner, foreign).await
}

/// [`apply_child`], creating a missing object as `first` (see
/// [`ownership::apply_owned_from`]).
async fn apply_child_from<K>(
    ctx: &Context,
    first: &K,
    desired: &K,
    owner: &OwnerReference,
    foreign: &mut Vec<String>,
) -> Result<Claim<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = desired.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api = Api::<K>::namespaced(ctx.client.clone(), &namespace);
    let claim = ownership::apply_owned_from(&api, first, desired, &owner.uid).await?;
    if claim.is_foreign() {
        foreign.push(format!("{} {}", K::kind(&()), desired.name_any()));
    }
    Ok(claim)
}

/// Makes what goes into the tenant's own namespace: the operator's rights on its Secrets, the
/// admins' Role and RoleBinding, the room quota, the default-deny policy and the signing key.
/// Returns the objects under these names that are someone else's.
async fn apply_children(
    tenant: &Tenant,
    ctx: &Context,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Vec<String>> {
    let name = tenant.name_any();
    let mut foreign = Vec::new();
    // First, because a right takes a moment to reach the API server's authorizer.
    let access = match &ctx.settings.tenant_secrets {
        Some(access) => {
            let binding = secrets_binding(access, ctx, namespace, &name, owner);
            drop_rebound_secrets_binding(ctx, &binding, owner).await?;
            Some(apply_child(ctx, &binding, owner, &mut foreign).await?)
        }
        None => None,
    };
    let unruled = Role {
        metadata: metadata(ADMIN_ROLE, Some(namespace), &name, owner),
        rules: None,
    };
    let role = Role {
        rules: Some(admin_rules()),
        ..unruled.clone()
    };
    apply_child_from(ctx, &unruled, &role, owner, &mut foreign).await?;
    let admins = admin_binding(tenant, namespace, owner);
    apply_child(ctx, &admins, owner, &mut foreign).await?;
    let quota = room_quota(tenant, namespace, owner);
    apply_child(ctx, &quota, owner, &mut foreign).await?;
    let policy = default_deny(namespace, &name, owner);
    apply_child(ctx, &policy, owner, &mut foreign).await?;

    // The key needs the rights of the binding above: none, while that is someone else's.
    let granted = match &access {
        Some(Claim::Foreign) => return Ok(foreign),
        Some(Claim::Ours(binding)) => binding.metadata.creation_timestamp.clone(),
        None => None,
    };
    match ensure_signing_key(ctx, namespace, &name, owner).await {
        Ok(key) if key.is_foreign() => foreign.push(format!("Secret {SIGNING_KEY_SECRET}")),
        Ok(_) => {}
        Err(Error::Kube(kube::Error::Api(status)))
            if status.code == 403 && granted.is_some_and(|at| just_now(&at.0)) =>
        {
            return Err(Error::Waiting(format!(
                "the rights on the Secrets of namespace {namespace}"
            )));
        }
        Err(error) => return Err(error),
    }
    Ok(foreign)
}

/// Whether `at` lies less than half a minute back.
fn just_now(at: &Timestamp) -> bool {
    Timestamp::now().duration_since(*at).unsigned_abs() < Duration::from_secs(30)
}

/// The operator's own rights on the Secrets of the tenant's namespace: the ClusterRole with
/// exactly those rights, bound to its ServiceAccount here and nowhere else.
fn secrets_binding(
    access: &TenantSecrets,
    ctx: &Context,
    namespace: &str,
    tenant: &str,
    owner: &OwnerReference,
) -> RoleBinding {
    RoleBinding {
        metadata: metadata(SECRETS_BINDING, Some(namespace), tenant, owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: access.cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: access.service_account.clone(),
            namespace: Some(ctx.settings.platform_namespace.clone()),
            api_group: None,
        }]),
    }
}

/// Deletes the operator's own binding to its rights on the tenant's Secrets if it names
/// another ClusterRole than `desired` (made by an installation of another name), so that it is
/// made again: the role of a binding cannot change.
async fn drop_rebound_secrets_binding(
    ctx: &Context,
    desired: &RoleBinding,
    owner: &OwnerReference,
) -> Result<()> {
    let namespace = desired.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api = Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace);
    if let Some(existing) = api.get_opt(SECRETS_BINDING).await?
        && ownership::controlled_by(&existing.metadata, &owner.uid)
        && existing.role_ref != desired.role_ref
    {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.metadata.uid.clone(),
                resource_version: existing.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        api.delete(SECRETS_BINDING, &params).await?;
        info!(%namespace, role = %existing.role_ref.name, "replacing the binding to another role");
    }
    Ok(())
}

/// The tenant's rooms as recorded, and its active rooms and participants on the nodes attached
/// to this replica.
async fn usage(ctx: &Context, namespace: &str, tenant: Option<&TenantName>) -> Result<TenantUsage> {
    let rooms = rooms_in(ctx, namespace).len();
    let (participants, active) = tenant.map_or((0, 0), |t| ctx.fleet.tenant_usage(t));
    Ok(TenantUsage {
        rooms: rooms as i32,
        active_rooms: active as i32,
        participants: participants as i32,
    })
}

/// The status of a tenant: Ready unless there is `trouble`, and Suspended or not as its spec
/// says. `namespace` is the tenant's own namespace, if it has one.
fn status(
    tenant: &Tenant,
    namespace: Option<&str>,
    trouble: Option<&Trouble>,
    usage: Option<TenantUsage>,
) -> TenantStatus {
    let previous = tenant.status.clone().unwrap_or_default();
    let mut status = TenantStatus {
        observed_generation: tenant.metadata.generation,
        namespace: namespace.map(str::to_owned),
        usage,
        conditions: previous.conditions,
    };
    let generation = tenant.metadata.generation;
    let (reason, message) = match trouble {
        None => (
            "Reconciled",
            format!(
                "namespace {} with room limit {}",
                namespace.unwrap_or_default(),
                tenant.spec.limits.rooms
            ),
        ),
        Some(trouble) => (
            trouble.reason(),
            trouble.message(&crd::tenant_namespace(&tenant.name_any())),
        ),
    };
    crd::set_condition(
        &mut status.conditions,
        "Ready",
        trouble.is_none(),
        reason,
        &message,
        generation,
    );
    if let Some(usage) = &status.usage {
        let over = over_limits(&tenant.spec.limits, usage);
        crd::set_condition(
            &mut status.conditions,
            "WithinLimits",
            over.is_none(),
            if over.is_some() {
                "OverLimits"
            } else {
                "WithinLimits"
            },
            &over.unwrap_or_else(|| "usage is within the limits".to_owned()),
            generation,
        );
    }
    crd::set_condition(
        &mut status.conditions,
        "Suspended",
        tenant.spec.suspended,
        if tenant.spec.suspended {
            "Suspended"
        } else {
            "Active"
        },
        if tenant.spec.suspended {
            "rooms are closed and nobody may join"
        } else {
            "rooms are open"
        },
        generation,
    );
    status
}

/// What of `usage` exceeds `limits` (after a limit was lowered below what is in use), as a
/// message; nothing is removed, but nothing new is let in until the use is back below.
fn over_limits(limits: &crd::TenantLimits, usage: &TenantUsage) -> Option<String> {
    let mut over = Vec::new();
    if usage.rooms > limits.rooms {
        over.push(format!(
            "{} rooms exist, the limit is {}: no new rooms until {} are removed",
            usage.rooms,
            limits.rooms,
            usage.rooms - limits.rooms
        ));
    }
    if usage.participants > limits.participants {
        over.push(format!(
            "{} participants are in calls, the limit is {}: nobody new may join until fewer are",
            usage.participants, limits.participants
        ));
    }
    (!over.is_empty()).then(|| over.join("; "))
}

fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    condition(conditions, "Ready")
}

/// Applies `status` and records the transitions it makes as events: the tenant became Ready,
/// or not Ready for a new reason, or was suspended or resumed.
async fn write_status(tenant: &Tenant, ctx: &Context, status: &TenantStatus) -> Result<()> {
    let name = tenant.name_any();
    let previous = tenant.status.clone().unwrap_or_default();
    let was_suspended = crd::condition_is_true(&previous.conditions, "Suspended");
    let body = json!({
        "apiVersion": "treffpunkt.io/v1alpha1",
        "kind": "Tenant",
        "status": status,
    });
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    let namespace = status.namespace.as_deref();
    let before_limits = condition(&previous.conditions, "WithinLimits");
    if let Some(now) = condition(&status.conditions, "WithinLimits")
        && before_limits.map(|c| &c.status) != Some(&now.status)
        && (now.status == "False" || before_limits.is_some())
    {
        let warning = now.status == "False";
        tell(
            ctx,
            tenant,
            namespace,
            warning,
            &now.reason,
            now.message.clone(),
        )
        .await;
    }
    let before = ready_condition(&previous.conditions);
    if let Some(now) = ready_condition(&status.conditions)
        && before.map(|c| (&c.status, &c.reason)) != Some((&now.status, &now.reason))
    {
        if now.status == "True" {
            info!(tenant = %name, "tenant ready");
            let note = format!("namespace {} is ready", namespace.unwrap_or_default());
            tell(ctx, tenant, namespace, false, "Ready", note).await;
        } else {
            warn!(tenant = %name, reason = %now.reason, "{}", now.message);
            tell(
                ctx,
                tenant,
                namespace,
                true,
                &now.reason,
                now.message.clone(),
            )
            .await;
        }
    }
    if tenant.spec.suspended != was_suspended {
        let note = if tenant.spec.suspended {
            "suspended: rooms closed"
        } else {
            "resumed"
        };
        let suspended = tenant.spec.suspended;
        tell(
            ctx,
            tenant,
            namespace,
            suspended,
            "Suspended",
            note.to_owned(),
        )
        .await;
    }
    Ok(())
}

/// An event about `tenant`: among the cluster's (`kubectl describe tenant`) and, when it has
/// its own namespace, in that namespace too, where its admins read them.
async fn tell(
    ctx: &Context,
    tenant: &Tenant,
    namespace: Option<&str>,
    warning: bool,
    reason: &str,
    note: String,
) {
    let mut reference = tenant.object_ref(&());
    ctx.event(&reference, warning, reason, note.clone()).await;
    if let Some(namespace) = namespace {
        reference.namespace = Some(namespace.to_owned());
        ctx.event(&reference, warning, reason, note).await;
    }
}

/// Creates the tenant's signing key once; an existing key is never replaced, and someone
/// else's Secret of that name is never taken for the tenant's key.
async fn ensure_signing_key(
    ctx: &Context,
    namespace: &str,
    tenant: &str,
    owner: &OwnerReference,
) -> Result<Claim<ObjectMeta>> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let key = treffpunkt_proto::random::bytes::<32>().to_vec();
    let secret = Secret {
        metadata: metadata(SIGNING_KEY_SECRET, Some(namespace), tenant, owner),
        data: Some(BTreeMap::from([(
            crate::domain::SIGNING_KEY_FIELD.to_owned(),
            ByteString(key),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    ownership::create_owned(&secrets, &secret, &owner.uid).await
}

/// The rooms in `namespace`, from the replica's cache.
fn rooms_in(ctx: &Context, namespace: &str) -> Vec<Arc<Room>> {
    let rooms = ctx.watches.rooms.store().state();
    rooms
        .into_iter()
        .filter(|room| room.metadata.namespace.as_deref() == Some(namespace))
        .collect()
}

/// Closes every room of a suspended tenant on the nodes that host them.
async fn close_rooms(ctx: &Context, namespace: &str, tenant: &TenantName) -> Result<()> {
    for room in rooms_in(ctx, namespace) {
        if let Ok(name) = RoomName::new(room.name_any()) {
            ctx.fleet.close_room(&RoomKey {
                tenant: tenant.clone(),
                name,
            });
        }
    }
    Ok(())
}

/// Deletes the tenant's own namespace and waits until it is gone; someone else's namespace of
/// that name stays as it is.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let namespace = crd::tenant_namespace(&name);
    let uid = tenant.uid().ok_or(Error::Incomplete("uid"))?;
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let Some(existing) = namespaces.get_metadata_opt(&namespace).await? else {
        info!(tenant = %name, "tenant removed");
        return Ok(Action::await_change());
    };
    if !ownership::controlled_by(&existing.metadata, &uid) {
        info!(tenant = %name, %namespace, "tenant removed; the namespace is not its own and stays");
        ctx.event(
            &tenant.object_ref(&()),
            false,
            "NamespaceKept",
            format!("namespace {namespace} was not made for this Tenant and stays as it is"),
        )
        .await;
        return Ok(Action::await_change());
    }
    if existing.metadata.deletion_timestamp.is_none() {
        // The UID makes sure that exactly the namespace checked above goes.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        namespaces.delete(&namespace, &params).await?;
        ctx.event(
            &tenant.object_ref(&()),
            false,
            "Deleting",
            format!("deleting namespace {namespace}"),
        )
        .await;
    }
    Err(Error::Deleting(format!("namespace {namespace}")))
}
