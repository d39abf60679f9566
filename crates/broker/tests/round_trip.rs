//! Test 2: messages go through the embedded broker as pmon's services need, and the rumqttd
//! behaviours the module docs warn about are pinned here.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use pmon_broker::DEFAULT_MAX_PAYLOAD_SIZE;
use rumqttc::{Event, Packet, QoS};

const WAIT: Duration = Duration::from_secs(5);

/// QoS 1 and QoS 0 publishes reach QoS 1 and QoS 0 subscribers, in order. Pins a rumqttd
/// deviation: it delivers at the *subscription's* QoS (MQTT says the minimum of the two), so a
/// QoS 0 publish reaches a QoS 1 subscriber as QoS 1.
#[tokio::test]
async fn qos1_and_qos0_publishes_arrive() {
    let broker = common::broker();
    let addr = broker.client_addr();
    let mut subscribers = Vec::new();
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        let (sub, mut sub_loop) = common::client(common::options(addr, "rt-sub"));
        common::connected(&mut sub_loop).await;
        common::subscribed(&sub, &mut sub_loop, "pmon/site/#", qos).await;
        subscribers.push((qos, sub, sub_loop));
    }

    let (publ, pub_loop) = common::client(common::options(addr, "rt-pub"));
    let _pub_task = common::drive(pub_loop);
    publ.publish(
        "pmon/site/c1/frame",
        QoS::AtLeastOnce,
        false,
        vec![1u8, 2, 3],
    )
    .await
    .expect("publish");
    publ.publish("pmon/site/c1/state", QoS::AtMostOnce, false, "{\"w\":1}")
        .await
        .expect("publish");

    for (sub_qos, _sub, mut sub_loop) in subscribers {
        let first = common::next_publish(&mut sub_loop, WAIT)
            .await
            .expect("QoS 1 publish arrives");
        assert_eq!(first.topic, "pmon/site/c1/frame");
        assert_eq!(&first.payload[..], [1, 2, 3]);
        assert_eq!(first.qos, sub_qos);
        let second = common::next_publish(&mut sub_loop, WAIT)
            .await
            .expect("QoS 0 publish arrives");
        assert_eq!(second.topic, "pmon/site/c1/state");
        assert_eq!(&second.payload[..], b"{\"w\":1}");
        assert_eq!(
            second.qos, sub_qos,
            "rumqttd delivers at the subscription's QoS"
        );
    }
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let broker = common::broker();
    let addr = broker.client_addr();
    let (publ, mut pub_loop) = common::client(common::options(addr, "ret-pub"));
    common::connected(&mut pub_loop).await;
    publ.publish("pmon/site/status", QoS::AtLeastOnce, true, "online")
        .await
        .expect("publish");
    // Wait for the PUBACK so the broker has stored it.
    loop {
        match tokio::time::timeout(WAIT, pub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no PUBACK: {other:?}"),
        }
    }

    let (sub, mut sub_loop) = common::client(common::options(addr, "ret-sub"));
    common::connected(&mut sub_loop).await;
    sub.subscribe("pmon/site/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let got = common::next_publish(&mut sub_loop, WAIT)
        .await
        .expect("retained message delivered on subscribe");
    assert_eq!(got.topic, "pmon/site/status");
    assert!(got.retain, "delivered with the retain flag");
    assert_eq!(&got.payload[..], b"online");
}

/// The largest packet `max_payload_size` allows goes through; one byte more disconnects the
/// sender without hurting the broker.
#[tokio::test]
async fn payload_limit_is_exact_and_harmless() {
    let broker = common::broker();
    let addr = broker.client_addr();
    let topic = "pmon/site/c1/frame";
    // Remaining length of a QoS 1 PUBLISH = 2 + topic + 2 (packet id) + payload.
    let largest = DEFAULT_MAX_PAYLOAD_SIZE - 2 - topic.len() - 2;

    let (sub, mut sub_loop) = common::client(common::options(addr, "big-sub"));
    common::connected(&mut sub_loop).await;
    common::subscribed(&sub, &mut sub_loop, topic, QoS::AtLeastOnce).await;

    // rumqttc checks its outgoing limit against the whole packet (fixed header included) while
    // rumqttd checks the remaining length: to probe the broker's exact limit, let the client
    // send more. (pmon's clients keep outgoing = max_payload_size and so never send a packet
    // the broker refuses.)
    let mut options = common::options(addr, "big-pub");
    options.set_max_packet_size(DEFAULT_MAX_PAYLOAD_SIZE, 2 * DEFAULT_MAX_PAYLOAD_SIZE);
    let (publ, mut pub_loop) = common::client(options);
    common::connected(&mut pub_loop).await;
    let payload: Vec<u8> = (0..largest).map(|i| (i % 251) as u8).collect();
    publ.publish(topic, QoS::AtLeastOnce, false, payload.clone())
        .await
        .expect("publish");
    let sub_task = tokio::spawn(async move {
        let got = common::next_publish(&mut sub_loop, WAIT).await;
        (got, sub_loop)
    });
    loop {
        match tokio::time::timeout(WAIT, pub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("largest payload not acknowledged: {other:?}"),
        }
    }
    let (got, mut sub_loop) = sub_task.await.expect("subscriber task");
    let got = got.expect("largest payload delivered");
    assert_eq!(got.payload.len(), largest);
    assert_eq!(&got.payload[..], &payload[..]);

    // One byte over.
    let mut options = common::options(addr, "too-big-pub");
    options.set_max_packet_size(DEFAULT_MAX_PAYLOAD_SIZE, 2 * DEFAULT_MAX_PAYLOAD_SIZE);
    let (big, mut big_loop) = common::client(options);
    common::connected(&mut big_loop).await;
    big.publish(topic, QoS::AtLeastOnce, false, vec![0u8; largest + 1])
        .await
        .expect("publish request");
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match big_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the broker reacts within 5 s");
    let error = outcome.expect_err("an oversized packet must not be accepted");
    eprintln!("oversized publish -> client error: {error}");

    // Nothing reached the subscriber, and the broker still serves everyone else.
    assert!(
        common::next_publish(&mut sub_loop, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(broker.is_running());
    publ.publish(topic, QoS::AtLeastOnce, false, "after")
        .await
        .expect("publish");
    let _pub_task = common::drive(pub_loop);
    let got = common::next_publish(&mut sub_loop, WAIT)
        .await
        .expect("broker still delivers");
    assert_eq!(&got.payload[..], b"after");
}

/// Sends a raw MQTT 3.1.1 CONNECT and returns the CONNACK return code, or None if the broker
/// closed the connection without one.
fn raw_connect(addr: SocketAddr, client_id: &str, keep_alive: u16) -> Option<u8> {
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let id = client_id.as_bytes();
    let mut packet = vec![0x10, (12 + id.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02]);
    packet.extend_from_slice(&keep_alive.to_be_bytes());
    packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
    packet.extend_from_slice(id);
    stream.write_all(&packet).expect("send CONNECT");
    let mut connack = [0u8; 4];
    match stream.read_exact(&mut connack) {
        Ok(()) => {
            assert_eq!(connack[0], 0x20, "a CONNACK");
            Some(connack[3])
        }
        Err(_) => None,
    }
}

/// Pins: rumqttd refuses keep-alive 0 and client ids with MQTT wildcard characters, by closing
/// the connection without a CONNACK (see the crate docs).
#[test]
fn keep_alive_zero_and_wildcard_client_ids_are_refused_silently() {
    let broker = common::broker();
    let addr = broker.client_addr();
    assert_eq!(raw_connect(addr, "pmon-ok", 10), Some(0), "a normal client");
    assert_eq!(raw_connect(addr, "pmon-ka0", 0), None, "keep-alive 0");
    assert_eq!(raw_connect(addr, "pmon/historian", 10), None, "'/' in id");
}

/// Pins: on subscribe, a QoS 1 subscription gets at most 100 retained messages (rumqttd's fixed
/// inflight window) and a QoS 0 one up to `max_outgoing_packet_count`; the rest are dropped.
#[tokio::test]
async fn retained_messages_on_subscribe_are_capped() {
    let broker = common::broker();
    let addr = broker.client_addr();
    let (publ, mut pub_loop) = common::client(common::options(addr, "cap-pub"));
    common::connected(&mut pub_loop).await;
    const TOPICS: usize = 150;
    for i in 0..TOPICS {
        publ.publish(
            format!("pmon/site/c{i}/avail"),
            QoS::AtLeastOnce,
            true,
            "online",
        )
        .await
        .expect("publish");
    }
    let mut acks = 0;
    while acks < TOPICS {
        match tokio::time::timeout(WAIT, pub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
            Ok(Ok(_)) => {}
            other => panic!("retained publish not acknowledged: {other:?}"),
        }
    }

    let mut received = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let (sub, mut sub_loop) = common::client(common::options(addr, "cap-sub"));
        common::connected(&mut sub_loop).await;
        sub.subscribe("pmon/site/+/avail", qos)
            .await
            .expect("subscribe");
        let mut count = 0;
        while common::next_publish(&mut sub_loop, Duration::from_millis(500))
            .await
            .is_some()
        {
            count += 1;
        }
        received.push(count);
    }
    assert_eq!(
        received[0], TOPICS,
        "QoS 0 subscriber gets every retained message"
    );
    assert_eq!(
        received[1], 100,
        "QoS 1 subscriber gets only rumqttd's inflight window of retained messages; if this \
         changed, update the crate docs"
    );
}
