//! What the node can send again, and what it no longer can.

use rtc::interceptor::RTCPFeedback;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
use rtc::shared::TransportContext;

use super::*;

const VIDEO: u32 = 7;

fn with_nack(ssrc: u32) -> StreamInfo {
    StreamInfo {
        ssrc,
        mime_type: "video/VP8".into(),
        rtcp_feedback: vec![RTCPFeedback {
            typ: "nack".into(),
            parameter: String::new(),
        }],
        ..Default::default()
    }
}

/// A responder for the video stream [`VIDEO`], which negotiated NACK, counting into `repairs`.
fn video_responder(repairs: Repairs) -> Retransmissions {
    let mut responder = Retransmissions::counting_into(repairs);
    responder.bind_local_stream(&with_nack(VIDEO));
    responder
}

fn rtp(now: Instant, ssrc: u32, sequence_number: u16, payload: usize) -> TaggedPacket {
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                ssrc,
                sequence_number,
                ..Default::default()
            },
            // The payload tells which packet it is.
            payload: sequence_number.to_be_bytes().repeat(payload / 2).into(),
        })),
    }
}

/// A NACK for `sequences` of `ssrc`, each alone in its pair but the ones that follow within 16.
fn nack(now: Instant, ssrc: u32, sequences: &[u16]) -> TaggedPacket {
    let mut nacks: Vec<NackPair> = Vec::new();
    for &sequence in sequences {
        if let Some(pair) = nacks.last_mut() {
            let after = sequence.wrapping_sub(pair.packet_id);
            if (1..=16).contains(&after) {
                pair.lost_packets |= 1 << (after - 1);
                continue;
            }
        }
        nacks.push(NackPair {
            packet_id: sequence,
            lost_packets: 0,
        });
    }
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: ssrc,
            nacks,
        })])),
    }
}

/// Sends `count` packets of `ssrc` from `first`, `every` apart from `start`; what left.
fn send(
    responder: &mut Retransmissions,
    start: Instant,
    every: Duration,
    (ssrc, first, count): (u32, u16, u16),
) -> Instant {
    let mut now = start;
    for index in 0..count {
        now = start + every * u32::from(index);
        let packet = rtp(now, ssrc, first.wrapping_add(index), 1000);
        responder
            .handle_write(packet)
            .expect("the responder takes every packet");
        while responder.poll_write().is_some() {}
    }
    now
}

/// What the responder sends for a NACK of `sequences` at `now`: each packet's sequence number,
/// checking that it is the packet sent then, marked as a retransmission.
fn answered(responder: &mut Retransmissions, now: Instant, sequences: &[u16]) -> Vec<u16> {
    responder
        .handle_read(nack(now, VIDEO, sequences))
        .expect("the responder takes every NACK");
    assert!(
        responder.poll_read().is_some(),
        "the NACK goes on up the chain"
    );
    std::iter::from_fn(|| responder.poll_write())
        .map(|sent| {
            assert!(sent.message.has(&Attribute::Retransmission));
            let Packet::Rtp(packet) = sent.message.packet else {
                panic!("a retransmission is RTP");
            };
            let sequence = packet.header.sequence_number;
            assert_eq!(&packet.payload[..2], &sequence.to_be_bytes()[..]);
            assert_eq!(packet.payload.len(), 1000);
            sequence
        })
        .collect()
}

#[test]
fn a_16_mbit_stream_is_answered_from_its_last_second() {
    let repairs = Repairs::default();
    let mut responder = video_responder(repairs.clone());
    // 2,000 packets a second for 1.5 s, the sequence numbers wrapping 1 s in.
    let (start, first) = (Instant::now(), 63_536u16);
    let every = Duration::from_micros(500);
    let last = send(&mut responder, start, every, (VIDEO, first, 3_000));
    let sent_ago = |ago: Duration| {
        let index = (last - ago - start).as_micros() / every.as_micros();
        first.wrapping_add(index as u16)
    };
    // Asked for 250 ms later (a round trip of 150 ms and the receiver's wait): still there,
    // where 256 packets kept were 128 ms of this stream.
    let at = last + Duration::from_millis(50);
    let recent = [
        sent_ago(Duration::from_millis(200)),
        sent_ago(Duration::from_millis(200)).wrapping_add(3),
        sent_ago(Duration::from_millis(900)),
        65_535,
        0,
    ];
    let older = [first, sent_ago(Duration::from_millis(1_200))];
    let mut asked = recent.to_vec();
    asked.extend(older);
    assert_eq!(answered(&mut responder, at, &asked), recent);
    assert_eq!(
        repairs.counts(),
        (5, 2),
        "sent again, and asked for too late"
    );
}

#[test]
fn a_thumbnail_keeps_a_second_not_a_number_of_packets() {
    let mut responder = video_responder(Repairs::default());
    let start = Instant::now();
    let every = Duration::from_micros(16_667);
    let last = send(&mut responder, start, every, (VIDEO, 100, 180));
    let kept = responder.streams[&VIDEO].sent.len();
    assert!(
        (59..=61).contains(&kept),
        "{kept} packets of the last second"
    );
    // Three seconds of 60 packets: 150 was sent 2.15 s before the last, 250 half a second.
    assert_eq!(answered(&mut responder, last, &[150, 250]), vec![250]);
    // A NACK comes late, after the stream stopped: what it asks for has aged out meanwhile.
    assert!(answered(&mut responder, last + Duration::from_secs(2), &[279]).is_empty());
    assert!(responder.streams[&VIDEO].sent.is_empty());
}

#[test]
fn what_cannot_be_asked_for_is_not_kept() {
    let mut responder = Retransmissions::default();
    // Audio negotiates no NACK.
    responder.bind_local_stream(&StreamInfo {
        ssrc: 3,
        mime_type: "audio/opus".into(),
        ..Default::default()
    });
    responder.bind_local_stream(&with_nack(VIDEO));
    let now = Instant::now();
    for (ssrc, sequence, payload) in [(3, 1, 100), (VIDEO, 1, 1000), (VIDEO, 2, 0), (9, 3, 1000)] {
        responder
            .handle_write(rtp(now, ssrc, sequence, payload))
            .expect("the responder takes every packet");
        assert!(responder.poll_write().is_some(), "every packet goes on");
    }
    assert_eq!(responder.streams.len(), 1);
    // The probe's padding (no payload) is not kept; the video before it is.
    assert_eq!(answered(&mut responder, now, &[1, 2]), vec![1]);
    responder.unbind_local_stream(&with_nack(VIDEO));
    assert!(answered(&mut responder, now, &[1]).is_empty());
}

#[test]
fn a_stream_with_gaps_is_still_found() {
    let mut responder = video_responder(Repairs::default());
    let now = Instant::now();
    // Padding took 4 and 9..=11 (not kept), and the sequence wraps.
    let sequences = [65_533u16, 65_534, 65_535, 3, 5, 6, 7, 8, 12, 13];
    for sequence in sequences {
        responder
            .handle_write(rtp(now, VIDEO, sequence, 1000))
            .expect("the responder takes every packet");
    }
    while responder.poll_write().is_some() {}
    let asked = [65_532, 65_535, 0, 3, 4, 7, 11, 12, 13, 14];
    assert_eq!(
        answered(&mut responder, now, &asked),
        vec![65_535, 3, 7, 12, 13]
    );
}

#[test]
fn one_nack_cannot_have_everything_sent_again() {
    let mut responder = video_responder(Repairs::default());
    let start = Instant::now();
    let last = send(
        &mut responder,
        start,
        Duration::from_micros(250),
        (VIDEO, 0, 4_000),
    );
    let everything: Vec<u16> = (0..4_000).collect();
    let again = answered(&mut responder, last, &everything);
    assert_eq!(again.len(), MOST_ANSWERED);
    assert_eq!(again[0], 0);
    // Within the same second, what is left of a second's worth (4,000 sent, 512 resent).
    let mut more = 0;
    for _ in 0..10 {
        more += answered(&mut responder, last, &everything[..1_000]).len();
    }
    assert_eq!(
        more,
        4_000 - MOST_ANSWERED,
        "a flood of NACKs gets a second's worth"
    );
    // A NACK for a stream the node does not send is passed on and answered with nothing.
    responder
        .handle_read(nack(last, 99, &[1, 2, 3]))
        .expect("the responder takes a NACK of any stream");
    assert!(responder.poll_read().is_some());
    assert!(responder.poll_write().is_none());
}

#[test]
fn a_thumbnail_may_be_sent_again_in_full_once_a_second() {
    let mut responder = video_responder(Repairs::default());
    let start = Instant::now();
    let every = Duration::from_micros(16_667);
    let last = send(&mut responder, start, every, (VIDEO, 0, 60));
    let all: Vec<u16> = (0..60).collect();
    // A keyframe lost whole is sent again, and once more; beyond 64 in a second, nothing.
    assert_eq!(answered(&mut responder, last, &all).len(), 60);
    assert_eq!(
        answered(&mut responder, last, &all).len(),
        LEAST_ALLOWED - 60
    );
    assert!(answered(&mut responder, last, &all).is_empty());
    // A second later the stream may be repaired again.
    let later = send(&mut responder, last + every, every, (VIDEO, 60, 60));
    let recent: Vec<u16> = (60..120).collect();
    assert_eq!(answered(&mut responder, later, &recent).len(), 60);
}

#[test]
fn a_subscriber_that_took_rtx_gets_its_repairs_on_the_repair_stream() {
    const REPAIRS: u32 = 8;
    let mut responder = Retransmissions::default();
    responder.bind_local_stream(&StreamInfo {
        ssrc_rtx: Some(REPAIRS),
        payload_type_rtx: Some(97),
        ..with_nack(VIDEO)
    });
    let start = Instant::now();
    let now = send(
        &mut responder,
        start,
        Duration::from_millis(1),
        (VIDEO, 65_530, 20),
    );
    responder
        .handle_read(nack(now, VIDEO, &[65_533, 2]))
        .expect("the responder takes every NACK");
    let repairs: Vec<rtc::rtp::Packet> = std::iter::from_fn(|| responder.poll_write())
        .map(|sent| match sent.message.packet {
            Packet::Rtp(packet) => packet,
            _ => panic!("a retransmission is RTP"),
        })
        .collect();
    assert_eq!(repairs.len(), 2);
    for (repair, original) in repairs.iter().zip([65_533u16, 2]) {
        assert_eq!(repair.header.ssrc, REPAIRS);
        assert_eq!(repair.header.payload_type, 97);
        // The original sequence number, then the original payload (which repeats it).
        assert_eq!(&repair.payload[..2], &original.to_be_bytes()[..]);
        assert_eq!(&repair.payload[2..4], &original.to_be_bytes()[..]);
        assert_eq!(repair.payload.len(), 1002);
    }
    assert_eq!(
        repairs[1].header.sequence_number,
        repairs[0].header.sequence_number.wrapping_add(1),
        "the repair stream numbers its own packets"
    );
}
