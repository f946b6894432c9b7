//! How one subscriber's downlink is shared among the videos it receives.
//!
//! Audio always goes first: it is small and a meeting without it is no meeting. What is left of
//! the subscriber's bandwidth estimate goes to its videos in order of priority (a screen share,
//! then the dominant speaker, then the others by how recently they spoke). Each video gets the
//! layer that fits both the bandwidth left and the size at which the subscriber shows it; a
//! video that cannot have even its lowest layer is paused (one that plays keeps its lowest
//! layer for a short grace first, see `Subscription::in_grace`), and only the latest few
//! speakers' videos are sent at all in a large room.
//!
//! Moving up needs headroom, moving down happens at once, so that the choice does not flap.

/// The share of headroom a layer needs above its bitrate before a subscriber moves up to it.
const UP_HEADROOM: f64 = 1.25;

/// One layer of a publication, as the node has measured it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerInfo {
    /// What the layer costs, in bits per second.
    pub bitrate: u64,
    /// Its height in pixels, when known.
    pub height: Option<u32>,
}

/// What one video down-track asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// Lower is served first.
    pub priority: u32,
    /// The publication's layers, lowest first.
    pub layers: Vec<LayerInfo>,
    /// The height at which the subscriber shows the video; `None` when it has not said.
    pub viewport_height: Option<u32>,
    /// Whether the subscriber wants this video at all (it may show it nowhere, or have chosen
    /// audio only).
    pub wanted: bool,
    /// The layer it gets now.
    pub current: Option<usize>,
    /// Sent even when the room sends only the latest speakers (a screen share).
    pub exempt_from_last_n: bool,
    /// Paused for bandwidth and not to be tried again yet: it stays paused and costs nothing.
    pub held: bool,
    /// Whether it may move above its current layer (not while a failed move up is recent).
    pub may_rise: bool,
    /// Paused for bandwidth until now: it comes back on its lowest layer, and rises from there
    /// as the line proves it can.
    pub resuming: bool,
}

/// Why a video is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paused {
    /// Not enough bandwidth for its lowest layer.
    Bandwidth,
    /// Only the latest speakers are sent in a large room.
    LastN,
    /// The subscriber does not show it.
    NotWanted,
}

/// The layer chosen for one demand, or why none.
pub type Choice = Result<usize, Paused>;

/// The highest layer not taller than needed: the smallest layer at least as tall as the
/// viewport, or the top layer when none is.
fn fitting_layer(demand: &Demand) -> usize {
    let top = demand.layers.len().saturating_sub(1);
    let Some(viewport) = demand.viewport_height else {
        return top;
    };
    demand
        .layers
        .iter()
        .position(|layer| layer.height.is_some_and(|height| height >= viewport))
        .unwrap_or(top)
}

/// What the next improvement would cost beyond what `choices` use: a paused video resumed on its
/// lowest layer, or a video moved up one layer towards what its tile needs, whichever is
/// cheapest, with the headroom a move up needs. `None` when nothing could improve (or nothing
/// may, for now). The transport probes the subscriber's line for this much before its
/// estimate allows the improvement, so it is rounded up: an estimate that grew to exactly this
/// must be enough for [`allocate`] (rounded down, a single-layer video of 10 Mbit/s waited a
/// fraction of a bit short of it for good, its estimate held at what was wanted).
pub fn next_step(demands: &[Demand], choices: &[Choice]) -> Option<u64> {
    demands
        .iter()
        .zip(choices)
        .filter(|(demand, _)| demand.wanted && !demand.layers.is_empty())
        .filter_map(|(demand, choice)| match choice {
            Err(Paused::Bandwidth) if !demand.held => {
                Some(demand.layers[0].bitrate as f64 * UP_HEADROOM)
            }
            Ok(layer) if demand.may_rise && *layer < fitting_layer(demand) => {
                let next = demand.layers.get(layer + 1)?.bitrate as f64 * UP_HEADROOM;
                Some((next - demand.layers[*layer].bitrate as f64).max(0.0))
            }
            _ => None,
        })
        .map(|cost| cost.ceil() as u64)
        .min()
}

/// Chooses a layer for each demand, in the order given, within `budget` bits per second, and
/// sends at most `last_n` videos (0 for no limit).
pub fn allocate(budget: u64, last_n: usize, demands: &[Demand]) -> Vec<Choice> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    // Below the screen share and the dominant speaker, a video that plays keeps its place
    // against one that is paused: the order of recent speakers changes all the time, and every
    // change would pause a video that had just come back (and hold it paused for a while, as a
    // failed try). Where only the last N speakers are sent, their order decides.
    order.sort_by_key(|&i| {
        let demand = &demands[i];
        if last_n == 0 {
            (
                demand.priority.min(2),
                demand.current.is_none(),
                demand.priority,
            )
        } else {
            (demand.priority, false, 0)
        }
    });
    let mut choices = vec![Err(Paused::NotWanted); demands.len()];
    let mut left = budget as f64;
    let mut sent = 0;
    for i in order {
        let demand = &demands[i];
        if !demand.wanted || demand.layers.is_empty() {
            continue;
        }
        if demand.held {
            choices[i] = Err(Paused::Bandwidth);
            continue;
        }
        if last_n > 0 && sent >= last_n && !demand.exempt_from_last_n {
            choices[i] = Err(Paused::LastN);
            continue;
        }
        let mut layer = if demand.resuming {
            0
        } else {
            fitting_layer(demand)
        };
        if !demand.may_rise
            && let Some(current) = demand.current
        {
            layer = layer.min(current);
        }
        loop {
            let cost = demand.layers[layer].bitrate as f64;
            let moving_up = demand.current.is_none_or(|current| layer > current);
            let needed = if moving_up { cost * UP_HEADROOM } else { cost };
            if needed <= left {
                break;
            }
            if layer == 0 {
                // Not even the lowest layer fits; a running lowest layer may stay while it
                // still fits without headroom.
                if demand.current == Some(0) && cost <= left {
                    break;
                }
                choices[i] = Err(Paused::Bandwidth);
                layer = usize::MAX;
                break;
            }
            layer -= 1;
        }
        if layer == usize::MAX {
            continue;
        }
        left -= demand.layers[layer].bitrate as f64;
        choices[i] = Ok(layer);
        if !demand.exempt_from_last_n {
            sent += 1;
        }
    }
    choices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulcast() -> Vec<LayerInfo> {
        vec![
            LayerInfo {
                bitrate: 150_000,
                height: Some(180),
            },
            LayerInfo {
                bitrate: 500_000,
                height: Some(360),
            },
            LayerInfo {
                bitrate: 1_500_000,
                height: Some(720),
            },
        ]
    }

    fn demand(priority: u32, viewport: Option<u32>, current: Option<usize>) -> Demand {
        Demand {
            priority,
            layers: simulcast(),
            viewport_height: viewport,
            wanted: true,
            current,
            exempt_from_last_n: false,
            held: false,
            may_rise: true,
            resuming: false,
        }
    }

    #[test]
    fn a_playing_video_keeps_its_place_when_the_speaker_order_changes() {
        // Room for one lowest layer. Ben's video plays; Cem spoke more recently, and his video
        // is paused.
        let ben = demand(5, Some(180), Some(0));
        let cem = demand(3, Some(180), None);
        let choices = allocate(200_000, 0, &[ben.clone(), cem.clone()]);
        assert_eq!(choices, [Ok(0), Err(Paused::Bandwidth)]);
        // The dominant speaker's video is served first all the same.
        let dominant = demand(1, Some(180), None);
        let choices = allocate(200_000, 0, &[ben.clone(), dominant]);
        assert_eq!(choices, [Err(Paused::Bandwidth), Ok(0)]);
        // Where only the last speaker is sent, the speaker order decides.
        let choices = allocate(2_000_000, 1, &[ben, cem]);
        assert_eq!(choices, [Err(Paused::LastN), Ok(0)]);
    }

    #[test]
    fn the_layer_fits_both_bandwidth_and_viewport() {
        assert_eq!(
            allocate(10_000_000, 0, &[demand(0, Some(720), None)]),
            vec![Ok(2)]
        );
        assert_eq!(
            allocate(10_000_000, 0, &[demand(0, Some(200), None)]),
            vec![Ok(1)],
            "a small tile"
        );
        assert_eq!(
            allocate(700_000, 0, &[demand(0, Some(720), None)]),
            vec![Ok(1)],
            "a thin line"
        );
        assert_eq!(
            allocate(100_000, 0, &[demand(0, Some(720), None)]),
            vec![Err(Paused::Bandwidth)]
        );
    }

    #[test]
    fn priority_decides_who_gets_the_bandwidth() {
        let screen = demand(0, Some(720), None);
        let camera = demand(1, Some(720), None);
        let choices = allocate(2_200_000, 0, &[camera, screen]);
        assert_eq!(
            choices,
            vec![Ok(1), Ok(2)],
            "the screen share gets the top layer first"
        );
    }

    #[test]
    fn moving_up_needs_headroom_moving_down_does_not() {
        // 520 kbit/s: layer 1 (500k) fits, but not with 25% headroom.
        assert_eq!(
            allocate(520_000, 0, &[demand(0, None, Some(0))]),
            vec![Ok(0)]
        );
        assert_eq!(
            allocate(520_000, 0, &[demand(0, None, Some(1))]),
            vec![Ok(1)],
            "staying needs none"
        );
        assert_eq!(
            allocate(640_000, 0, &[demand(0, None, Some(0))]),
            vec![Ok(1)]
        );
        // A paused video tried again comes back on its lowest layer, with the same headroom (a
        // resumption that fails costs the subscriber's audio a moment, as any move up does).
        let resuming = Demand {
            resuming: true,
            ..demand(0, Some(720), None)
        };
        assert_eq!(
            allocate(190_000, 0, std::slice::from_ref(&resuming)),
            vec![Ok(0)]
        );
        assert_eq!(
            allocate(170_000, 0, &[resuming]),
            vec![Err(Paused::Bandwidth)]
        );
    }

    #[test]
    fn the_next_step_is_the_cheapest_improvement() {
        // One video on the lowest layer that may move up, one paused for bandwidth.
        let playing = demand(0, Some(720), Some(0));
        let paused = demand(1, Some(720), None);
        let choices = vec![Ok(0), Err(Paused::Bandwidth)];
        // Moving up costs 500k x 1.25 - 150k = 475k; resuming 150k x 1.25 = 187.5k.
        assert_eq!(
            next_step(&[playing.clone(), paused.clone()], &choices),
            Some(187_500)
        );
        let held = Demand {
            held: true,
            ..paused
        };
        assert_eq!(
            next_step(&[playing.clone(), held.clone()], &choices),
            Some(475_000)
        );
        let small_tile = demand(0, Some(180), Some(0));
        assert_eq!(
            next_step(&[small_tile, held], &choices),
            None,
            "a tile that needs no more, and a video held back"
        );
    }

    #[test]
    fn only_the_last_n_are_sent_and_unwanted_videos_are_not() {
        let mut quiet = demand(5, None, None);
        quiet.wanted = false;
        let choices = allocate(
            100_000_000,
            2,
            &[
                demand(1, None, None),
                demand(2, None, None),
                demand(3, None, None),
                quiet,
            ],
        );
        assert_eq!(choices[..3], [Ok(2), Ok(2), Err(Paused::LastN)]);
        assert_eq!(choices[3], Err(Paused::NotWanted));
    }

    #[test]
    fn an_estimate_that_reached_the_next_step_is_enough_for_it() {
        // One layer whose rate with headroom is not a whole number of bits a second.
        let paused = Demand {
            layers: vec![LayerInfo {
                bitrate: 7_777_949,
                height: Some(720),
            }],
            resuming: true,
            ..demand(0, Some(720), None)
        };
        let step = next_step(std::slice::from_ref(&paused), &[Err(Paused::Bandwidth)]);
        assert_eq!(
            step,
            Some(9_722_437),
            "7,777,949 x 1.25 = 9,722,436.25, rounded up"
        );
        assert_eq!(allocate(9_722_437, 0, &[paused]), vec![Ok(0)]);
    }
}
