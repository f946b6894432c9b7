//! What the node reads from and changes in session descriptions beyond what `rtc` does.

use std::collections::HashMap;

/// The rids each media section of an SDP sends (`a=rid:<id> send`), by mid, in order.
pub fn offered_rids(sdp: &str) -> HashMap<String, Vec<String>> {
    let mut sections = HashMap::new();
    let mut mid: Option<String> = None;
    let mut rids: Vec<String> = Vec::new();
    let mut flush = |mid: &mut Option<String>, rids: &mut Vec<String>| {
        if let Some(mid) = mid.take()
            && !rids.is_empty()
        {
            sections.insert(mid, std::mem::take(rids));
        }
        rids.clear();
    };
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            flush(&mut mid, &mut rids);
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("a=rid:") {
            let mut parts = value.split_whitespace();
            if let (Some(id), Some("send")) = (parts.next(), parts.next()) {
                rids.push(id.to_owned());
            }
        }
    }
    flush(&mut mid, &mut rids);
    sections
}

/// A description of the node's (an answer, or an offer of its down-tracks) as the client is to
/// see it: without RTX in the sections the node receives on, so that publishers repair with the
/// packet itself, since `rtc` 0.21 refuses the RTX of a simulcast layer (named by the repaired
/// stream's rid), which would lose every repair of a browser's camera.
///
/// `rtc` puts a repair format back into any section whose primary codec it keeps, and takes as
/// its local description only the one it made, so the node sets that one and sends this: the
/// two differ only in a format the node would take and the client will not send.
pub fn without_rtx_where_receiving(sdp: &str) -> String {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split("\r\n") {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    let mut edited: Vec<String> = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let receiving = index > 0
            && section
                .iter()
                .any(|line| *line == "a=recvonly" || *line == "a=sendrecv");
        let rtx: Vec<&str> = section
            .iter()
            .filter_map(|line| line.strip_prefix("a=rtpmap:"))
            .filter_map(|map| map.split_once(' '))
            .filter(|(_, format)| format.to_ascii_lowercase().starts_with("rtx/"))
            .map(|(payload_type, _)| payload_type)
            .collect();
        if !receiving || rtx.is_empty() {
            edited.extend(section.iter().map(|line| (*line).to_owned()));
            continue;
        }
        for line in section {
            if line.starts_with("m=") {
                let fields = line.split(' ').enumerate();
                let kept: Vec<&str> = fields
                    .filter(|(at, field)| *at < 3 || !rtx.contains(field))
                    .map(|(_, field)| field)
                    .collect();
                edited.push(kept.join(" "));
                continue;
            }
            let names_rtx = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|prefix| {
                line.strip_prefix(prefix)
                    .and_then(|rest| rest.split(' ').next())
                    .is_some_and(|payload_type| rtx.contains(&payload_type))
            });
            if !names_rtx {
                edited.push((*line).to_owned());
            }
        }
    }
    edited.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as `rtc` makes it: a camera the node receives, a video it sends, both with RTX.
    const ANSWER: &str = "v=0\r\n\
        o=- 1 1 IN IP4 0.0.0.0\r\n\
        s=-\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\n\
        a=mid:0\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack\r\n\
        a=rtpmap:97 rtx/90000\r\n\
        a=fmtp:97 apt=96\r\n\
        a=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 packetization-mode=1\r\n\
        a=rtpmap:103 rtx/90000\r\n\
        a=fmtp:103 apt=102\r\n\
        a=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
        a=mid:1\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:97 rtx/90000\r\n\
        a=fmtp:97 apt=96\r\n\
        a=sendonly\r\n\
        a=ssrc-group:FID 1 2\r\n";

    #[test]
    fn rtx_leaves_the_sections_the_node_receives_on_and_stays_where_it_sends() {
        let edited = without_rtx_where_receiving(ANSWER);
        let (receiving, sending) = edited
            .split_once("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n")
            .unwrap();
        assert!(receiving.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\n"));
        assert!(
            !receiving.contains("rtx")
                && !receiving.contains(":97 ")
                && !receiving.contains(":103 ")
        );
        for kept in [
            "a=rtcp-fb:96 nack",
            "a=fmtp:102 packetization-mode=1",
            "a=recvonly",
        ] {
            assert!(receiving.contains(kept), "{kept}");
        }
        assert!(sending.contains("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96"));
        assert!(
            edited.starts_with("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=video 9"),
            "the session part stays"
        );
        assert_eq!(
            without_rtx_where_receiving(&edited),
            edited,
            "nothing more to take"
        );
    }

    #[test]
    fn a_description_without_rtx_or_sections_is_left_as_it_is() {
        for sdp in [
            "",
            "v=0\r\n",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n",
        ] {
            assert_eq!(without_rtx_where_receiving(sdp), sdp);
        }
    }
}
