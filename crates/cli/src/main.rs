//! `fjord`: run a broker, manage topics, publish and tail records.
//!
//! The binary parses flags ([`args`]), sets up logging to stderr, and hands
//! the command to [`cmd`]. Errors from anywhere end here: one line
//! `error: ...` on stderr (the cause chain joined with ": ") and exit code 1.
//! Usage errors exit with 2 from clap. A closed stdout (`fjord tail | head`)
//! ends the program quietly with 0.

mod args;
mod cmd;
mod config_file;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: the broker and client allocate and
/// free buffers of hundreds of KiB per request, which glibc serves with
/// fresh mmaps (page faults and zeroing on every request); mimalloc keeps
/// and reuses them. Profiles of produce and consume showed 10-15% of the
/// broker's time in those faults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A broker's config file first: its values reach clap as defaults
    // under the environment and the flags (see `config_file`).
    let applied = match config_file::apply() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let matches = args::Cli::command().get_matches();
    let cli = args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if matches!(&cli.command, args::Command::Broker(b) if b.print_config) {
        print!("{}", config_file::render(&matches, applied.as_ref()));
        return ExitCode::SUCCESS;
    }
    init_logging(&cli.log_level, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so stdout stays clean for data. `RUST_LOG`, when set,
/// takes precedence over `--log-level`. raft-rs's own narration arrives
/// one level down (its `info` is `debug` here, see
/// `fjord_replication`'s `raft_log`), so the default level shows one line
/// per event an operator cares about.
fn init_logging(level: &str, format: args::LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        args::LogFormat::Text => builder.with_ansi(ansi).init(),
        args::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The error and its causes on one line, joined with ": ".
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn errors_print_as_one_line_chain() {
        let e =
            Err::<(), _>(std::io::Error::other("refused\nsecond line")).context("connecting").unwrap_err();
        assert_eq!(one_line(&e), "connecting: refused second line");
        assert!(!is_broken_pipe(&e));
        let pipe =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&pipe));
    }
}
