//! `layer2-relay`: the relay node. `serve` (the default) runs the relay; `import`,
//! `export` and `stats` work on the node's stores (stop the node first when its L2 is
//! embedded: redb allows one process per file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use layer2_relay::cli::rulings::{self, Subject, Verb};
use layer2_relay::config::{Config, Options};
use layer2_relay::relay::{self, AppState};
use layer2_relay::{Node, cli};
use tracing_subscriber::EnvFilter;

/// mimalloc, not glibc's allocator. glibc gives each thread that allocates while
/// others do an arena of its own and keeps what is freed in each: memory freed after a
/// burst of reads stayed resident (401 against 128 MiB after a bench over 1,000,000
/// events, until the node limited the arenas to its core count by starting itself again
/// with `MALLOC_ARENA_MAX` set). mimalloc's thread-local free lists also cost less per
/// allocation, and a node allocates for every message, frame and decoded event: on
/// 2 cores, 61-63 against 70-72 us of CPU per REQ and 6,386 against 5,368 closed-loop
/// events/s over 1,000,000 events, for 252 against 221 MiB of RSS there (README,
/// "Closed-loop clients and fan-out").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A nostr relay node with a two-tier event store: a bounded redb cache (L1) in front
/// of a shared PostgreSQL or an embedded redb (L2).
#[derive(Debug, Parser)]
#[command(name = "layer2-relay", version)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the relay (the default).
    Serve,
    /// Import events, one JSON per line, from FILE or stdin; each is verified.
    Import {
        /// JSON-lines file [default: stdin].
        file: Option<PathBuf>,
    },
    /// Export events, one JSON per line, newest first.
    Export {
        /// A NIP-01 filter, such as '{"kinds":[0]}' [default: every event].
        #[arg(long)]
        filter: Option<String>,
        /// Output file [default: stdout].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print store statistics as JSON.
    Stats,
    /// Ban an author or an event (NIP-86 banpubkey/banevent): refused from now on, and
    /// what is stored removed from L2 and every node's L1.
    Ban {
        what: Subject,
        value: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban.
    Unban { what: Subject, value: String },
    /// Allow an author or a kind: once any is allowed, only allowed ones are accepted.
    Allow {
        what: Subject,
        value: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take an author or a kind off the allow-list.
    Unallow { what: Subject, value: String },
    /// Refuse a kind.
    Disallow {
        what: Subject,
        value: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print every ruling as JSON.
    Rulings,
    /// Delete every stored event a NIP-01 filter matches, from L2 and every node's L1
    /// (no tombstone: they may be sent again; `ban` keeps an author out). Prints a JSON
    /// summary. With PostgreSQL nodes may keep running; stop an embedded node first.
    Delete {
        /// A NIP-01 filter without `limit`, such as '{"authors":["<hex>"],"kinds":[1]}'.
        #[arg(long)]
        filter: String,
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run one maintenance pass now (retention rules, NIP-40 expiry, log pruning) and
    /// print what it did; with PostgreSQL while nodes serve.
    Maintain,
    /// Check every store for inconsistencies (L1 and the embedded L2 with the node
    /// stopped; PostgreSQL while nodes run); exits non-zero on any finding.
    Check,
    /// Compact the node's redb files, giving freed pages back (stop the node first).
    Compact,
    /// Wipe this node's L1 (`--l1`: it warms again from L2), or every event of the
    /// cluster (`--all --yes-really`; refused while other sessions use the database
    /// unless `--force`). Rulings are kept.
    Nuke {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        l1: bool,
        #[arg(long, requires = "yes_really")]
        all: bool,
        /// Confirms `--all`.
        #[arg(long)]
        yes_really: bool,
        /// With `--all`: even while other sessions are connected.
        #[arg(long, requires = "all")]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = cli
        .options
        .resolve()
        .map_err(|e| anyhow::anyhow!(e).context("invalid configuration"))
        .and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(run(config, cli.command.unwrap_or(Command::Serve)))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer2-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    let ruling = match &command {
        Command::Ban {
            what,
            value,
            reason,
        } => Some((Verb::Ban, *what, value.as_str(), reason.as_str())),
        Command::Unban { what, value } => Some((Verb::Unban, *what, value.as_str(), "")),
        Command::Allow {
            what,
            value,
            reason,
        } => Some((Verb::Allow, *what, value.as_str(), reason.as_str())),
        Command::Unallow { what, value } => Some((Verb::Unallow, *what, value.as_str(), "")),
        Command::Disallow {
            what,
            value,
            reason,
        } => Some((Verb::Disallow, *what, value.as_str(), reason.as_str())),
        _ => None,
    };
    let print =
        |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    if let Some((verb, what, value, reason)) = ruling {
        let change = rulings::change(verb, what, value, reason)?;
        return rulings::rule(config, change).await.map(print);
    }
    if matches!(command, Command::Rulings) {
        return rulings::list(config).await.map(print);
    }
    match &command {
        Command::Check => {
            let (summary, problems) = cli::admin::check(&config).await?;
            print(summary);
            if problems > 0 {
                anyhow::bail!("check found {problems} problems");
            }
            return Ok(());
        }
        Command::Compact => return cli::admin::compact(&config).await.map(print),
        Command::Maintain => return cli::admin::maintain(config).await.map(print),
        Command::Nuke { l1, force, .. } => {
            let what = if *l1 {
                cli::admin::Nuke::L1
            } else {
                cli::admin::Nuke::All { force: *force }
            };
            return cli::admin::nuke(&config, what).await.map(print);
        }
        _ => {}
    }
    if let Command::Delete { filter, dry_run } = &command {
        let filter = cli::parse_filter(Some(filter))?;
        return cli::purge::delete(config, filter, *dry_run)
            .await
            .map(print);
    }
    let listen = config.listen;
    let node = Node::open(config).await?;
    let result = match command {
        Command::Serve => return serve(node, listen).await,
        Command::Import { file } => cli::import(&node, file.as_deref()).await.map(|s| {
            eprintln!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        }),
        Command::Export { filter, output } => export(&node, filter, output).await,
        Command::Stats => cli::stats(&node)
            .await
            .map(|v| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())),
        // Answered above, without opening the node.
        _ => Ok(()),
    };
    node.close().await;
    result
}

async fn export(
    node: &Node,
    filter: Option<String>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let filter = cli::parse_filter(filter.as_deref())?;
    let mut out: Box<dyn std::io::Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = cli::export(node, filter, &mut out).await?;
    eprintln!("exported {n} events");
    Ok(())
}

async fn serve(node: Node, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another relay running there?)"))?;
    let mode = if node.config.database_url.is_some() {
        "PostgreSQL L2 (cluster)"
    } else {
        "embedded L2"
    };
    tracing::info!(address = %listener.local_addr()?, data_dir = %node.config.data_dir.display(), mode, "serving ws://{}", listener.local_addr()?);
    if node.config.access.relay_urls.is_empty() {
        // NIP-42 and NIP-98 events name the relay they were made for. Checked against
        // the Host a client claims, another relay the victim also uses could pass one
        // of its users' AUTH events on here and be taken for them.
        tracing::warn!(
            "access.relay_urls is not set: AUTH (NIP-42) and NIP-86 calls are checked against              the Host header a client sends, which another relay could forge to replay its              users' AUTH events here; set relay_urls (--relay-urls) to this node's public URLs"
        );
    }
    let state = AppState::new(Arc::new(node));
    relay::run(listener, state.clone(), shutdown_signal()).await?;
    tracing::info!("connections closed; closing the stores");
    let node = state.node.clone();
    drop(state);
    match Arc::try_unwrap(node) {
        Ok(node) => node.close().await,
        Err(node) => node.tiered.shutdown(),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: no new connections; finishing in-flight events");
}
