//! raft-rs's slog output as `tracing` events of this crate.
//!
//! raft-rs narrates every election of every group at slog's `Info`, with
//! its own source paths in every line: with thousands of partitions that
//! drowns what an operator needs. Here its records become `tracing`
//! events under the target `fjord_replication::raft`, one level lower
//! than raft-rs gave them (its `Info` is our `debug`, its `Debug` our
//! `trace`; warnings and errors stay warnings), with the message and its
//! key-values on one line and no source location. The group driver logs
//! the events an operator cares about (role changes) at `info` itself.

use std::fmt::Write as _;

use slog::{Drain, Level, OwnedKVList, Record, Serializer, KV};

/// A slog drain that forwards to `tracing`; see the module docs.
pub(crate) struct RaftLogDrain;

impl Drain for RaftLogDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error | Level::Warning => tracing::enabled!(tracing::Level::WARN),
            Level::Info => tracing::enabled!(tracing::Level::DEBUG),
            Level::Debug | Level::Trace => tracing::enabled!(tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut line = Line(String::new());
        let _ = write!(line.0, "{}", record.msg());
        let _ = record.kv().serialize(record, &mut line);
        let _ = values.serialize(record, &mut line);
        let message = line.0;
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "fjord_replication::raft", "{message}"),
            Level::Warning => tracing::warn!(target: "fjord_replication::raft", "{message}"),
            Level::Info => tracing::debug!(target: "fjord_replication::raft", "{message}"),
            Level::Debug | Level::Trace => tracing::trace!(target: "fjord_replication::raft", "{message}"),
        }
        Ok(())
    }
}

/// Collects key-values as ` key=value` after the message.
struct Line(String);

impl Serializer for Line {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_message_and_values_on_one_line() {
        let mut line = Line("became leader".into());
        line.emit_arguments("term", &format_args!("{}", 7)).unwrap();
        line.emit_arguments("group", &format_args!("{}", 12)).unwrap();
        assert_eq!(line.0, "became leader term=7 group=12");
    }
}
