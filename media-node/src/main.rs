//! The `treffpunkt-media-node` binary: one SFU process that attaches to the control plane.

use clap::Parser;
use treffpunkt_media_node::cli;

#[derive(Debug, Parser)]
#[command(version, about = "A Treffpunkt media node.")]
struct Command {
    #[command(flatten)]
    args: cli::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(cli::log_filter())
        .init();
    cli::run(Command::parse().args).await
}
