//! Start, refuse, stop: the broker fails loudly on a taken port and stops for real.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pmon_broker::{BrokerConfig, BrokerError};
use rumqttc::QoS;

fn taken_port(ip: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((ip, 0)).expect("bind a free port");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

fn assert_port_in_use(result: Result<pmon_broker::BrokerHandle, BrokerError>, addr: SocketAddr) {
    match result {
        Err(e @ BrokerError::PortInUse { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&addr.to_string()),
                "names the address: {text}"
            );
            assert!(text.contains("in use"), "says why: {text}");
            if let BrokerError::PortInUse { addr: reported, .. } = e {
                assert_eq!(reported, addr);
            }
        }
        Err(other) => panic!("expected PortInUse for {addr}, got: {other}"),
        Ok(broker) => panic!("a broker claims to listen on taken {}", broker.local_addr()),
    }
}

/// Test 1: a port held by any listener makes `spawn` fail with the address and the OS error.
#[test]
fn port_taken_by_another_listener_is_an_error() {
    common::init_tracing();
    let (_holder, addr) = taken_port("127.0.0.1");
    let started = Instant::now();
    let result = pmon_broker::spawn(BrokerConfig::with_bind(addr));
    assert!(started.elapsed() < Duration::from_secs(2), "fails at once");
    assert_port_in_use(result, addr);
}

/// A wildcard listener on the port blocks a loopback bind too (the common "mosquitto already
/// listens on 0.0.0.0:1883" case).
#[test]
fn port_taken_on_the_wildcard_address_is_an_error() {
    let (_holder, wildcard) = taken_port("0.0.0.0");
    let loopback: SocketAddr = ([127, 0, 0, 1], wildcard.port()).into();
    assert_port_in_use(
        pmon_broker::spawn(BrokerConfig::with_bind(loopback)),
        loopback,
    );
}

/// Test 4: a second broker on the first one's port fails, and the first keeps working.
#[tokio::test]
async fn second_broker_on_the_same_port_fails_and_the_first_keeps_working() {
    let first = common::broker();
    let addr = first.local_addr();

    let second = pmon_broker::spawn(BrokerConfig::with_bind(addr));
    assert_port_in_use(second, addr);
    // `run` fails just as loudly, instead of running without a listener.
    let run = tokio::time::timeout(
        Duration::from_secs(5),
        pmon_broker::run(BrokerConfig::with_bind(addr), std::future::pending()),
    )
    .await
    .expect("run returns at once on a taken port");
    assert!(matches!(run, Err(BrokerError::PortInUse { .. })), "{run:?}");

    assert!(first.is_running());
    let (sub, mut sub_loop) = common::client(common::options(addr, "first-sub"));
    common::connected(&mut sub_loop).await;
    common::subscribed(&sub, &mut sub_loop, "pmon/t/#", QoS::AtLeastOnce).await;
    let (publ, pub_loop) = common::client(common::options(addr, "first-pub"));
    let _pub_task = common::drive(pub_loop);
    publ.publish("pmon/t/x", QoS::AtLeastOnce, false, "still here")
        .await
        .expect("publish request");
    let got = common::next_publish(&mut sub_loop, Duration::from_secs(5))
        .await
        .expect("the first broker still delivers");
    assert_eq!(&got.payload[..], b"still here");
    first.stop().await.expect("clean stop");
}

/// `stop` closes the port (and disconnects clients), so the same port can be bound again.
#[tokio::test]
async fn stop_closes_the_port_and_it_can_be_reused() {
    let broker = common::broker();
    let addr = broker.local_addr();
    let (_client, mut eventloop) = common::client(common::options(addr, "stopped"));
    common::connected(&mut eventloop).await;

    broker.stop().await.expect("clean stop");
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens after stop"
    );
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = eventloop.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the client notices the broker is gone");
    drop(err);

    let again = pmon_broker::spawn(BrokerConfig::with_bind(addr)).expect("port is free again");
    assert_eq!(again.local_addr(), addr);
    again.stop().await.expect("clean stop");
}

/// `run` serves until the shutdown future resolves, then returns Ok promptly.
#[tokio::test]
async fn run_returns_promptly_on_shutdown() {
    let (_probe, addr) = taken_port("127.0.0.1");
    drop(_probe); // a port that was free a moment ago
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(pmon_broker::run(BrokerConfig::with_bind(addr), async {
        let _ = rx.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_c, mut eventloop) = common::client(common::options(addr, "run-check"));
        match tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            _ if Instant::now() < deadline && !service.is_finished() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("run did not start serving: {other:?}"),
        }
    }

    let _ = tx.send(());
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), service)
        .await
        .expect("run returns promptly")
        .expect("run task");
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(TcpStream::connect(addr).is_err(), "listener closed");
}

/// Port 0 picks a free port and reports it; brokers on distinct ports coexist.
#[test]
fn port_zero_picks_a_free_port() {
    let a = common::broker();
    let b = common::broker();
    assert_ne!(a.local_addr().port(), 0);
    assert_ne!(a.local_addr(), b.local_addr());
    assert!(a.is_running() && b.is_running());
    TcpStream::connect(a.client_addr()).expect("a accepts");
    TcpStream::connect(b.client_addr()).expect("b accepts");
}

/// Values that would make rumqttd's router thread panic later are refused up front.
#[test]
fn invalid_config_is_refused_before_starting() {
    let mut config = BrokerConfig::ephemeral();
    config.max_segment_size = 100;
    assert!(matches!(
        pmon_broker::spawn(config),
        Err(BrokerError::InvalidConfig(_))
    ));
}
