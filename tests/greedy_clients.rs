//! One client cannot lock the others out: connections from one source
//! address stop at its share of the broker's limit, and idle connections
//! are closed after the idle timeout. Every test client runs on this
//! machine, so the "hosts" are loopback addresses: all of 127/8 is
//! loopback on Linux, and a socket bound to 127.0.0.2 before connecting is
//! a connection from 127.0.0.2.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{fjord_ok, Broker};
use fjord_proto::pb::{self, admin_client::AdminClient, consumer_client::ConsumerClient};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Endpoint;

/// The broker's global limit in this test; its per-source share is the
/// default quarter of it.
const CONNECTIONS_MAX: usize = 64;
const PER_SOURCE: usize = CONNECTIONS_MAX / 4;

async fn connect_from(local: IpAddr, broker: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    socket.connect(broker).await.unwrap()
}

/// Whether the broker has closed `conn` within `wait` (what it sent before,
/// its HTTP/2 settings, is read and dropped).
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn admin_from(local: IpAddr, broker: &str) -> AdminClient<tonic::transport::Channel> {
    let ch = Endpoint::from_shared(format!("http://{broker}"))
        .unwrap()
        .local_address(Some(local))
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the second client connects");
    AdminClient::new(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_client_cannot_lock_out_a_second_one_and_idle_connections_close() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        &dir.path().join("data"),
        &["--max-connections", &CONNECTIONS_MAX.to_string(), "--idle-connection-timeout", "2s"],
    );
    fjord_ok(&broker.addr, &["topic", "create", "t", "--partitions", "1"], b"");
    let addr: SocketAddr = broker.addr.parse().unwrap();
    let (greedy, second): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());

    // The greedy host opens as many connections as the broker allows in all.
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        held.push(connect_from(greedy, addr).await);
    }
    let started = Instant::now();
    let closed =
        futures::future::join_all(held.iter_mut().map(|c| closed_within(c, Duration::from_millis(300))))
            .await;
    let refused = closed.iter().filter(|c| **c).count();
    let mut open: Vec<TcpStream> =
        held.into_iter().zip(closed).filter(|(_, closed)| !closed).map(|(c, _)| c).collect();
    assert_eq!(open.len(), PER_SOURCE, "the greedy host keeps its share and no more");
    assert_eq!(refused, CONNECTIONS_MAX - PER_SOURCE);

    // A second host is served while the greedy one holds its share.
    let mut admin = admin_from(second, &broker.addr).await;
    let topics = admin.list_topics(pb::ListTopicsRequest::default()).await.expect("served").into_inner();
    assert_eq!(topics.topics.len(), 1, "{topics:?}");

    // Requests still see their connection's source address (the groups
    // coordinator records it as the member's host).
    let ch = Endpoint::from_shared(format!("http://{}", broker.addr))
        .unwrap()
        .local_address(Some(second))
        .connect()
        .await
        .unwrap();
    let mut groups = fjord_proto::pb::groups_client::GroupsClient::new(ch);
    groups.find_coordinator(pb::FindCoordinatorRequest { group_id: "g".into() }).await.unwrap();
    let join = pb::GroupHeartbeatRequest {
        group_id: "g".into(),
        member_id: "m".into(),
        topics: vec!["t".into()],
        ..Default::default()
    };
    let mut joined = groups.group_heartbeat(join.clone()).await;
    for _ in 0..100 {
        match &joined {
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                joined = groups.group_heartbeat(join.clone()).await;
            }
            _ => break,
        }
    }
    joined.expect("joined");
    let d =
        groups.describe_group(pb::DescribeGroupRequest { group_id: "g".into() }).await.unwrap().into_inner();
    assert_eq!(d.members[0].client_host, "127.0.0.3", "{d:?}");

    // A request in flight longer than the idle timeout is not cut off:
    // a long poll of 3 s on an empty partition.
    let mut consumer = ConsumerClient::new(
        Endpoint::from_shared(format!("http://{}", broker.addr))
            .unwrap()
            .local_address(Some(second))
            .connect()
            .await
            .unwrap(),
    );
    let lo = pb::ListOffsetsRequest { topic: "t".into(), partition: 0, spec: 2, timestamp_ms: 0 };
    let end = consumer.list_offsets(lo).await.unwrap().into_inner().high_watermark;
    let poll = pb::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: end,
        min_bytes: 1,
        max_wait_ms: 3_000,
        ..Default::default()
    };
    let polled = Instant::now();
    let answer = consumer.fetch(poll).await;
    let waited = polled.elapsed();
    let answer = answer.expect("a long poll outlives the idle timeout");
    assert!(waited >= Duration::from_millis(2_500), "it did wait: {waited:?} {answer:?}");

    // The greedy host's idle connections are closed after the timeout
    // (2 s), so its slots come back.
    let left = Duration::from_secs(6).saturating_sub(started.elapsed());
    let closed = futures::future::join_all(open.iter_mut().map(|c| closed_within(c, left))).await;
    assert!(closed.iter().all(|c| *c), "every idle connection is closed after the idle timeout: {closed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    let mut again = connect_from(greedy, addr).await;
    assert!(
        !closed_within(&mut again, Duration::from_millis(300)).await,
        "the greedy host may connect again"
    );
}
