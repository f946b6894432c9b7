//! Monitoring with a real Prometheus (built from its Go module by `deploy/tools/build.sh
//! prometheus`; the test command passes its path in `TREFFPUNKT_PROMETHEUS`).
//!
//! Prometheus scrapes a standalone server (its gateway and its media node, `--metrics-listen`)
//! every second during a call of two Rust WebRTC participants, with the chart's alert rules
//! loaded. PromQL finds forwarded packets rising, two sessions and the joins counted; every
//! rule evaluates without error, and every query of the chart's Grafana dashboard is valid
//! PromQL and names only metrics that exist.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::helm::{kind, render_with, tool};
use support::{eventually, free_port, http, unique};
use treffpunkt_client::{Participant, signal_url};
use treffpunkt_operator::standalone::StandaloneConfig;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Prometheus as a process, scraping `target` every second, with `rules` loaded.
struct Prometheus {
    process: Child,
    address: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &serde_json::Value) -> Self {
        let dir = std::env::temp_dir().join(unique("treffpunkt-prometheus"));
        std::fs::create_dir_all(&dir).unwrap();
        let rules_file = dir.join("rules.yml");
        std::fs::write(&rules_file, serde_json::to_string(rules).unwrap()).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\n\
             scrape_configs:\n  - job_name: treffpunkt\n    static_configs:\n      \
             - targets: ['{target}']\n",
            rules_file.display()
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let address = SocketAddr::new(LOOPBACK, free_port());
        let process = Command::new(tool("prometheus", "TREFFPUNKT_PROMETHEUS"))
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Prometheus starts");
        Self {
            process,
            address,
            dir,
        }
    }

    /// The result of the instant query `promql`, or the error Prometheus gave.
    async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (_, body) = http(self.address, "GET", &path)
            .await
            .ok_or("Prometheus does not answer")?;
        let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{promql}: {}", answer["error"]));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The single value `promql` gives, once there is one.
    async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await.ok()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `text` for a URL's query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The chart's alert rules (the PrometheusRule's spec) and its dashboard's queries.
fn from_the_chart() -> (serde_json::Value, Vec<String>) {
    let objects =
        render_with("monitoring.dashboard.enabled=true,monitoring.prometheusRule.enabled=true");
    let rule = objects
        .iter()
        .find(|o| kind(o) == "PrometheusRule")
        .expect("a PrometheusRule");
    let map = objects
        .iter()
        .find(|o| kind(o) == "ConfigMap")
        .expect("the dashboard's ConfigMap");
    let dashboard: serde_json::Value =
        serde_json::from_str(map.data["data"]["treffpunkt.json"].as_str().unwrap()).unwrap();
    let queries = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    (rule.data["spec"].clone(), queries)
}

/// The metric names `promql` reads.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = promql;
    while let Some(at) = rest.find("treffpunkt_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_call_and_the_charts_rules_and_dashboard_hold() {
    let metrics = SocketAddr::new(LOOPBACK, free_port());
    // Two media nodes in the process: their series share one document, which Prometheus takes.
    let server = support::calls::on_loopback(StandaloneConfig {
        metrics: Some(metrics),
        media_shards: 2,
        ..StandaloneConfig::default()
    })
    .await;
    let (rules, queries) = from_the_chart();
    let prometheus = Prometheus::start(metrics, &rules);

    let url = signal_url(server.http, "public", "ratssitzung");
    let (anna, ben) = support::calls::anna_and_ben(&url).await;
    let wait = Duration::from_secs(30);
    let sessions = eventually(wait, || async {
        prometheus
            .value("sum(treffpunkt_node_sessions)")
            .await
            .filter(|v| *v == 2.0)
    })
    .await;
    assert_eq!(sessions, Some(2.0), "Prometheus sees two sessions");
    let nodes = prometheus.value("count(treffpunkt_node_sessions)").await;
    assert_eq!(nodes, Some(2.0), "Prometheus tells the two nodes apart");
    let rising = "sum(increase(treffpunkt_node_packets_total{direction=\"out\"}[5s]))";
    let forwarded = eventually(wait, || async {
        prometheus.value(rising).await.filter(|v| *v > 100.0)
    })
    .await;
    assert!(forwarded.is_some(), "forwarded packets rise");
    let joined = prometheus
        .value("sum(treffpunkt_joins_total{outcome=\"admitted\"})")
        .await;
    assert_eq!(joined, Some(2.0), "the joins are counted");
    // The lines: the subscribers' feedback is counted, and the round trips are measured.
    for (query, what) in [
        (
            "sum(treffpunkt_node_downlink_reported_packets_total)",
            "packets the feedback reported on",
        ),
        (
            "sum(treffpunkt_node_round_trip_seconds_count)",
            "round-trip times",
        ),
    ] {
        let seen = eventually(wait, || async {
            prometheus.value(query).await.filter(|v| *v > 0.0)
        })
        .await;
        assert!(seen.is_some(), "Prometheus sees {what}");
    }

    // Every rule of the chart loaded and evaluates cleanly.
    let (_, body) = http(prometheus.address, "GET", "/api/v1/rules")
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let loaded: Vec<&serde_json::Value> = answer["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .collect();
    let expected = rules["groups"][0]["rules"].as_array().unwrap().len();
    assert_eq!(loaded.len(), expected, "every rule loaded: {body}");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // The dashboard's queries are valid PromQL over metrics this platform has.
    let nowhere = signal_url(server.http, "niemand", "raum");
    assert!(Participant::join(&nowhere, "Carla", None).await.is_err());
    let exposed = http(metrics, "GET", "/metrics").await.unwrap().1;
    let mut known: BTreeSet<String> = metric_names(&exposed);
    // What a cluster's control plane counts besides (a series shows once it has a sample).
    let cluster = treffpunkt_operator::metrics::Metrics::default();
    drop(cluster.reconcile("tenant"));
    cluster.failure("tenant", "kube");
    cluster.moved(true);
    cluster.set_leader(true);
    cluster.set_backlog("tenant", 0);
    known.extend(metric_names(&cluster.encode()));
    for query in &queries {
        prometheus
            .query(query)
            .await
            .unwrap_or_else(|error| panic!("the dashboard's query is refused: {error}"));
        for name in metric_names(query) {
            let family = ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                known.contains(&name) || known.contains(family),
                "{name} in {query} is no metric of the platform"
            );
        }
    }
    anna.leave().await;
    ben.leave().await;
}
