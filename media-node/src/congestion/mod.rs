//! Congestion control on what the node sends each subscriber: how much its line carries, and
//! sending no more than that, with its audio first.
//!
//! A subscriber's connection is a leg of its own: the node is the sender there, so the node, not
//! the publisher's browser, must find out what the line carries. Three parts work together, all
//! of them `rtc` interceptors or plain structs driven with the time passed in:
//!
//! - [`estimate`]: the downlink estimate, from the transport-wide congestion control feedback the
//!   subscriber's client sends: the delay trend and loss of what arrived, with a rate control
//!   tuned for a forwarder. It is published in an [`EstimateCell`] that the node reads every tick
//!   and shares out among the subscriber's videos (see the core's allocation).
//! - [`probe`]: before the node sends a subscriber more (a paused video resumed, a video moved up
//!   a layer), it sends padding for a moment at the rate that would need, and reads from the
//!   feedback whether the line carried it.
//! - [`pacer`]: video leaves at no more than the estimate leaves beside the audio, so that a
//!   keyframe's burst never queues the audio behind it on a thin line; probe padding leaves at
//!   the probe's rate.
//!
//! The connection's interceptor chain (see [`crate::session`]) wires them in: the estimator
//! behind `rtc`'s congestion control slot, the pacer in its pacer slot.

pub mod estimate;
pub mod pacer;
pub mod probe;

pub use estimate::{DownlinkEstimator, EstimateCell};
pub use pacer::AudioFirstPacer;
