//! The media node's errors.

use std::fmt::Display;

/// What can go wrong in the media node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WebRTC stack refused an operation.
    #[error("webrtc: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    /// A client's session description could not be used.
    #[error("the session description was refused: {0}")]
    BadSdp(String),
    /// A signal arrived in a state where it makes no sense.
    #[error("{0}")]
    Negotiation(&'static str),
    /// The WebRTC stack failed unexpectedly while doing this.
    #[error("internal error while {0}")]
    Internal(&'static str),
    /// A socket or file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The control plane could not be reached or refused the node.
    #[error("control plane: {0}")]
    Control(String),
}

impl Error {
    /// A refused session description, with the parser's reason.
    pub fn bad_sdp(error: impl Display) -> Self {
        Self::BadSdp(error.to_string())
    }
}

/// The media node's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
