//! Treffpunkt's control plane.
//!
//! One binary serves the browser-facing gateway and the endpoint media nodes attach to. Its
//! parts, from the inside out:
//!
//! - [`domain`]: tenants, rooms, who may join and where a room is placed. Pure: no Kubernetes,
//!   no gRPC, no HTTP.
//! - [`store`]: where tenants and rooms live, behind the [`store::Store`] trait: in memory for
//!   standalone mode, the Kubernetes API server in a cluster.
//! - [`fleet`]: the media nodes attached over gRPC (`Attach`), their load, and the routing of
//!   every participant's session to the node that hosts its room.
//! - [`gateway`]: the web client, the join checks and the signalling WebSocket that is relayed
//!   over the hosting node's `Attach` stream.
//! - [`standalone`]: all of it plus one media node in one process, talking real gRPC over
//!   loopback, with an in-memory store: a meeting server on one machine.
#![forbid(unsafe_code)]

pub mod domain;
pub mod fleet;
pub mod gateway;
pub mod standalone;
pub mod store;
