//! Shared harness of the process-level tests: start real `fjord broker`
//! processes on free loopback ports with their own data directories, run
//! the `fjord` CLI against them, and clean every process up.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod load;

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `fjord` binary under test.
pub fn fjord_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fjord"))
}

/// A broker process. Killed (SIGKILL) when dropped if still running.
pub struct Broker {
    child: Option<Child>,
    /// `host:port` it listens on.
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port with `data_dir`, plus `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Broker::start_args(data_dir, &args)
    }

    /// Starts a broker with `data_dir` and exactly `args` after `broker --data-dir DIR`.
    pub fn start_args(data_dir: &Path, args: &[&str]) -> Broker {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension("broker.log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(fjord_bin())
            .args(["--log-level", "info", "broker", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env_remove("RUST_LOG")
            // Many brokers run at once: no metrics endpoint unless a test
            // asks for one with --metrics-listen (the flag overrides this).
            .env("FJORD_METRICS_LISTEN", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn fjord broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {} // keep draining so the broker never blocks on stdout
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let addr = line.rsplit(' ').next().unwrap().to_string();
        assert!(line.contains("listening on"), "unexpected first line {line:?}");
        Broker { child: Some(child), addr, data_dir: data_dir.to_owned(), log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for a graceful exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        for _ in 0..300 {
            if let Some(status) = c.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("broker did not stop within 15 s of SIGTERM");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Free loopback ports, found by binding port 0 (and released for the
/// brokers to bind; the window in between is short).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A local cluster of brokers `1..=n`, each with its own data directory.
pub struct Cluster {
    pub brokers: Vec<Option<Broker>>,
    pub addrs: Vec<String>,
    peers: String,
    root: PathBuf,
}

impl Cluster {
    /// Starts `n` brokers (with fault injection enabled) under `root`.
    pub fn start(root: &Path, n: usize) -> Cluster {
        let addrs: Vec<String> = free_ports(n).into_iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers =
            addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
        let mut c = Cluster { brokers: Vec::new(), addrs, peers, root: root.to_owned() };
        for id in 1..=n as u64 {
            let b = c.spawn(id);
            c.brokers.push(Some(b));
        }
        c
    }

    fn spawn(&self, id: u64) -> Broker {
        let addr = &self.addrs[id as usize - 1];
        Broker::start_args(
            &self.root.join(format!("broker-{id}")),
            &[
                "--id",
                &id.to_string(),
                "--listen",
                addr,
                "--peers",
                &self.peers,
                "--enable-fault-injection",
                "--maintenance-interval",
                "1s",
            ],
        )
    }

    /// The bootstrap list of every broker.
    pub fn bootstrap(&self) -> String {
        self.addrs.join(",")
    }

    /// SIGKILLs broker `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut b) = self.brokers[id as usize - 1].take() {
            b.kill();
        }
    }

    /// Restarts broker `id` on its address and data.
    pub fn restart(&mut self, id: u64) {
        let b = self.spawn(id);
        self.brokers[id as usize - 1] = Some(b);
    }

    /// Data directory of broker `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("broker-{id}"))
    }
}

/// Runs `fjord --broker ADDR args...` with `stdin`, bounded in time.
pub fn fjord(addr: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(fjord_bin())
        .arg("--broker")
        .arg(addr)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fjord");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("fjord {args:?} did not finish in 120 s");
        }
    };
    writer.join().unwrap();
    out
}

/// [`fjord`], asserting success; returns stdout.
pub fn fjord_ok(addr: &str, args: &[&str], stdin: &[u8]) -> String {
    let out = fjord(addr, args, stdin);
    assert!(
        out.status.success(),
        "fjord {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A connected Rust client.
pub async fn client(addr: &str) -> fjord_client::Client {
    fjord_client::Client::connect(fjord_client::ClientConfig::from_bootstrap(addr).unwrap()).await.unwrap()
}

/// Asserts a failed call's code, its ErrorDetail code, and words in its message.
pub fn expect(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: tonic::Code,
    detail: fjord_proto::pb::ErrorCode,
    words: &[&str],
) -> fjord_proto::pb::ErrorDetail {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "status: {status:?}");
    let d = fjord_proto::decode_status_details(status.details()).expect("details carry an ErrorDetail");
    assert_eq!(d.code(), detail, "detail: {d:?}");
    for w in words {
        assert!(status.message().contains(w), "message {:?} should mention {w:?}", status.message());
    }
    d
}
