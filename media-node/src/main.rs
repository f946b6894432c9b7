//! The `treffpunkt-media-node` binary: one SFU process that attaches to the control plane.

use clap::Parser;
use treffpunkt_media_node::{Allocator, cli};

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

#[derive(Debug, Parser)]
#[command(version, about = "A Treffpunkt media node.")]
struct Command {
    #[command(flatten)]
    args: cli::Args,
}

fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let args = Command::parse().args;
    cli::runtime()?.block_on(cli::run(args))
}
