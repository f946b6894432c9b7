//! The hot path: one packet of a publisher in, the subscribers that get it out, each with the
//! header rewritten for its down-track, written into a buffer the caller reuses.

use std::time::Instant;

use super::{Codec, Core, MediaKind, PacketMeta, PeerId, Rewrite, vp8};

/// What [`Core::forward`] tells the node about a packet it forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Whether the packet is audio.
    pub audio: bool,
    /// The VP8 payload descriptor, for rewriting picture ids in the payload.
    pub vp8: Option<vp8::Vp8Descriptor>,
    /// The packet's picture id and TL0PICIDX as they arrived.
    pub picture_id: Option<u16>,
    /// See `picture_id`.
    pub tl0_picture_index: Option<u8>,
    /// Whether the packet goes to links to other nodes as well ([`Core::relay_links`]).
    pub relayed: bool,
}

impl Core {
    /// Forwards one packet of `publisher`'s SSRC `ssrc`: for each subscriber that gets it,
    /// pushes the subscriber and the rewritten header to `out` (cleared first). `payload` is
    /// the RTP payload, read for keyframes and picture ids. Returns `None` when the SSRC is not
    /// published.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        now: Instant,
        publisher: PeerId,
        ssrc: u32,
        sequence_number: u16,
        timestamp: u32,
        payload: &[u8],
        out: &mut Vec<(PeerId, Rewrite)>,
    ) -> Option<Forwarded> {
        out.clear();
        let (id, layer) = *self.published.get(&(publisher, ssrc))?;
        let publication = self.publications.get_mut(&id)?;
        // What a moderator switched off goes nowhere until the participant switches it on.
        let held = self
            .participants
            .get(&publisher)
            .is_some_and(|p| p.held.holds(publication.source));
        let mut forwarded = Forwarded {
            audio: publication.codec.kind() == MediaKind::Audio,
            vp8: None,
            picture_id: None,
            tl0_picture_index: None,
            relayed: false,
        };
        let keyframe = match publication.codec {
            Codec::Vp8 => {
                let descriptor = vp8::parse(payload);
                if let Some(descriptor) = descriptor {
                    forwarded.picture_id = descriptor.picture_id.map(|(id, _)| id);
                    forwarded.tl0_picture_index = descriptor.tl0_picture_index;
                    if let Some((_, height)) = descriptor.dimensions {
                        publication.layers[layer].height = Some(u32::from(height));
                    }
                }
                forwarded.vp8 = descriptor;
                descriptor.is_some_and(|d| d.keyframe)
            }
            codec => codec.starts_keyframe(payload),
        };
        if held {
            return Some(forwarded);
        }
        forwarded.relayed = !publication.relays.is_empty();
        // Payload plus RTP header and SRTP tag, roughly what the subscriber's estimate counts.
        publication.layers[layer].received(now, payload.len() + 24);
        let meta = PacketMeta {
            layer,
            sequence_number,
            timestamp,
            keyframe,
            padding_only: payload.is_empty(),
            picture_id: forwarded.picture_id,
            tl0_picture_index: forwarded.tl0_picture_index,
        };
        for subscription in &mut publication.subscriptions {
            if !subscription.ready {
                continue;
            }
            if let Some(rewrite) = subscription.forwarder.forward(now, &meta) {
                out.push((subscription.subscriber, rewrite));
            }
            if !subscription.forwarder.waiting_for_keyframe() {
                subscription.waiting_since = None;
            }
        }
        Some(forwarded)
    }
}
