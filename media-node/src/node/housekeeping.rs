//! Once a second: sessions that never got going are closed, a drain that reached its deadline
//! closes what is left, continued sessions older than any ticket are forgotten, and the node
//! reports its load.

use std::time::Instant;

use treffpunkt_proto::v1;

use super::{Event, Node};
use crate::core::{LeaveReason, PeerId};
use crate::session::CONNECT_TIMEOUT;

impl Node {
    pub(super) fn housekeeping(&mut self, now: Instant) {
        let stuck: Vec<(PeerId, &'static str)> = self
            .sessions
            .values()
            .filter_map(|session| {
                if session.answer_overdue(now) {
                    Some((session.id, "no answer to the node's offer"))
                } else if !session.connected
                    && now.duration_since(session.opened_at) > CONNECT_TIMEOUT
                {
                    Some((session.id, "the media connection did not come up"))
                } else {
                    None
                }
            })
            .collect();
        for (peer, detail) in stuck {
            let reason = Some(v1::CloseReason::ConnectionLost);
            self.close_session(now, peer, LeaveReason::ConnectionLost, reason, detail);
        }
        if let Some(deadline) = self.drain_deadline {
            if now >= deadline {
                let remaining: Vec<PeerId> = self.sessions.keys().copied().collect();
                for peer in remaining {
                    let reason = Some(v1::CloseReason::RoomClosed);
                    let detail = "the media node was drained";
                    self.close_session(now, peer, LeaveReason::Left, reason, detail);
                }
            }
            if self.sessions.is_empty() && !self.drain_keeps_running {
                self.finished = true;
            }
        }
        self.continued
            .retain(|_, at| now.duration_since(*at) < super::CONTINUED_MEMORY);
        self.drops.summarise(now);
        self.report_load(now);
    }

    fn report_load(&mut self, now: Instant) {
        let (since, before) = self.last_report;
        let seconds = now.duration_since(since).as_secs_f64().max(0.001);
        let rate = |after: u64, before: u64| ((after - before) as f64 / seconds) as u64;
        let traffic = self.traffic;
        let load = v1::LoadReport {
            rooms: self.core.room_count() as u32,
            participants: self.core.participant_count() as u32,
            published_tracks: self.core.publication_count() as u32,
            forwarded_tracks: self.core.down_track_count() as u32,
            packets_in_per_second: rate(traffic.packets_in, before.packets_in),
            packets_out_per_second: rate(traffic.packets_out, before.packets_out),
            bits_in_per_second: rate(traffic.bytes_in, before.bytes_in) * 8,
            bits_out_per_second: rate(traffic.bytes_out, before.bytes_out) * 8,
            cpu_millicores: 0,
            room_loads: self
                .core
                .rooms()
                .filter_map(|(room, participants)| {
                    let (tenant, name) = room.split_once('/')?;
                    Some(v1::RoomLoad {
                        room: Some(v1::RoomRef {
                            tenant: tenant.to_owned(),
                            name: name.to_owned(),
                        }),
                        participants: participants as u32,
                    })
                })
                .collect(),
        };
        self.event(Event::Load(load));
        self.last_report = (now, traffic);
    }
}
