//! `fjord broker --config FILE`: broker settings from a TOML file, under
//! the environment and the flags.
//!
//! Each key is a broker flag's long name with `_` (and the global
//! `log_level`, `log_format`), so the file, `FJORD_<KEY>` and `--key`
//! name the same setting three ways; a flag beats the environment, which
//! beats the file, which beats the default. The layering is clap's own:
//! a file value is handed to clap as the setting's environment variable
//! when the environment does not set it, so every value is parsed and
//! checked by the same parser whatever its source, and `BrokerArgs`
//! (then `BrokerConfig::validate`) stays the one place settings are
//! defined. `--print-config` says where each effective value came from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, Parser};

use crate::args::{Cli, Command};

/// Largest config file read: settings are a few hundred bytes; this only
/// stops a wrong path (a log, a device) from being read whole.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Flags of `broker` that are not settings.
const NOT_SETTINGS: [&str; 3] = ["config", "print_config", "help"];
/// Global flags that are broker settings too.
const GLOBAL_SETTINGS: [&str; 2] = ["log_level", "log_format"];

/// The config file a broker was started with, and the keys it supplied.
#[derive(Debug)]
pub(crate) struct Applied {
    path: PathBuf,
    keys: BTreeSet<String>,
}

/// One setting: its key and the environment variable clap reads it from.
struct Setting {
    key: String,
    env: String,
    global: bool,
}

/// Every setting a file may hold, in the order `--help` lists them.
fn settings() -> Vec<Setting> {
    let cli = Cli::command();
    let globals = cli
        .get_arguments()
        .filter(|a| GLOBAL_SETTINGS.contains(&a.get_id().as_str()))
        .map(|a| (a, true))
        .collect::<Vec<_>>();
    let broker = cli.find_subcommand("broker").expect("the broker subcommand exists");
    broker
        .get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .map(|a| (a, false))
        .chain(globals)
        .map(|(a, global)| Setting {
            key: a.get_id().to_string(),
            env: a
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_else(|| panic!("broker setting {} has no environment variable", a.get_id())),
            global,
        })
        .collect()
}

/// If the command line is `fjord broker --config FILE ...` (or
/// `FJORD_CONFIG` names a file), reads the file and hands each of its
/// values to clap as its setting's environment variable, unless the
/// environment already sets it. Call before the arguments are parsed for
/// real, on the main thread, before any other thread starts.
///
/// # Errors
/// An unreadable file, bad TOML, an unknown key or a value of a kind no
/// flag takes, each naming the file (and the key).
pub(crate) fn apply() -> anyhow::Result<Option<Applied>> {
    // A command line clap refuses is reported by the real parse.
    let Ok(cli) = Cli::try_parse() else { return Ok(None) };
    let Command::Broker(args) = cli.command else { return Ok(None) };
    let Some(path) = args.config else { return Ok(None) };
    let values = read(&path)?;
    let settings = settings();
    let mut keys = BTreeSet::new();
    for (key, value) in values {
        let Some(setting) = settings.iter().find(|s| s.key == key) else {
            let known: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
            bail!("{}: unknown key {key:?}; the keys are {}", path.display(), known.join(", "));
        };
        if std::env::var_os(&setting.env).is_none() {
            // SAFETY: called from `main` before the runtime or any other
            // thread exists, so nothing reads the environment concurrently.
            std::env::set_var(&setting.env, value);
            keys.insert(key);
        }
    }
    Ok(Some(Applied { path, keys }))
}

/// The file's settings as the strings a flag would be given.
fn read(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        bail!(
            "{}: {} bytes is more than a config file may be ({CONFIG_FILE_BYTES_MAX})",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e| anyhow!("{}: invalid TOML: {e}", path.display()))?;
    table
        .into_iter()
        .map(|(key, value)| {
            let s = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // `peers = { 1 = "host:9092", 2 = "host:9093" }`
                toml::Value::Table(t) if key == "peers" => t
                    .into_iter()
                    .map(|(id, addr)| match addr {
                        toml::Value::String(a) => Ok(format!("{id}={a}")),
                        other => Err(anyhow!(
                            "{}: peers.{id} must be a \"host:port\" string, got {other}",
                            path.display()
                        )),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .join(","),
                other => {
                    bail!("{}: key {key:?} must be a string, integer or boolean, got {other}", path.display())
                }
            };
            Ok((key, s))
        })
        .collect()
}

/// The effective settings, one `key = "value"  # source` line each.
pub(crate) fn render(matches: &ArgMatches, applied: Option<&Applied>) -> String {
    let broker = matches.subcommand_matches("broker").expect("called for the broker command");
    let mut out = String::new();
    for s in settings() {
        let m = if s.global { matches } else { broker };
        let value = m
            .get_raw(&s.key)
            .map(|v| v.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","));
        let source = match m.value_source(&s.key) {
            Some(ValueSource::CommandLine) => format!("flag --{}", s.key.replace('_', "-")),
            Some(ValueSource::EnvVariable) => match applied {
                Some(a) if a.keys.contains(&s.key) => format!("file {}", a.path.display()),
                _ => format!("env {}", s.env),
            },
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => "unset".to_owned(),
        };
        let shown = match value {
            Some(v) => format!("{} = {v:?}", s.key),
            None => format!("# {} is unset", s.key),
        };
        out.push_str(&format!("{shown:<48} # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broker_flag_is_a_setting_with_its_own_variable() {
        let all = settings();
        for key in ["data_dir", "listen", "broker_id", "batch_bytes_max", "peers", "log_level"] {
            let s = all.iter().find(|s| s.key == key).unwrap_or_else(|| panic!("no setting {key}"));
            assert_eq!(s.env, format!("FJORD_{}", key.to_uppercase()), "{key}");
        }
        assert!(all.iter().all(|s| s.env == format!("FJORD_{}", s.key.to_uppercase())));
        assert!(!all.iter().any(|s| s.key == "config" || s.key == "print_config"));
    }

    #[test]
    fn files_are_read_as_flag_strings_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fjord.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:0\"\nbatch_bytes_max = 65536\nenable_fault_injection = true\n[peers]\n1 = \"a:1\"\n2 = \"b:2\"\n").unwrap();
        let v = read(&path).unwrap();
        assert_eq!(v["batch_bytes_max"], "65536");
        assert_eq!(v["peers"], "1=a:1,2=b:2");
        assert_eq!(v["enable_fault_injection"], "true");
        std::fs::write(&path, "listen = [1, 2]\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("fjord.toml") && e.contains("\"listen\""), "{e}");
        std::fs::write(&path, "listen = \n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("invalid TOML"));
    }
}
