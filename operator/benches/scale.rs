//! How long the operator takes to bring 100 tenants and 1,000 rooms to Ready, how much memory
//! it holds then, and what it asks of the API server at rest and in the first minute after a
//! restart (from the API server's audit log; Leases not counted).
//!
//! Runs against the real API server of `deploy/testenv`, with the operator as its own process
//! (`treffpunkt operator`), so that its resident memory can be read from `/proc`. As a baseline
//! measured in the same run it reports how long the API server alone took to accept the same
//! objects (the creates), so the operator's share can be told from the API server's.
//!
//! `cargo bench -p treffpunkt-operator --bench scale` (`-- --tenants 100 --rooms-per-tenant 10
//! --rest-seconds 60`).

#[path = "../tests/support/mod.rs"]
mod support;

use support::{argument, free_port};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use support::audit::{audit_offset, per_minute, requests_since, writes};
use treffpunkt_operator::crd::{self, Room, RoomPhase, RoomSpec, Tenant, TenantSpec};

fn resident_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.trim().strip_suffix("kB")?;
            rest.trim().parse().ok()
        })
        .unwrap_or(0)
}

async fn count_ready_tenants(client: &Client, prefix: &str) -> usize {
    Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .filter(|t| {
                    t.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .filter(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| crd::condition_is_true(&s.conditions, "Ready"))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn count_ready_rooms(client: &Client) -> usize {
    Api::<Room>::all(client.clone())
        .list(&ListParams::default().labels("bench=scale"))
        .await
        .map(|list| {
            list.items
                .iter()
                .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RoomPhase::Idle))
                .count()
        })
        .unwrap_or(0)
}

/// The operator as its own process, with its resident memory readable from `/proc`.
fn start_operator() -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args(["operator", "--kubeconfig"])
        .arg(&support::testenv().kubeconfig)
        .args(["--namespace", support::PLATFORM, "--identity", "bench"])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("the operator starts")
}

/// What the operator asks of the API server per minute, from the audit log: at rest for
/// `rest_seconds` (after a moment for the last status updates), then in the first minute of a
/// new process, which passes over everything once. Stops the operator.
async fn requests_at_rest_and_after_a_restart(
    mut operator: std::process::Child,
    rest_seconds: u64,
) -> serde_json::Value {
    tokio::time::sleep(Duration::from_secs(10)).await;
    let offset = audit_offset();
    let rest = Instant::now();
    tokio::time::sleep(Duration::from_secs(rest_seconds)).await;
    let at_rest = requests_since(offset);
    let rest_elapsed = rest.elapsed();
    let _ = operator.kill();
    let _ = operator.wait();
    let offset = audit_offset();
    let restarted = Instant::now();
    let mut operator = start_operator();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after_restart = requests_since(offset);
    let restart_elapsed = restarted.elapsed();
    let _ = operator.kill();
    let _ = operator.wait();
    let reads = |counts: &std::collections::BTreeMap<(String, String), u64>, elapsed| {
        per_minute(counts, elapsed) - per_minute(&writes(counts), elapsed)
    };
    serde_json::json!({
        "at_rest_seconds": rest_elapsed.as_secs_f64(),
        "at_rest_writes": per_minute(&writes(&at_rest), rest_elapsed),
        "at_rest_reads": reads(&at_rest, rest_elapsed),
        "first_minute_after_restart_writes": per_minute(&writes(&after_restart), restart_elapsed),
        "first_minute_after_restart_reads": reads(&after_restart, restart_elapsed),
        "writes_after_restart": format!("{:?}", writes(&after_restart)),
    })
}

/// Tells every minute how far a long run got, so that one stopped early still says something.
async fn report_progress(client: Client, pid: u32) {
    let since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        eprintln!(
            "after {:.0} s: {} rooms Ready, operator RSS {:.0} MiB",
            since.elapsed().as_secs_f64(),
            count_ready_rooms(&client).await,
            resident_kib(pid, "VmRSS:") as f64 / 1024.0
        );
    }
}

fn main() {
    let tenants = argument("--tenants", 100);
    let rooms_per_tenant = argument("--rooms-per-tenant", 10);
    let rest_seconds = argument("--rest-seconds", 60) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = support::admin().await;
        support::ensure_namespace(&client, support::PLATFORM).await;
        let operator = start_operator();
        let pid = operator.id();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_kib = resident_kib(pid, "VmRSS:");
        let prefix = support::unique("scale");

        let started = Instant::now();
        let names: Vec<String> = (0..tenants).map(|i| format!("{prefix}-{i}")).collect();
        stream::iter(names.clone())
            .for_each_concurrent(16, |name| {
                let client = client.clone();
                async move {
                    let spec: TenantSpec = serde_json::from_value(serde_json::json!({
                        "displayName": name, "limits": {"rooms": rooms_per_tenant + 5}
                    }))
                    .unwrap();
                    Api::<Tenant>::all(client)
                        .create(&PostParams::default(), &Tenant::new(&name, spec))
                        .await
                        .expect("a tenant is accepted");
                }
            })
            .await;
        let tenants_created = started.elapsed();
        while count_ready_tenants(&client, &prefix).await < tenants {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tenants_ready = started.elapsed();
        eprintln!(
            "{tenants} tenants created in {:.1} s, Ready in {:.1} s",
            tenants_created.as_secs_f64(),
            tenants_ready.as_secs_f64()
        );
        let progress = tokio::spawn(report_progress(client.clone(), pid));

        let rooms_started = Instant::now();
        // Round the tenants, so that creates running at once go to different namespaces and
        // quotas rather than queueing at one.
        let rooms: Vec<(String, usize)> = (0..rooms_per_tenant)
            .flat_map(|i| names.iter().map(move |tenant| (tenant.clone(), i)))
            .collect();
        stream::iter(rooms)
            .for_each_concurrent(16, |(tenant, i)| {
                let client = client.clone();
                async move {
                    let mut room = Room::new(
                        &format!("raum-{i}"),
                        serde_json::from_value::<RoomSpec>(serde_json::json!({})).unwrap(),
                    );
                    room.metadata.labels = Some([("bench".to_owned(), "scale".to_owned())].into());
                    let api = Api::<Room>::namespaced(client, &crd::tenant_namespace(&tenant));
                    loop {
                        match api.create(&PostParams::default(), &room).await {
                            Ok(_) => break,
                            // The quota controller has not counted the new namespace yet.
                            Err(kube::Error::Api(s))
                                if s.message.contains("status unknown for quota") =>
                            {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(error) => panic!("a room is accepted: {error}"),
                        }
                    }
                }
            })
            .await;
        let rooms_created = rooms_started.elapsed();
        eprintln!("rooms created in {:.1} s", rooms_created.as_secs_f64());
        let total_rooms = tenants * rooms_per_tenant;
        while count_ready_rooms(&client).await < total_rooms {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rooms_ready = rooms_started.elapsed();
        progress.abort();
        let all_ready = started.elapsed();
        let rss_kib = resident_kib(pid, "VmRSS:");
        let peak_kib = resident_kib(pid, "VmHWM:");

        let requests = requests_at_rest_and_after_a_restart(operator, rest_seconds).await;
        let report = serde_json::json!({
            "tenants": tenants,
            "rooms": total_rooms,
            "seconds": {
                "tenants_created_baseline": tenants_created.as_secs_f64(),
                "tenants_ready": tenants_ready.as_secs_f64(),
                "rooms_created_baseline": rooms_created.as_secs_f64(),
                "rooms_ready": rooms_ready.as_secs_f64(),
                "all_ready": all_ready.as_secs_f64(),
            },
            "ready_vs_create": {
                "tenants": tenants_ready.as_secs_f64() / tenants_created.as_secs_f64(),
                "rooms": rooms_ready.as_secs_f64() / rooms_created.as_secs_f64(),
            },
            "operator_rss_mib": {
                "idle": idle_kib as f64 / 1024.0,
                "all_ready": rss_kib as f64 / 1024.0,
                "peak": peak_kib as f64 / 1024.0,
            },
            "api_requests_per_minute": requests,
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    });
}
