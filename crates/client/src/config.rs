//! Client settings and the parsing of a Kafka-style bootstrap list.
//!
//! Every timeout and retry bound is a named constant here so a caller can
//! see the worst case of a call: at most [`RETRIES_MAX_DEFAULT`] retries,
//! each attempt bounded by `request_timeout`, and the whole call bounded by
//! `retry_deadline`.

use std::time::Duration;

use crate::{Error, Result};

/// Default per-attempt timeout of a request (`request_timeout`).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default time to establish a TCP + HTTP/2 connection (`connect_timeout`).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// First retry backoff; doubled after each retry up to [`RETRY_BACKOFF_MAX`].
pub const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Largest retry backoff (Kafka's `retry.backoff.max.ms` default): 50 ms
/// doubled five times is 1.6 s, so the sixth and later retries wait this
/// long. It bounds how long a client idles after a new leader is already
/// serving: with 2 s, a failover that took 1.2 s was seen after 3.2 s.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default number of retries after the first attempt. With the backoff above
/// the waits add up to about 0.05+0.1+0.2+0.4+0.8+1×8 ≈ 9.5 s, enough to
/// ride out a leader election.
pub const RETRIES_MAX_DEFAULT: u32 = 13;
/// Default bound on one call including all its retries (`retry_deadline`).
pub const RETRY_DEADLINE_DEFAULT: Duration = Duration::from_secs(60);
/// Default most age of cached metadata (`metadata_max_age`), Kafka's
/// `metadata.max.age.ms`: older metadata is refreshed in the background
/// on the next send, so a producer's partitioner sees partitions added to
/// a topic within this long even when nothing fails.
pub const METADATA_MAX_AGE_DEFAULT: Duration = Duration::from_secs(300);
/// Most addresses accepted in a bootstrap list.
pub const BOOTSTRAP_ADDRESSES_MAX: usize = 64;
const _: () = assert!(RETRY_BACKOFF_INITIAL.as_millis() < RETRY_BACKOFF_MAX.as_millis());

/// How a [`crate::Client`] finds and talks to brokers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Brokers tried, in order, to learn the cluster (`host:port`). At least one.
    pub bootstrap: Vec<String>,
    /// Per-attempt timeout of every request; long-poll fetches add their wait
    /// to it. Default [`REQUEST_TIMEOUT_DEFAULT`] (30 s).
    pub request_timeout: Duration,
    /// Timeout to connect to a broker. Default [`CONNECT_TIMEOUT_DEFAULT`] (5 s).
    pub connect_timeout: Duration,
    /// First retry backoff. Default [`RETRY_BACKOFF_INITIAL`] (50 ms).
    pub retry_backoff_initial: Duration,
    /// Largest retry backoff. Default [`RETRY_BACKOFF_MAX`] (1 s).
    pub retry_backoff_max: Duration,
    /// Retries after the first attempt. Default [`RETRIES_MAX_DEFAULT`] (10).
    pub retries_max: u32,
    /// Bound on one call including retries. Default [`RETRY_DEADLINE_DEFAULT`] (60 s).
    pub retry_deadline: Duration,
    /// Cached metadata older than this is refreshed (in the background) on
    /// the next send. Default [`METADATA_MAX_AGE_DEFAULT`] (5 min).
    pub metadata_max_age: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: vec!["127.0.0.1:9092".to_string()],
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            retry_backoff_initial: RETRY_BACKOFF_INITIAL,
            retry_backoff_max: RETRY_BACKOFF_MAX,
            retries_max: RETRIES_MAX_DEFAULT,
            retry_deadline: RETRY_DEADLINE_DEFAULT,
            metadata_max_age: METADATA_MAX_AGE_DEFAULT,
        }
    }
}

impl ClientConfig {
    /// Defaults with the bootstrap list parsed from `host:port,host:port`.
    ///
    /// # Errors
    /// [`Error::Config`] if the list is malformed; see [`parse_bootstrap`].
    pub fn from_bootstrap(list: &str) -> Result<Self> {
        Ok(ClientConfig { bootstrap: parse_bootstrap(list)?, ..Default::default() })
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config { message });
        if self.bootstrap.is_empty() {
            return bad("bootstrap: at least one broker address is required".into());
        }
        if self.bootstrap.len() > BOOTSTRAP_ADDRESSES_MAX {
            return bad(format!("bootstrap: more than {BOOTSTRAP_ADDRESSES_MAX} addresses"));
        }
        for addr in &self.bootstrap {
            check_address(addr)?;
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above 0".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be above 0".into());
        }
        if self.metadata_max_age.is_zero() {
            return bad("metadata_max_age must be above 0".into());
        }
        if self.retry_backoff_initial > self.retry_backoff_max {
            return bad("retry_backoff_initial must not exceed retry_backoff_max".into());
        }
        Ok(())
    }
}

/// Parses a bootstrap list like Kafka's `bootstrap.servers`:
/// comma-separated `host:port`, whitespace around entries ignored, empty
/// entries skipped. IPv6 hosts are written in brackets: `[::1]:9092`.
///
/// # Errors
/// [`Error::Config`] if no address is given, an entry has no port or a port
/// that is not a number in 1..=65535, or there are more than
/// [`BOOTSTRAP_ADDRESSES_MAX`] entries.
pub fn parse_bootstrap(list: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if addrs.is_empty() {
        return Err(Error::Config { message: format!("bootstrap list {list:?} holds no address") });
    }
    if addrs.len() > BOOTSTRAP_ADDRESSES_MAX {
        return Err(Error::Config {
            message: format!(
                "bootstrap list has {} addresses, the limit is {BOOTSTRAP_ADDRESSES_MAX}",
                addrs.len()
            ),
        });
    }
    for a in &addrs {
        check_address(a)?;
    }
    Ok(addrs)
}

fn check_address(addr: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Config { message: format!("broker address {addr:?}: {why}") });
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("expected host:port");
    };
    if host.is_empty() {
        return bad("empty host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("write IPv6 hosts in brackets, like [::1]:9092");
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return bad("host contains whitespace or '/'");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => bad("port must be a number in 1..=65535"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists() {
        let ok: &[(&str, &[&str])] = &[
            ("127.0.0.1:9092", &["127.0.0.1:9092"]),
            ("a:1,b:2", &["a:1", "b:2"]),
            (" a:1 , b:2 ,", &["a:1", "b:2"]),
            ("[::1]:9092,host.example:65535", &["[::1]:9092", "host.example:65535"]),
        ];
        for (input, want) in ok {
            assert_eq!(parse_bootstrap(input).unwrap(), *want, "input {input:?}");
        }
        for bad in ["", " , ", "localhost", "a:0", "a:70000", "a:x", ":9092", "::1:9092", "a b:1"] {
            let err = parse_bootstrap(bad).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "input {bad:?} gave {err:?}");
        }
    }

    #[test]
    fn default_config_is_valid_and_named_limits_apply() {
        let c = ClientConfig::default();
        c.validate().unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        let c = ClientConfig { request_timeout: Duration::ZERO, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("request_timeout"));
    }
}
