//! The public API from outside Rust: a Python client, built only from
//! `proto/fjord/v1/fjord.proto` and `storage-format.md`, produces, fetches
//! and checks typed errors; and the standard gRPC health and reflection
//! services answer as any gRPC tooling expects.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Broker;
use prost::Message;
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

/// The services the broker's API defines, as reflection and health name them.
const FJORD_SERVICES: [&str; 3] = ["fjord.v1.Producer", "fjord.v1.Consumer", "fjord.v1.Admin"];

fn python_program() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/api_test.py")
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
    assert_eq!(methods("Producer"), ["Produce", "ProduceStream", "InitProducer"]);
    assert_eq!(methods("Consumer"), ["Fetch", "Subscribe", "ListOffsets"]);
    assert_eq!(
        methods("Admin"),
        ["CreateTopic", "DeleteTopic", "ListTopics", "DescribeTopic", "DescribeCluster", "Metadata"]
    );
}
