//! The Tenant reconciler: a namespace per tenant with everything a partner organisation needs
//! and nothing more.
//!
//! It makes the namespace `tenant-<name>`, a tenant-admin Role and a RoleBinding for the
//! tenant's owners, a ResourceQuota whose object count of Rooms is the tenant's room limit, a
//! default-deny NetworkPolicy, and the tenant's signing-key Secret (created once, never
//! rotated by a reconciliation). A suspended tenant's rooms are closed. Deleting a Tenant
//! deletes its namespace, and the Tenant goes only once the namespace is gone.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec, Secret};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::{Context, Error, MANAGED_BY, MANAGER, Result, TENANT_LABEL, error_policy};
use crate::crd::{self, OwnerKind, Room, Tenant, TenantStatus, TenantUsage};
use crate::domain::{RoomKey, RoomName, TenantName};

const FINALIZER: &str = "tenants.treffpunkt.io/cleanup";
/// The Role and RoleBinding of a tenant's admins.
pub const ADMIN_ROLE: &str = "treffpunkt-tenant-admin";
/// The Secret that holds a tenant's signing key.
pub const SIGNING_KEY_SECRET: &str = "treffpunkt-signing-key";
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
    Controller::new(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
    )
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
    .graceful_shutdown_on(shutdown)
    .run(
        reconcile,
        |object, error, ctx| error_policy("tenant", object.as_ref(), error, &ctx),
        ctx,
    )
    .for_each(|_| futures::future::ready(()))
    .await;
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

async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let namespace = crd::tenant_namespace(&name);
    let owner = tenant
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    apply_namespace(tenant, ctx, &namespace, &owner).await?;
    ensure_signing_key(ctx, &namespace, &name, &owner).await?;

    let key_tenant = TenantName::new(name.as_str()).ok();
    if tenant.spec.suspended
        && let Some(tenant_name) = &key_tenant
    {
        close_rooms(ctx, &namespace, tenant_name).await?;
    }

    let usage = usage(ctx, &namespace, key_tenant.as_ref()).await?;
    let status = status(tenant, &namespace, usage);
    if tenant.status.as_ref() != Some(&status) {
        write_status(tenant, ctx, &namespace, &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Applies the tenant's namespace and what goes into it: the admins' Role and RoleBinding, the
/// room quota and the default-deny policy.
async fn apply_namespace(
    tenant: &Tenant,
    ctx: &Context,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<()> {
    let client = &ctx.client;
    let name = tenant.name_any();
    let ssa = PatchParams::apply(MANAGER).force();

    let ns = Namespace {
        metadata: metadata(namespace, None, &name, owner),
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &ssa, &Patch::Apply(&ns))
        .await?;

    let role = Role {
        metadata: metadata(ADMIN_ROLE, Some(namespace), &name, owner),
        rules: Some(admin_rules()),
    };
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(ADMIN_ROLE, &ssa, &Patch::Apply(&role))
        .await?;

    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(
            ADMIN_ROLE,
            &ssa,
            &Patch::Apply(&admin_binding(tenant, namespace, owner)),
        )
        .await?;

    Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .patch(
            QUOTA,
            &ssa,
            &Patch::Apply(&room_quota(tenant, namespace, owner)),
        )
        .await?;

    Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
        .patch(
            NETWORK_POLICY,
            &ssa,
            &Patch::Apply(&default_deny(namespace, &name, owner)),
        )
        .await?;
    Ok(())
}

/// The tenant's rooms as recorded, and its active rooms and participants on the nodes attached
/// to this replica.
async fn usage(ctx: &Context, namespace: &str, tenant: Option<&TenantName>) -> Result<TenantUsage> {
    let rooms = Api::<Room>::namespaced(ctx.client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let (participants, active) = tenant.map_or((0, 0), |t| ctx.fleet.tenant_usage(t));
    Ok(TenantUsage {
        rooms: rooms as i32,
        active_rooms: active as i32,
        participants: participants as i32,
    })
}

/// The status a reconciled tenant has: Ready, and Suspended or not as its spec says.
fn status(tenant: &Tenant, namespace: &str, usage: TenantUsage) -> TenantStatus {
    let previous = tenant.status.clone().unwrap_or_default();
    let mut status = TenantStatus {
        observed_generation: tenant.metadata.generation,
        namespace: Some(namespace.to_owned()),
        usage: Some(usage),
        conditions: previous.conditions,
    };
    let generation = tenant.metadata.generation;
    crd::set_condition(
        &mut status.conditions,
        "Ready",
        true,
        "Reconciled",
        &format!(
            "namespace {namespace} with room limit {}",
            tenant.spec.limits.rooms
        ),
        generation,
    );
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

/// Applies `status` and records the transitions it makes as events: the tenant became Ready,
/// or was suspended or resumed.
async fn write_status(
    tenant: &Tenant,
    ctx: &Context,
    namespace: &str,
    status: &TenantStatus,
) -> Result<()> {
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
    let reference = tenant.object_ref(&());
    if !crd::condition_is_true(&previous.conditions, "Ready") {
        info!(tenant = %name, "tenant ready");
        ctx.event(
            &reference,
            false,
            "Ready",
            format!("namespace {namespace} is ready"),
        )
        .await;
    }
    if tenant.spec.suspended != was_suspended {
        let note = if tenant.spec.suspended {
            "suspended: rooms closed"
        } else {
            "resumed"
        };
        ctx.event(
            &reference,
            tenant.spec.suspended,
            "Suspended",
            note.to_owned(),
        )
        .await;
    }
    Ok(())
}

/// Creates the tenant's signing key once; an existing key is never replaced.
async fn ensure_signing_key(
    ctx: &Context,
    namespace: &str,
    tenant: &str,
    owner: &OwnerReference,
) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    if secrets
        .get_metadata_opt(SIGNING_KEY_SECRET)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let key = treffpunkt_proto::random::bytes::<32>().to_vec();
    let secret = Secret {
        metadata: metadata(SIGNING_KEY_SECRET, Some(namespace), tenant, owner),
        data: Some(BTreeMap::from([("key".to_owned(), ByteString(key))])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(()),
        // Another pass made it first; its key stands.
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Closes every room of a suspended tenant on the nodes that host them.
async fn close_rooms(ctx: &Context, namespace: &str, tenant: &TenantName) -> Result<()> {
    let rooms = Api::<Room>::namespaced(ctx.client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await?;
    for room in rooms {
        if let Ok(name) = RoomName::new(room.name_any()) {
            ctx.fleet.close_room(&RoomKey {
                tenant: tenant.clone(),
                name,
            });
        }
    }
    Ok(())
}

async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let namespace = crd::tenant_namespace(&tenant.name_any());
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    match namespaces.get_opt(&namespace).await? {
        None => {
            info!(tenant = %tenant.name_any(), "tenant removed");
            Ok(Action::await_change())
        }
        Some(existing) => {
            if existing.metadata.deletion_timestamp.is_none() {
                namespaces
                    .delete(&namespace, &DeleteParams::background())
                    .await?;
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
    }
}
