//! A network namespace joined to this host by a veth pair, and participants that live in it:
//! a line whose downlink a test can narrow.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;
use treffpunkt_client::{Joining, Participant};

/// Namespaces of these tests are called this, with the test process's id.
const PREFIX: &str = "tpsim-";

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The host's end of the veth pair of namespace `name`.
fn host_interface(pid: u32) -> String {
    format!("tps{pid}-h")
}

/// Removes what earlier runs of these tests left behind when they were killed: namespaces
/// whose process is gone.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["link", "del", &host_interface(pid)]);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A namespace with one veth pair: the host's end has `host_ip`, the namespace's end
/// `guest_ip`, in a /30 of 10.213.0.0/16 of this process's own. A token-bucket qdisc on
/// the host's end limits what the host sends into the namespace: the guest's downlink.
/// Dropping it removes both.
pub struct Line {
    name: String,
    host_if: String,
    /// This host's address on the line.
    pub host_ip: Ipv4Addr,
    /// The namespace's address on the line.
    pub guest_ip: Ipv4Addr,
}

impl Line {
    /// Makes the namespace and the veth pair, and brings them up.
    pub fn create() -> Result<Self, String> {
        remove_stale();
        let pid = std::process::id();
        let block = pid % 16_384;
        let (third, fourth) = ((block / 64) as u8, ((block % 64) * 4) as u8);
        let line = Self {
            name: format!("{PREFIX}{pid}"),
            host_if: host_interface(pid),
            host_ip: Ipv4Addr::new(10, 213, third, fourth + 1),
            guest_ip: Ipv4Addr::new(10, 213, third, fourth + 2),
        };
        // Dropped on failure, which removes what was made.
        let guest_if = format!("tps{pid}-g");
        let (host_ip, guest_ip) = (
            format!("{}/30", line.host_ip),
            format!("{}/30", line.guest_ip),
        );
        run("ip", &["netns", "add", &line.name])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &line.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &guest_if,
                "netns",
                &line.name,
            ],
        )?;
        run("ip", &["addr", "add", &host_ip, "dev", &line.host_if])?;
        run("ip", &["link", "set", &line.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut full = vec!["-n", line.name.as_str()];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        inside(&["addr", "add", &guest_ip, "dev", &guest_if])?;
        inside(&["link", "set", &guest_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(line)
    }

    /// Limits the guest's downlink to `kbit` kbit/s, with a queue of 100 ms.
    pub fn limit(&self, kbit: u32) -> Result<(), String> {
        let rate = format!("{kbit}kbit");
        run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.host_if,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                "8kb",
                "latency",
                "100ms",
            ],
        )
    }

    /// Lifts the limit.
    pub fn unlimit(&self) -> Result<(), String> {
        run("tc", &["qdisc", "del", "dev", &self.host_if, "root"])
    }

    /// Runs `f` on a new thread that has joined the namespace: every socket it (and any
    /// thread it starts) opens lives there.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, String> {
        let namespace = File::open(format!("/var/run/netns/{}", self.name))
            .map_err(|error| format!("opening the namespace {}: {error}", self.name))?;
        Ok(std::thread::spawn(move || {
            // Network namespaces are per thread: this one joins it, the test's threads stay
            // outside.
            setns(&namespace, CloneFlags::CLONE_NEWNET)
                .expect("the thread joins the test's network namespace");
            f()
        }))
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // Removing the host's end removes the pair; the namespace goes once nothing in it
        // is open.
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A participant whose media and signalling sockets live in a [`Line`]'s namespace: it runs
/// on a runtime of its own on a thread inside; the test reads it from outside.
pub struct Guest {
    /// The participant (its statistics are shared with the thread inside); taken when it
    /// leaves.
    participant: Option<Participant>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Guest {
    /// Joins `url` as `name` from inside the namespace.
    pub async fn join(
        line: &Line,
        url: &str,
        name: &str,
        joining: Joining,
    ) -> Result<Self, String> {
        let (joined_tx, joined) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let (url, name) = (url.to_owned(), name.to_owned());
        let thread = line.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime inside the namespace");
            runtime.block_on(async move {
                let result = Participant::join_as(&url, &name, joining).await;
                let _ = joined_tx.send(result);
                // The participant's tasks run on this runtime until the test is done.
                let _ = stopped.await;
            });
        })?;
        let participant = joined
            .await
            .map_err(|_| "the thread inside the namespace ended".to_owned())?
            .map_err(|error| error.to_string())?;
        Ok(Self {
            participant: Some(participant),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The participant.
    pub fn participant(&self) -> &Participant {
        self.participant
            .as_ref()
            .expect("a guest has its participant until it leaves")
    }

    /// Leaves the room and stops the thread inside.
    pub async fn leave(mut self) {
        if let Some(participant) = self.participant.take() {
            participant.leave().await;
        }
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
