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

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{MANAGER, Result};

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
    let name = desired.name_any();
    if let Some(found) = api.get_metadata_opt(&name).await? {
        return Ok(found.metadata);
    }
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
    let meta = find_or_create(api, first).await?;
    if !controlled_by(&meta, owner) {
        return Ok(Claim::Foreign);
    }
    hand_over(api, &name, meta.clone()).await?;
    let mut body = desired.clone();
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
