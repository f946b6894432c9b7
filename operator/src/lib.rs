//! Treffpunkt's control plane.
//!
//! One binary serves the browser-facing gateway and the endpoint media nodes attach to. Its
//! parts, from the inside out:
//!
//! - [`crd`]: the custom resources `Tenant`, `Room` and `MediaPool`, and their CRDs.
//! - [`domain`]: tenants, rooms, who may join and where a room is placed. Pure: no Kubernetes,
//!   no gRPC, no HTTP.
//! - [`store`]: where tenants and rooms live, behind the [`store::Store`] trait: in memory for
//!   standalone mode, the Kubernetes API server in a cluster.
//! - [`fleet`]: the media nodes attached over gRPC (`Attach`), their load, and the routing of
//!   every participant's session to the node that hosts its room.
//! - [`gateway`]: the web client, the join checks and the signalling WebSocket that is relayed
//!   over the hosting node's `Attach` stream.
//! - [`reconcile`]: the reconcilers of `Tenant`, `Room` and `MediaPool`, run by the replica that
//!   holds the Lease ([`leader`]), with their [`metrics`].
//! - [`cluster`]: one control-plane replica in Kubernetes.
//! - [`seed`]: the Tenant and Room manifests that seed standalone mode.
//! - [`standalone`]: all of it plus one media node in one process, talking real gRPC over
//!   loopback, with an in-memory store: a meeting server on one machine.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cluster;
pub mod crd;
pub mod domain;
pub mod fleet;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod seed;
pub mod standalone;
pub mod store;
