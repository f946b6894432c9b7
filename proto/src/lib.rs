//! Treffpunkt's protocols: the gRPC contract between the control plane and its media nodes
//! (`package treffpunkt.v1`), and the signalling messages between participants and the gateway
//! ([`signalling`]).
//!
//! # The control plane and its nodes
//!
//! A media node dials the control plane and opens one bidirectional
//! [`ControlPlane::attach`](v1::control_plane_client::ControlPlaneClient::attach) stream to each
//! control-plane replica. Over it flow, as [`v1::NodeMessage`] from the node and
//! [`v1::ControlMessage`] from the control plane:
//!
//! - registration ([`v1::Register`]): node id, pool, capacity, media addresses, version;
//! - load reports ([`v1::LoadReport`]);
//! - session and room commands ([`v1::OpenSession`], [`v1::CloseSession`], [`v1::CloseRoom`]);
//! - every participant's signalling ([`v1::SessionSignal`]), multiplexed by session id.
//!
//! This crate holds the generated code, the few conversions that belong to it, and the
//! signing of [`v1::Grant`]s ([`grant`]), which both sides must agree on byte for byte.
//!
//! # Participants and the gateway
//!
//! [`signalling`] types the JSON that browsers, the Rust client and the tests exchange with
//! the gateway over the signalling WebSocket, once for all of them, and converts a joined
//! participant's messages to and from the [`v1::Signal`]s that the gateway relays to the node.
//!
//! Parts of two releases work together while a fleet is upgraded: each names what it
//! understands beyond the forms every release understands ([`features`]).
//!
//! When the Attach port runs mutual TLS (in a cluster), [`identity`] names who is who in the
//! certificates. The HTTP endpoints that only the platform's own may read check a bearer token
//! the same way on every side ([`bearer`]).
//!
//! # Randomness
//!
//! [`random`] is the one source of random ids, keys and initial values that every part uses:
//! the operating system's CSPRNG. [`base64`] encodes tokens and credentials.
#![forbid(unsafe_code)]

pub mod base64;
pub mod bearer;
pub mod features;
pub mod grant;
pub mod identity;
pub mod random;
pub mod signalling;

/// Generated code of `treffpunkt.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
    tonic::include_proto!("treffpunkt.v1");
}

impl v1::Signal {
    /// A signal of the given kind.
    pub fn new(kind: v1::signal::Kind) -> Self {
        Self { kind: Some(kind) }
    }

    /// An error signal with a stable code for the client and a message for people.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(v1::signal::Kind::Error(v1::SignalError {
            code: code.into(),
            message: message.into(),
        }))
    }
}

impl v1::NodeMessage {
    /// A node message of the given kind.
    pub fn new(kind: v1::node_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

impl v1::ControlMessage {
    /// A control message of the given kind.
    pub fn new(kind: v1::control_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

impl std::fmt::Display for v1::RoomRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}
