//! A TURN server beside standalone mode: Debian's coturn (`turnserver`), started as a child
//! process when asked (`treffpunkt standalone --turn`), so that participants whose network lets
//! only HTTPS out still get media, relayed over TLS on port 443.
//!
//! It listens on the announced address with the same certificate as the web server, takes only
//! TLS (no plain UDP or TCP TURN), relays to the media node's address and to no other, and
//! checks the time-limited credentials of a shared secret
//! that is made new at every start and handed to the gateway ([`crate::gateway::Turn`]); the
//! secret is written only to coturn's configuration file, which only the owner may read, never
//! to a command line. coturn logs nothing (its log would hold participants' addresses); to see
//! why it does not start, run `turnserver -c <that file>` by hand. It is stopped with standalone
//! mode, and the kernel stops it should standalone mode be killed (`setpriv --pdeathsig`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use treffpunkt_proto::random;

use crate::gateway::{TURN_CREDENTIAL_LIFETIME, Turn};

/// The TURN server's program.
pub const PROGRAM: &str = "turnserver";

/// What coturn is started with.
#[derive(Debug, Clone)]
pub struct CoturnConfig {
    /// Where it listens (and relays from): the announced address and the port.
    pub listen: SocketAddr,
    /// The certificate (chain) and key files of the web server.
    pub cert: PathBuf,
    /// The key of `cert`.
    pub key: PathBuf,
    /// Where its configuration and its small database go.
    pub dir: PathBuf,
}

/// A running coturn; stopped when dropped.
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    turn: Turn,
}

impl Coturn {
    /// Starts coturn with `config` and a new secret; fails when it cannot be started or exits
    /// at once (a port already taken, a port below 1024 without the right to bind it).
    pub fn start(config: &CoturnConfig) -> anyhow::Result<Self> {
        let ip = config.listen.ip();
        if ip.is_loopback() || ip.is_unspecified() {
            anyhow::bail!(
                "--turn needs --announce-ip with the machine's address in the network (not {ip})"
            );
        }
        let secret = random::hex(32);
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("creating {}", config.dir.display()))?;
        let file = config.dir.join("turnserver.conf");
        crate::self_signed::write_private(&file, &configuration(config, &secret))?;
        let mut child = command()
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {PROGRAM} (Debian's package coturn; is it installed?)")
            })?;
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{PROGRAM} exited at once ({status}); run `{PROGRAM} -c {}` to see why",
                file.display()
            );
        }
        let url = turns_url(config.listen);
        let turn = Turn::new(vec![url], secret.as_bytes(), TURN_CREDENTIAL_LIFETIME)
            .map_err(|error| anyhow::anyhow!(error))?;
        Ok(Self { child, turn })
    }

    /// The gateway's side: the server's URL and the secret.
    pub fn turn(&self) -> Turn {
        self.turn.clone()
    }

    /// Whether coturn still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `turnserver`, under `setpriv --pdeathsig KILL` where util-linux has it, so that it ends
/// with this process even when this process is killed outright and cannot stop it.
fn command() -> Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|path| Path::new(path).exists());
    match setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", PROGRAM]);
            command
        }
        None => Command::new(PROGRAM),
    }
}

/// `turns:` for `listen`, TCP.
fn turns_url(listen: SocketAddr) -> String {
    match listen.ip() {
        IpAddr::V4(ip) => format!("turns:{ip}:{}?transport=tcp", listen.port()),
        IpAddr::V6(ip) => format!("turns:[{ip}]:{}?transport=tcp", listen.port()),
    }
}

fn configuration(config: &CoturnConfig, secret: &str) -> String {
    let ip = config.listen.ip();
    let path = |path: &Path| path.display().to_string();
    [
        format!("listening-ip={ip}"),
        format!("relay-ip={ip}"),
        format!("tls-listening-port={}", config.listen.port()),
        "no-udp".into(),
        "no-tcp".into(),
        "no-dtls".into(),
        format!("cert={}", path(&config.cert)),
        format!("pkey={}", path(&config.key)),
        "use-auth-secret".into(),
        format!("static-auth-secret={secret}"),
        "realm=treffpunkt".into(),
        "fingerprint".into(),
        "no-multicast-peers".into(),
        // It relays UDP to the media node and nowhere else: no TCP relays (RFC 6062), which
        // media needs none of and which would reach the machine's other TCP ports.
        "no-tcp-relay".into(),
        format!("allowed-peer-ip={ip}"),
        "denied-peer-ip=0.0.0.0-255.255.255.255".into(),
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into(),
        "no-cli".into(),
        "log-file=/dev/null".into(),
        "no-stdout-log".into(),
        format!("pidfile={}", path(&config.dir.join("turnserver.pid"))),
        format!("userdb={}", path(&config.dir.join("turndb"))),
    ]
    .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_takes_only_tls_with_the_shared_secret_on_the_announced_address() {
        let config = CoturnConfig {
            listen: "192.168.1.10:443".parse().unwrap(),
            cert: "/state/cert.pem".into(),
            key: "/state/key.pem".into(),
            dir: "/state/turn".into(),
        };
        let text = configuration(&config, "s3cret");
        for line in [
            "listening-ip=192.168.1.10",
            "relay-ip=192.168.1.10",
            "tls-listening-port=443",
            "no-udp",
            "no-tcp",
            "use-auth-secret",
            "static-auth-secret=s3cret",
            "cert=/state/cert.pem",
            "log-file=/dev/null",
            "allowed-peer-ip=192.168.1.10",
            "denied-peer-ip=0.0.0.0-255.255.255.255",
            "no-tcp-relay",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(
            turns_url(config.listen),
            "turns:192.168.1.10:443?transport=tcp"
        );
        assert_eq!(
            turns_url("[fd00::1]:5349".parse().unwrap()),
            "turns:[fd00::1]:5349?transport=tcp"
        );
    }

    #[test]
    fn a_loopback_address_is_refused() {
        let config = CoturnConfig {
            listen: "127.0.0.1:443".parse().unwrap(),
            cert: "c".into(),
            key: "k".into(),
            dir: std::env::temp_dir(),
        };
        let error = Coturn::start(&config).unwrap_err().to_string();
        assert!(error.contains("--announce-ip"), "{error}");
    }
}
