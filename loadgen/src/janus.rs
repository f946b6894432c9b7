//! Janus, the SFU a city would otherwise install (its VideoRoom plugin, from the distribution's
//! package), as the benchmark's comparison: started as a process of its own with a
//! configuration made for the run, so that its CPU time is read from `/proc` as the media
//! node's is, and joined by the same synthetic participants
//! ([`treffpunkt_client::janus`]).
//!
//! Janus does not gather candidates on loopback interfaces, so it cannot run where the rest of
//! the benchmark runs. It is given one address of another interface to gather on
//! (`--janus-ip`); `scripts/bench-janus` makes one in a network namespace of its own, so
//! that no packet leaves the machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use treffpunkt_client::loopback::free_port;

use crate::processes::Process;

/// Where Debian's package puts the plugins and transports.
pub const DEFAULT_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// The room the benchmark uses.
pub const ROOM: u64 = 1234;

/// How Janus runs.
#[derive(Clone, Debug)]
pub struct JanusConfig {
    /// The `janus` binary.
    pub binary: PathBuf,
    /// The folder with its `plugins/` and `transports/`.
    pub library: PathBuf,
    /// Its event loops (`general.event_loops`): 0 for one thread per peer connection, Janus's
    /// default.
    pub event_loops: u32,
    /// The address it gathers candidates on.
    pub ip: IpAddr,
}

/// A running Janus and the folder of its configuration, removed when dropped.
pub struct Janus {
    /// Its HTTP API.
    pub http: SocketAddr,
    /// The address it and its participants use for media.
    pub ip: IpAddr,
    /// The process.
    pub process: Process,
    folder: PathBuf,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Its version, as `janus --version` prints it.
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|line| line.strip_prefix("Janus version:").map(str::trim))
                .and_then(|v| v.split(['(', ')']).nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The configuration files: the core with only VideoRoom and the HTTP transport (each in a
/// folder of its own holding one link), no event handlers or loggers, IPv4 on `ip` only; the
/// HTTP API on loopback without its admin API; VideoRoom without preconfigured rooms.
fn write_configuration(folder: &Path, config: &JanusConfig, port: u16) -> anyhow::Result<()> {
    let link = |kind: &str, file: &str| -> anyhow::Result<()> {
        let dir = folder.join(kind);
        std::fs::create_dir_all(&dir)?;
        let target = config.library.join(kind).join(file);
        anyhow::ensure!(
            target.exists(),
            "no {} (install Janus, or pass --janus-library)",
            target.display()
        );
        std::os::unix::fs::symlink(&target, dir.join(file))?;
        Ok(())
    };
    link("plugins", "libjanus_videoroom.so")?;
    link("transports", "libjanus_http.so")?;
    std::fs::create_dir_all(folder.join("none"))?;
    let dir = folder.display();
    let core = format!(
        "general: {{\n  configs_folder = \"{dir}\"\n  plugins_folder = \"{dir}/plugins\"\n  \
         transports_folder = \"{dir}/transports\"\n  events_folder = \"{dir}/none\"\n  \
         loggers_folder = \"{dir}/none\"\n  debug_level = 3\n  event_loops = {}\n  \
         session_timeout = 60\n}}\nmedia: {{\n  ipv6 = false\n}}\nnat: {{\n  \
         ice_enforce_list = \"{}\"\n}}\n",
        config.event_loops, config.ip
    );
    std::fs::write(folder.join("janus.jcfg"), core)?;
    let http = format!(
        "general: {{\n  json = \"compact\"\n  base_path = \"/janus\"\n  http = true\n  \
         port = {port}\n  ip = \"127.0.0.1\"\n  https = false\n}}\nadmin: {{\n  \
         admin_http = false\n  admin_https = false\n}}\n"
    );
    std::fs::write(folder.join("janus.transport.http.jcfg"), http)?;
    std::fs::write(
        folder.join("janus.plugin.videoroom.jcfg"),
        "general: {\n  events = false\n}\n",
    )?;
    Ok(())
}

/// Starts Janus and returns once its HTTP API answers and the benchmark's room exists.
pub async fn start(config: &JanusConfig) -> anyhow::Result<Janus> {
    let port = free_port();
    let folder = std::env::temp_dir().join(format!(
        "treffpunkt-bench-janus-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder)?;
    if let Err(error) = write_configuration(&folder, config, port) {
        let _ = std::fs::remove_dir_all(&folder);
        return Err(error);
    }
    let process = Process::new(
        Command::new(&config.binary)
            .arg("-C")
            .arg(folder.join("janus.jcfg"))
            .arg("-F")
            .arg(&folder)
            .args(["-o", "-d", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", config.binary.display()))?,
    );
    let janus = Janus {
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ip: config.ip,
        process,
        folder,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match treffpunkt_client::janus::create_room(janus.http, ROOM).await {
            Ok(()) => return Ok(janus),
            Err(error) if Instant::now() > deadline => {
                bail!("Janus did not come up within 20 s: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_loads_only_videoroom_and_http_and_gathers_on_one_address() {
        let folder =
            std::env::temp_dir().join(format!("treffpunkt-janus-test-{}", std::process::id()));
        let library = folder.join("library");
        for (kind, file) in [
            ("plugins", "libjanus_videoroom.so"),
            ("transports", "libjanus_http.so"),
        ] {
            std::fs::create_dir_all(library.join(kind)).unwrap();
            std::fs::write(library.join(kind).join(file), b"").unwrap();
        }
        let conf = folder.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let config = JanusConfig {
            binary: PathBuf::from("janus"),
            library: library.clone(),
            event_loops: 2,
            ip: "10.99.0.1".parse().unwrap(),
        };
        write_configuration(&conf, &config, 20_123).unwrap();
        let core = std::fs::read_to_string(conf.join("janus.jcfg")).unwrap();
        assert!(core.contains("event_loops = 2"), "{core}");
        assert!(core.contains("ice_enforce_list = \"10.99.0.1\""), "{core}");
        assert!(core.contains("ipv6 = false"), "{core}");
        let http = std::fs::read_to_string(conf.join("janus.transport.http.jcfg")).unwrap();
        assert!(
            http.contains("port = 20123") && http.contains("ip = \"127.0.0.1\""),
            "{http}"
        );
        assert!(http.contains("admin_http = false"), "{http}");
        let plugins: Vec<_> = std::fs::read_dir(conf.join("plugins")).unwrap().collect();
        assert_eq!(plugins.len(), 1, "only VideoRoom is loaded");

        let missing = JanusConfig {
            library: folder.join("nowhere"),
            ..config
        };
        let error = write_configuration(&folder.join("other"), &missing, 1).unwrap_err();
        assert!(error.to_string().contains("--janus-library"), "{error}");
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
