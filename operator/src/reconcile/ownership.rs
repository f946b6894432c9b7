//! The operator owns only what it created, and it never adopts an object by its name alone.
//!
//! An object is the operator's for an owner (a Tenant, a MediaPool) when its controller
//! reference names that owner's UID. The reference is written when the operator creates the
//! object, and the creation is a `create`, never an apply: an apply to a name that is taken
//! would merge into, and so adopt, whatever someone else put there, while a `create` fails and
//! shows the name is taken. An object found under the name that is not the owner's is someone
//! else's: it is left exactly as it is, and the reconciler reports it in the owner's status.
//!
//! Once made, an object is kept as the owner says by server-side apply, which carries the UID
//! that was checked, so that the API server refuses the write if the object was replaced by
//! another one in between.
//!
//! A `create` records the fields it set as the operator's `Update`; the apply that follows
//! would leave those fields in place even when a later spec drops them (an owner removed from a
//! Tenant would keep its RoleBinding subject). So the operator hands the fields of its own
//! creation over to its apply once, right after the create.
//!
//! An object that already is what the owner says is not written again: the operator notes a
//! digest of what it applies in the object, and skips the apply while the object carries the
//! digest of what it wants now and every field it wants still has its value. A fleet at rest
//! costs the API server reads from the operator, no writes.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{MANAGER, Result};

/// The annotation with a digest of what the operator last applied to an object.
pub const APPLIED: &str = "treffpunkt.io/applied";

/// What the reconciler found under the name of an object it wants.
#[derive(Clone, Debug)]
pub enum Claim<T> {
    /// The owner's: made by the operator for it (or made just now).
    Ours(T),
    /// Someone else's; left alone.
    Foreign,
}

impl<T> Claim<T> {
    /// Whether the object is someone else's.
    pub fn is_foreign(&self) -> bool {
        matches!(self, Self::Foreign)
    }
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|reference| reference.uid == uid && reference.controller == Some(true))
}

/// The metadata of the object named like `desired` as found, or as created from `desired` if
/// there was none.
async fn find_or_create<K>(api: &Api<K>, desired: &K) -> Result<ObjectMeta>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.get_metadata_opt(&desired.name_any()).await? {
        Some(found) => Ok(found.metadata),
        None => create_or_find(api, desired).await,
    }
}

/// The metadata of `desired` as created, or of the object someone made under its name in
/// between.
async fn create_or_find<K>(api: &Api<K>, desired: &K) -> Result<ObjectMeta>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api.create(&params, desired).await {
        Ok(created) => Ok(created.meta().clone()),
        // Someone made it in between: see whose it is.
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            Ok(api.get_metadata(&name).await?.metadata)
        }
        Err(error) => Err(error.into()),
    }
}

/// Makes the object named like `desired` what `desired` says, if it is `owner`'s or does not
/// exist yet (then it is created); leaves someone else's alone. Returns the object as written.
pub async fn apply_owned<K>(api: &Api<K>, desired: &K, owner: &str) -> Result<Claim<K>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    apply_owned_from(api, desired, desired, owner).await
}

/// [`apply_owned`], where a missing object is first created as `first` (the same name and
/// owner) and then applied. For a Role: the API server checks the right to grant (`escalate`)
/// by the Role's name, which a create does not yet have; so the Role is created without
/// rules, and the apply that gives it its rules is checked by name.
pub async fn apply_owned_from<K>(
    api: &Api<K>,
    first: &K,
    desired: &K,
    owner: &str,
) -> Result<Claim<K>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    let mut body = desired.clone();
    stamp(&mut body);
    let meta = match api.get_opt(&name).await? {
        Some(found) if controlled_by(found.meta(), owner) && unchanged(&body, &found) => {
            return Ok(Claim::Ours(found));
        }
        Some(found) => found.meta().clone(),
        None => create_or_find(api, first).await?,
    };
    if !controlled_by(&meta, owner) {
        return Ok(Claim::Foreign);
    }
    hand_over(api, &name, meta.clone()).await?;
    body.meta_mut().uid = meta.uid;
    let written = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(Claim::Ours(written))
}

/// Notes in `desired` a digest of itself: an object that still carries the digest of what the
/// operator wants now was applied from exactly that, so a field the operator dropped since is
/// noticed too (its digest differs), not only a field it set or changed.
fn stamp<K: Resource + Serialize>(desired: &mut K) {
    let Ok(bytes) = serde_json::to_vec(&*desired) else {
        return;
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED.to_owned(), hex);
}

/// Whether `found` already is what `desired` (stamped) says: it carries the same digest, and
/// every field of `desired` has the same value there (nobody changed one in between). Fields
/// the API server or others added do not count, as an apply would keep them too.
fn unchanged<K: Serialize>(desired: &K, found: &K) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(found)) {
        (Ok(desired), Ok(found)) => contains(&found, &desired),
        _ => false,
    }
}

/// Whether `have` has every field of `want` with the same value (lists: the same length, each
/// item containing the wanted one).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|found| contains(found, value))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| contains(h, w))
        }
        _ => have == want,
    }
}

/// Creates `desired` if nothing has its name; never changes an existing object. Returns the
/// metadata of the owner's object, found or made.
pub async fn create_owned<K>(api: &Api<K>, desired: &K, owner: &str) -> Result<Claim<ObjectMeta>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let meta = find_or_create(api, desired).await?;
    Ok(if controlled_by(&meta, owner) {
        Claim::Ours(meta)
    } else {
        Claim::Foreign
    })
}

/// Hands the fields that the operator's `create` recorded as its `Update` over to its apply
/// (nothing to do when there are none). Concurrent writers, such as a controller writing the
/// object's status, make the API server refuse a stale hand-over; it is tried again on what is
/// there now.
async fn hand_over<K>(api: &Api<K>, name: &str, mut meta: ObjectMeta) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut attempts = 0;
    loop {
        let Some(fields) = handed_over(meta.managed_fields.as_deref().unwrap_or_default()) else {
            return Ok(());
        };
        // The resourceVersion makes it a compare-and-set: other managers' entries stay as the
        // API server has them.
        let patch = json!({
            "metadata": {
                "resourceVersion": meta.resource_version,
                "managedFields": fields,
            }
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => {
                attempts += 1;
                meta = api.get_metadata(name).await?.metadata;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// `fields` with the operator's `Update` entry turned into its `Apply` entry (or dropped, when
/// it has one already), or `None` when there is no such entry.
fn handed_over(fields: &[ManagedFieldsEntry]) -> Option<Vec<ManagedFieldsEntry>> {
    let ours = |entry: &ManagedFieldsEntry, operation: &str| {
        entry.manager.as_deref() == Some(MANAGER)
            && entry.operation.as_deref() == Some(operation)
            && entry.subresource.is_none()
    };
    if !fields.iter().any(|entry| ours(entry, "Update")) {
        return None;
    }
    let applies = fields.iter().any(|entry| ours(entry, "Apply"));
    Some(
        fields
            .iter()
            .filter(|entry| !(applies && ours(entry, "Update")))
            .map(|entry| {
                let mut entry = entry.clone();
                if ours(&entry, "Update") {
                    entry.operation = Some("Apply".to_owned());
                }
                entry
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn entry(manager: &str, operation: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            subresource: subresource.map(str::to_owned),
            ..ManagedFieldsEntry::default()
        }
    }

    fn shape(fields: &[ManagedFieldsEntry]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|e| (e.manager.clone().unwrap(), e.operation.clone().unwrap()))
            .collect()
    }

    #[test]
    fn only_a_controller_reference_to_the_owners_uid_makes_an_object_ours() {
        let reference = |uid: &str, controller| OwnerReference {
            api_version: "treffpunkt.io/v1alpha1".to_owned(),
            kind: "Tenant".to_owned(),
            name: "verein".to_owned(),
            uid: uid.to_owned(),
            controller,
            block_owner_deletion: None,
        };
        let meta = |references| ObjectMeta {
            owner_references: Some(references),
            ..ObjectMeta::default()
        };
        assert!(controlled_by(
            &meta(vec![reference("u-1", Some(true))]),
            "u-1"
        ));
        assert!(!controlled_by(
            &meta(vec![reference("u-2", Some(true))]),
            "u-1"
        ));
        assert!(!controlled_by(&meta(vec![reference("u-1", None)]), "u-1"));
        assert!(!controlled_by(&ObjectMeta::default(), "u-1"));
    }

    #[test]
    fn an_object_is_unchanged_only_with_every_wanted_field_and_the_same_digest() {
        use k8s_openapi::api::core::v1::ResourceQuota;
        let quota = |rooms: &str| -> ResourceQuota {
            serde_json::from_value(json!({
                "metadata": {"name": "treffpunkt", "namespace": "tenant-verein",
                             "labels": {"app.kubernetes.io/managed-by": "treffpunkt"}},
                "spec": {"hard": {"count/rooms.treffpunkt.io": rooms}},
            }))
            .unwrap()
        };
        let mut wanted = quota("20");
        stamp(&mut wanted);
        // As the API server gives it back: with fields of its own.
        let mut found = wanted.clone();
        found.metadata.resource_version = Some("42".into());
        found
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/other".into(), "set by someone else".into());
        found.status = Some(Default::default());
        assert!(unchanged(&wanted, &found));
        // A field of the operator's changed by someone.
        let mut edited = found.clone();
        edited.spec = quota("9999").spec;
        assert!(!unchanged(&wanted, &edited));
        // What the operator wants changed: another digest.
        let mut more = quota("30");
        stamp(&mut more);
        assert_ne!(more.annotations()[APPLIED], wanted.annotations()[APPLIED]);
        assert!(!unchanged(&more, &found));
        // Never applied by this operator (no digest yet).
        assert!(!unchanged(&wanted, &quota("20")));
        // Lists: the same items, no more, no fewer.
        assert!(contains(&json!({"a": [1, 2]}), &json!({"a": [1, 2]})));
        assert!(!contains(&json!({"a": [1, 2, 3]}), &json!({"a": [1, 2]})));
    }

    #[test]
    fn the_fields_of_a_create_go_over_to_the_apply() {
        let created = [
            entry(MANAGER, "Update", None),
            entry("kube-controller-manager", "Update", Some("status")),
        ];
        let fields = handed_over(&created).expect("an entry to hand over");
        assert_eq!(
            shape(&fields),
            [
                (MANAGER.to_owned(), "Apply".to_owned()),
                ("kube-controller-manager".to_owned(), "Update".to_owned())
            ]
        );
        let applied_too = [
            entry(MANAGER, "Apply", None),
            entry(MANAGER, "Update", None),
        ];
        assert_eq!(
            shape(&handed_over(&applied_too).unwrap()),
            [(MANAGER.to_owned(), "Apply".to_owned())]
        );
        assert!(handed_over(&[entry(MANAGER, "Apply", None)]).is_none());
        assert!(handed_over(&[entry(MANAGER, "Update", Some("status"))]).is_none());
        assert!(handed_over(&[]).is_none());
    }
}
