//! What the API server's audit log says a test's operator asked for (see `audit_files`):
//! requests by verb and resource, without those of kube-controller-manager, the API server
//! itself, Leases (leader election renews them whatever the platform holds) and what the test
//! harness applies when it starts a replica (the CRDs, the platform namespace).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Duration;

use super::{PLATFORM, testenv};

/// Requests the audit log recorded from `offset` on: (verb, resource) → count, for those made
/// by the operator (not leases; not kube-controller-manager or the API server).
pub fn requests_since(offset: u64) -> BTreeMap<(String, String), u64> {
    requests_of(offset, "")
}

/// The same, of the replica whose identity is `identity` (its User-Agent names it); every
/// replica's when empty. A watch counts once, when it starts.
pub fn requests_of(offset: u64, identity: &str) -> BTreeMap<(String, String), u64> {
    let mut file = std::fs::File::open(&testenv().audit_log).expect("the audit log");
    let length = file.metadata().map_or(0, |m| m.len());
    assert!(
        length >= offset,
        "the audit log was rotated: nothing can be counted"
    );
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut counts = BTreeMap::new();
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let agent = event["userAgent"].as_str().unwrap_or_default();
        let user = event["user"]["username"].as_str().unwrap_or_default();
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        let name = event["objectRef"]["name"].as_str().unwrap_or_default();
        // What the test harness itself writes when it starts a replica: the CRDs and the
        // platform namespace, applied again.
        let harness = resource == "customresourcedefinitions"
            || (resource == "namespaces" && name == PLATFORM);
        if agent.starts_with("kube-controller-manager")
            || agent.starts_with("kube-scheduler")
            || agent.starts_with("kube-apiserver")
            || user.starts_with("system:")
            || resource == "leases"
            || harness
        {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or_default().to_owned();
        // A watch is recorded when it starts and again when it ends.
        if verb == "watch" && event["stage"] != "ResponseStarted" {
            continue;
        }
        if !identity.is_empty() && !agent.contains(&format!("({identity})")) {
            continue;
        }
        *counts.entry((verb, resource.to_owned())).or_insert(0) += 1;
    }
    counts
}

/// Where the audit log ends now.
pub fn audit_offset() -> u64 {
    std::fs::metadata(&testenv().audit_log).map_or(0, |m| m.len())
}

/// The writes among `counts`.
pub fn writes(counts: &BTreeMap<(String, String), u64>) -> BTreeMap<(String, String), u64> {
    counts
        .iter()
        .filter(|((verb, _), _)| !matches!(verb.as_str(), "get" | "list" | "watch"))
        .map(|(key, count)| (key.clone(), *count))
        .collect()
}

/// Requests a minute, of `counts` made in `elapsed`.
pub fn per_minute(counts: &BTreeMap<(String, String), u64>, elapsed: Duration) -> f64 {
    counts.values().sum::<u64>() as f64 * 60.0 / elapsed.as_secs_f64()
}
