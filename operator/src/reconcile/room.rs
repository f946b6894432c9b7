//! The Room reconciler: checks a room against its tenant's limits and policy, reports where it
//! stands (phase, participants, hosting node, join URL), closes it on its node when it must not
//! run, and removes ad-hoc rooms that have been empty for longer than the configured time.
//!
//! Participant counts come from the media nodes' load reports; a change there triggers a
//! reconciliation of that room at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tracing::info;

use super::{Context, Error, MANAGER, Result, error_policy};
use crate::crd::{self, Lifetime, Room, RoomAccess, RoomPhase, RoomStatus, Tenant};
use crate::domain::{RoomKey, RoomName, TenantName};

const FINALIZER: &str = "rooms.treffpunkt.io/close";

/// Runs the Room reconciler until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let changes = BroadcastStream::new(ctx.fleet.room_changes()).filter_map(|change| async move {
        let room = change.ok()?;
        Some(
            ObjectRef::<Room>::new(room.name.as_str())
                .within(&crd::tenant_namespace(room.tenant.as_str())),
        )
    });
    let watches = &ctx.watches;
    let controller = Controller::for_shared_stream(
        watches.rooms.everything_then_changes(),
        watches.rooms.store(),
    );
    // A change of a tenant (limits, suspension) concerns all its rooms.
    let rooms = watches.rooms.store();
    let rooms_of_tenant = move |tenant: Arc<Tenant>| {
        let namespace = crd::tenant_namespace(&tenant.name_any());
        rooms
            .state()
            .into_iter()
            .filter(|room| room.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(|room| ObjectRef::from_obj(room.as_ref()))
            .collect::<Vec<_>>()
    };
    // Each pass reads its tenant from the replica's cache instead of asking the API server.
    let tenants = watches.tenants.store();
    let tenant_changes = watches.tenants.changes();
    controller
        .watches_shared_stream(tenant_changes, rooms_of_tenant)
        .reconcile_on(changes)
        .graceful_shutdown_on(shutdown)
        .run(
            move |room, ctx| reconcile(room, ctx, tenants.clone()),
            |object, error, ctx| error_policy("room", object.as_ref(), error, &ctx),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(room: Arc<Room>, ctx: Arc<Context>, tenants: Store<Tenant>) -> Result<Action> {
    let _measure = ctx.metrics.reconcile("room");
    let object = room.clone();
    let namespace = room.namespace().ok_or(Error::Incomplete("namespace"))?;
    // Not before the cache has every tenant: a missing one would read as "no tenant".
    tenants
        .wait_until_ready()
        .await
        .map_err(|_| Error::Waiting("the cache of tenants".to_owned()))?;
    let tenant = crd::namespace_tenant(&namespace)
        .and_then(|tenant| tenants.get(&ObjectRef::new(tenant)))
        .map(|tenant| Tenant::clone(&tenant));
    // A room in a tenant's namespace is touched (not even given a finalizer) only once the
    // operator has found that namespace to be the tenant's own: someone else's namespace of
    // that name gets nothing written into it. A change of the Tenant brings the room back.
    if let Some(tenant) = &tenant
        && !tenant.owns_namespace(&namespace)
        && !room.finalizers().iter().any(|f| f == FINALIZER)
    {
        ctx.succeeded("room", &*object);
        return Ok(Action::await_change());
    }
    let api = Api::<Room>::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, room, |event| async {
        match event {
            Finalizer::Apply(room) => apply(&room, tenant.as_ref(), &ctx).await,
            Finalizer::Cleanup(room) => {
                if let Some(key) = key(&room) {
                    ctx.fleet.close_room(&key);
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
    .inspect(|_| ctx.succeeded("room", &*object))
}

fn key(room: &Room) -> Option<RoomKey> {
    Some(RoomKey {
        tenant: TenantName::new(crd::namespace_tenant(room.metadata.namespace.as_deref()?)?)
            .ok()?,
        name: RoomName::new(room.name_any()).ok()?,
    })
}

/// Whether the room may run under its tenant, and if not, why.
struct Verdict {
    accepted: bool,
    reason: &'static str,
    message: String,
}

impl Verdict {
    fn refused(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            accepted: false,
            reason,
            message: message.into(),
        }
    }
}

async fn check(room: &Room, tenant: Option<&Tenant>, ctx: &Context) -> Result<Verdict> {
    let Some(tenant) = tenant else {
        return Ok(Verdict::refused(
            "NoTenant",
            "the room is not in the namespace of an existing tenant",
        ));
    };
    let namespace = room.namespace().unwrap_or_default();
    if !tenant.owns_namespace(&namespace) {
        return Ok(Verdict::refused(
            crd::NAMESPACE_NOT_OWNED,
            format!(
                "namespace {namespace} is not the own namespace of tenant {}",
                tenant.name_any()
            ),
        ));
    }
    if tenant.spec.suspended {
        return Ok(Verdict::refused(
            "TenantSuspended",
            "the tenant is suspended",
        ));
    }
    let limit = tenant.spec.limits.participants_per_room;
    if let Some(own) = room.spec.max_participants
        && own > limit
    {
        return Ok(Verdict::refused(
            "ExceedsTenantLimit",
            format!("maxParticipants {own} exceeds the tenant's limit of {limit} per room"),
        ));
    }
    let access = room
        .spec
        .access
        .unwrap_or(tenant.spec.policy.default_access);
    if access == RoomAccess::Password {
        let Some(reference) = &room.spec.password_secret_ref else {
            return Ok(Verdict::refused(
                "PasswordMissing",
                "access Password needs passwordSecretRef",
            ));
        };
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&reference.name)
            .await?;
        let has_key = secret
            .and_then(|s| s.data)
            .is_some_and(|data| data.contains_key(&reference.key));
        if !has_key {
            return Ok(Verdict::refused(
                "PasswordMissing",
                format!("Secret {} has no key {}", reference.name, reference.key),
            ));
        }
    }
    Ok(Verdict {
        accepted: true,
        reason: "Accepted",
        message: "the room fits its tenant's limits and policy".to_owned(),
    })
}

async fn apply(room: &Room, tenant: Option<&Tenant>, ctx: &Context) -> Result<Action> {
    let namespace = room.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = room.name_any();
    let tenant_name = crd::namespace_tenant(&namespace).map(str::to_owned);
    let verdict = check(room, tenant, ctx).await?;
    let key = key(room);
    let participants = key
        .as_ref()
        .map_or(0, |key| ctx.fleet.room_participants(key));
    if !verdict.accepted
        && participants > 0
        && let Some(key) = &key
    {
        ctx.fleet.close_room(key);
    }

    let previous = room.status.clone().unwrap_or_default();
    let mut status = RoomStatus {
        phase: Some(if !verdict.accepted {
            RoomPhase::Closed
        } else if participants > 0 {
            RoomPhase::Active
        } else {
            RoomPhase::Idle
        }),
        tenant: tenant_name.clone(),
        // The hosting node is the gateway's to record (with optimistic concurrency); the
        // reconciler never writes it.
        node: None,
        nodes: Vec::new(),
        participants: participants as i32,
        join_url: tenant_name.as_ref().map(|tenant| {
            format!(
                "{}/{tenant}/{name}",
                ctx.settings.public_url.trim_end_matches('/')
            )
        }),
        empty_since: None,
        observed_generation: room.metadata.generation,
        conditions: previous.conditions.clone(),
    };
    crd::set_condition(
        &mut status.conditions,
        "Accepted",
        verdict.accepted,
        verdict.reason,
        &verdict.message,
        room.metadata.generation,
    );

    // At rest, a room is looked at again once an hour: every change that concerns it (its
    // spec, its tenant, its participants) brings it back at once.
    let mut requeue = Duration::from_secs(3600);
    if room.spec.lifetime == Lifetime::AdHoc && participants == 0 {
        let since = previous
            .empty_since
            .clone()
            .unwrap_or(Time(Timestamp::now()));
        let empty_for = Timestamp::now().duration_since(since.0).unsigned_abs();
        let ttl = ctx.settings.adhoc_room_ttl;
        if empty_for >= ttl {
            info!(room = %name, %namespace, "removing an ad-hoc room that stayed empty");
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: room.resource_version(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<Room>::namespaced(ctx.client.clone(), &namespace)
                .delete(&name, &params)
                .await
            {
                Ok(_) => return Ok(Action::await_change()),
                // Someone joined or changed it in between: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(error) => return Err(error.into()),
            }
        }
        status.empty_since = Some(since);
        requeue = (ttl - empty_for).max(Duration::from_millis(100));
    } else if participants > 0 {
        requeue = Duration::from_secs(30);
    }

    let mut current = previous.clone();
    current.node = None;
    current.nodes.clear();
    if current != status {
        let body = json!({
            "apiVersion": "treffpunkt.io/v1alpha1",
            "kind": "Room",
            "status": status,
        });
        Api::<Room>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        let was_accepted = crd::condition_is_true(&previous.conditions, "Accepted");
        if !verdict.accepted && (was_accepted || previous.conditions.is_empty()) {
            ctx.event(
                &room.object_ref(&()),
                true,
                verdict.reason,
                verdict.message.clone(),
            )
            .await;
        }
    }
    Ok(Action::requeue(requeue))
}
