//! The limits as command-line flags with environment variables, the same for
//! `treffpunkt standalone` and `treffpunkt operator`.

use std::time::Duration;

use super::address::{ClientAddressHeader, IpNet, TrustedProxies};
use super::limits::{DEFAULT_LIMITS, Limits};

/// The gateway's limits on what clients may open and how long they may take.
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    /// Open TCP connections to the gateway (and to the admin endpoint, each on its own),
    /// WebSockets included; more are closed at once.
    #[arg(
        long,
        env = "TREFFPUNKT_MAX_CONNECTIONS",
        default_value_t = DEFAULT_LIMITS.max_connections as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Open TCP connections from one peer address (an IPv6 /64); trusted proxies count only
    /// in the total.
    #[arg(
        long,
        env = "TREFFPUNKT_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = DEFAULT_LIMITS.max_connections_per_address as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections_per_address: u32,
    /// Open signalling WebSockets in total; more are refused with `server-busy`.
    #[arg(
        long,
        env = "TREFFPUNKT_MAX_WEBSOCKETS",
        default_value_t = DEFAULT_LIMITS.max_websockets as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_websockets: u32,
    /// Open signalling WebSockets per client address; more are refused with
    /// `too-many-connections`.
    #[arg(
        long,
        env = "TREFFPUNKT_MAX_WEBSOCKETS_PER_ADDRESS",
        default_value_t = DEFAULT_LIMITS.max_websockets_per_address as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_websockets_per_address: u32,
    /// Joins per client address per minute; more are refused with `too-many-joins`.
    #[arg(
        long,
        env = "TREFFPUNKT_MAX_JOINS_PER_MINUTE",
        default_value_t = DEFAULT_LIMITS.joins_per_minute,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_joins_per_minute: u32,
    /// Wrong passwords per client address and room per ten minutes; more are refused with
    /// `too-many-attempts`.
    #[arg(
        long,
        env = "TREFFPUNKT_MAX_WRONG_PASSWORDS",
        default_value_t = DEFAULT_LIMITS.wrong_passwords,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_wrong_passwords: u32,
    /// Seconds a signalling WebSocket may stay open without joining (`join-timeout`).
    #[arg(
        long,
        env = "TREFFPUNKT_JOIN_TIMEOUT",
        default_value_t = DEFAULT_LIMITS.join_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub join_timeout: u64,
    /// Seconds a client may take to send a request's headers, from connecting or from its
    /// previous response (so also how long a keep-alive connection may wait idle).
    #[arg(
        long,
        env = "TREFFPUNKT_HEADER_TIMEOUT",
        default_value_t = DEFAULT_LIMITS.header_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub header_timeout: u64,
    /// Seconds without a byte in either direction after which a connection that is not a
    /// WebSocket is closed.
    #[arg(
        long,
        env = "TREFFPUNKT_IDLE_TIMEOUT",
        default_value_t = DEFAULT_LIMITS.idle_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub idle_timeout: u64,
    /// Proxies (addresses or CIDR networks, comma-separated) whose header names the client;
    /// from anyone else the header is ignored. None by default.
    #[arg(long, env = "TREFFPUNKT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// The header a trusted proxy names the client in.
    #[arg(
        long,
        env = "TREFFPUNKT_CLIENT_ADDRESS_HEADER",
        value_enum,
        default_value_t = ClientAddressHeader::XForwardedFor
    )]
    pub client_address_header: ClientAddressHeader,
    /// Seconds a new ad-hoc room may stay with nobody in it before it is removed.
    #[arg(
        long,
        env = "TREFFPUNKT_UNJOINED_ROOM_TTL",
        default_value_t = DEFAULT_LIMITS.unjoined_room_ttl.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub unjoined_room_ttl: u64,
}

impl LimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections as usize,
            max_connections_per_address: self.max_connections_per_address as usize,
            max_websockets: self.max_websockets as usize,
            max_websockets_per_address: self.max_websockets_per_address as usize,
            joins_per_minute: self.max_joins_per_minute,
            wrong_passwords: self.max_wrong_passwords,
            join_timeout: Duration::from_secs(self.join_timeout),
            header_timeout: Duration::from_secs(self.header_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            trusted_proxies: TrustedProxies(self.trusted_proxies.clone()),
            client_address_header: self.client_address_header,
            unjoined_room_ttl: Duration::from_secs(self.unjoined_room_ttl),
            ticket_refresh: DEFAULT_LIMITS.ticket_refresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn without_flags_the_defaults_apply() {
        let parsed = Command::try_parse_from(["treffpunkt"]).unwrap();
        assert_eq!(parsed.limits.limits(), Limits::default());
    }

    #[test]
    fn flags_set_the_limits() {
        let parsed = Command::try_parse_from([
            "treffpunkt",
            "--max-websockets-per-address",
            "5",
            "--join-timeout",
            "12",
            "--trusted-proxies",
            "10.0.0.0/8,fd00::/8",
            "--client-address-header",
            "forwarded",
        ])
        .unwrap();
        let limits = parsed.limits.limits();
        assert_eq!(limits.max_websockets_per_address, 5);
        assert_eq!(limits.join_timeout, Duration::from_secs(12));
        assert_eq!(limits.trusted_proxies.0.len(), 2);
        assert_eq!(limits.client_address_header, ClientAddressHeader::Forwarded);
        assert!(Command::try_parse_from(["treffpunkt", "--max-connections", "0"]).is_err());
        assert!(Command::try_parse_from(["treffpunkt", "--trusted-proxies", "nonsense"]).is_err());
    }
}

/// The platform's TURN servers, the same flags for `treffpunkt standalone` and `treffpunkt
/// operator`.
#[derive(Clone, Debug, clap::Args)]
pub struct TurnArgs {
    /// A TURN server participants may relay their media through, e.g.
    /// `turns:turn.example.org:443?transport=tcp` (repeat, or separate with commas); it must
    /// share the secret of TREFFPUNKT_TURN_SECRET or --turn-secret-file (coturn:
    /// `use-auth-secret`, `static-auth-secret`).
    #[arg(long = "turn-url", env = "TREFFPUNKT_TURN_URLS", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// A file that holds the TURN secret; without it, the secret is read from the environment
    /// variable TREFFPUNKT_TURN_SECRET (never a flag: the command line is visible to every
    /// user of the machine).
    #[arg(long = "turn-secret-file", env = "TREFFPUNKT_TURN_SECRET_FILE")]
    pub secret_file: Option<std::path::PathBuf>,
}

/// The environment variable that may hold the TURN secret.
pub const TURN_SECRET_VARIABLE: &str = "TREFFPUNKT_TURN_SECRET";

impl TurnArgs {
    /// The TURN servers, or `None` when no URL is given; an error when URLs come without a
    /// secret or a secret without URLs.
    pub fn turn(&self) -> Result<Option<super::Turn>, String> {
        let secret = match &self.secret_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|error| format!("reading {}: {error}", file.display()))?,
            ),
            None => std::env::var(TURN_SECRET_VARIABLE).ok(),
        };
        let secret = secret
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        match (self.urls.is_empty(), secret) {
            (true, None) => Ok(None),
            (true, Some(_)) => Err("a TURN secret but no --turn-url".to_owned()),
            (false, None) => Err(format!(
                "--turn-url needs the TURN secret: set {TURN_SECRET_VARIABLE} or --turn-secret-file"
            )),
            (false, Some(secret)) => super::Turn::new(
                self.urls.clone(),
                secret.as_bytes(),
                super::TURN_CREDENTIAL_LIFETIME,
            )
            .map(Some),
        }
    }
}
