//! Test 3: a slow subscriber loses nothing at pmon's rates with the default log sizes.
//!
//! pmon produces at most 100 circuits × 5 frames/s (QoS 1, ~80-byte per-record frames) plus 100
//! JSON states/s (~400 bytes). One publisher sends a burst of 60 s of that (30 000 frames + 6 000
//! states) as fast as it can, while a subscriber that sleeps between messages falls several
//! seconds behind. rumqttd has no back-pressure: the subscriber's backlog lives in the
//! subscription filter's in-memory log, which must be large enough to hold it.
//!
//! The tests in this file run one at a time (they measure timing on a 2-core machine).

mod common;

use std::time::{Duration, Instant};

use pmon_broker::BrokerConfig;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FRAMES_PER_STATE: u64 = 5;
const FRAME_BYTES: usize = 80;
const STATE_BYTES: usize = 400;
/// 60 s of pmon at its maximum: 30 000 frames + 6 000 states.
const BURST: u64 = 36_000;
/// The subscriber sleeps 1 ms after every this many messages (a tokio sleep of 1 ms lasts
/// 1–2 ms here: a few thousand messages/s, so it ends up ~10 s behind a publisher that finishes
/// the burst in well under a second).
const MESSAGES_PER_SLEEP: u64 = 8;

/// Message `seq` of the burst: every sixth is a JSON state, the others frames; the sequence
/// number is in the first 8 bytes. All on `single_topic` if given.
fn message(seq: u64, single_topic: Option<&str>) -> (String, Vec<u8>) {
    let circuit = (seq / (FRAMES_PER_STATE + 1)) % 100;
    let (kind, len) = if seq % (FRAMES_PER_STATE + 1) == FRAMES_PER_STATE {
        ("state", STATE_BYTES)
    } else {
        ("frame", FRAME_BYTES)
    };
    let mut payload = vec![b' '; len];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    let topic = match single_topic {
        Some(topic) => topic.to_owned(),
        None => format!("pmon/test/c{circuit}/{kind}"),
    };
    (topic, payload)
}

fn sequence(payload: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&payload[..8]);
    u64::from_le_bytes(bytes)
}

/// Publishes `count` messages at QoS 1 as fast as possible; resolves with the time the last
/// PUBACK arrived.
fn publish_burst(
    client: AsyncClient,
    mut eventloop: EventLoop,
    count: u64,
    single_topic: Option<&'static str>,
) -> tokio::task::JoinHandle<Instant> {
    // The event loop is polled all the time by its own task; publish requests come from another.
    tokio::spawn(async move {
        for seq in 0..count {
            let (topic, payload) = message(seq, single_topic);
            if let Err(e) = client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
            {
                panic!("publish request {seq} failed: {e}");
            }
        }
    });
    tokio::spawn(async move {
        let mut acked = 0;
        while acked < count {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher connection failed after {acked} acks: {e}"),
            }
        }
        Instant::now()
    })
}

struct Outcome {
    received: u64,
    /// Messages that arrived after a gap (some messages before them were skipped).
    gaps: u64,
    /// Messages older than one already received.
    reordered: u64,
    /// Messages the subscriber had still to receive when the publisher finished.
    behind_at_publish_end: u64,
    publish_time: Duration,
    total_time: Duration,
}

/// How the burst is published and subscribed to.
struct Case {
    qos: QoS,
    count: u64,
    filter: &'static str,
    /// Publish everything on this one topic instead of pmon's per-circuit topics.
    single_topic: Option<&'static str>,
}

impl Case {
    fn pmon_burst(qos: QoS) -> Self {
        Self {
            qos,
            count: BURST,
            filter: "pmon/test/#",
            single_topic: None,
        }
    }
}

/// Subscribes, starts the burst, and consumes slowly until every message arrived or nothing
/// arrives for 2 s after the publisher finished.
async fn slow_subscriber(config: BrokerConfig, case: Case) -> Outcome {
    let Case {
        qos,
        count,
        filter,
        single_topic,
    } = case;
    let log = if filter.contains('#') {
        format!(
            "{} B × {}",
            config.max_segment_size, config.max_segment_count
        )
    } else {
        format!(
            "{} B × {}",
            config.narrow_segment_size, config.narrow_segment_count
        )
    };
    let broker = common::broker_with(config);
    let addr = broker.client_addr();
    let mut options = common::options(addr, "slow-sub");
    // A QoS 0 backlog sits in the TCP connection, in front of the PINGRESP: with a short
    // keep-alive rumqttc gives up ("Last pingreq isn't acked") before it has drained it.
    options.set_keep_alive(Duration::from_secs(60));
    let (sub, mut sub_loop) = common::client(options);
    common::connected(&mut sub_loop).await;
    common::subscribed(&sub, &mut sub_loop, filter, qos).await;

    let (publ, pub_loop) = common::client(common::options(addr, "burst-pub"));
    let started = Instant::now();
    let mut publisher = publish_burst(publ, pub_loop, count, single_topic);
    let mut publish_end: Option<Instant> = None;
    let mut behind_at_publish_end = 0;

    let (mut received, mut gaps, mut reordered, mut next) = (0u64, 0u64, 0u64, 0u64);
    let deadline = started + Duration::from_secs(25);
    while received < count && Instant::now() < deadline {
        let quiet = if publish_end.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        };
        let event = tokio::select! {
            end = &mut publisher, if publish_end.is_none() => {
                publish_end = Some(end.expect("publisher task"));
                behind_at_publish_end = count - received;
                continue;
            }
            event = tokio::time::timeout(quiet, sub_loop.poll()) => event,
        };
        match event {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let seq = sequence(&p.payload);
                if seq > next {
                    gaps += 1;
                }
                if seq < next {
                    reordered += 1;
                }
                next = next.max(seq + 1);
                received += 1;
                if received % MESSAGES_PER_SLEEP == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber connection failed after {received}: {e}"),
            Err(_) if publish_end.is_some() => break, // quiet: nothing more is coming
            Err(_) => panic!("nothing received for 10 s while publishing"),
        }
    }
    let publish_end = match publish_end {
        Some(end) => end,
        None => {
            let end = publisher.await.expect("publisher task");
            behind_at_publish_end = count - received;
            end
        }
    };
    let outcome = Outcome {
        received,
        gaps,
        reordered,
        behind_at_publish_end,
        publish_time: publish_end - started,
        total_time: started.elapsed(),
    };
    eprintln!(
        "{qos:?} subscriber to {filter}, log {log}: received {}/{count} ({:.2} % lost), {} gaps, {} \
         reordered; publisher done after {:.2?}, subscriber then {} messages (~{:.1?}) behind, \
         done after {:.2?}; process RSS {} KiB",
        outcome.received,
        100.0 * (count - outcome.received) as f64 / count as f64,
        outcome.gaps,
        outcome.reordered,
        outcome.publish_time,
        outcome.behind_at_publish_end,
        outcome.total_time.saturating_sub(outcome.publish_time),
        outcome.total_time,
        common::rss_kib().unwrap_or(0),
    );
    broker.stop().await.expect("clean stop");
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_qos1_subscriber_receives_everything_in_order() {
    let _serial = SERIAL.lock().await;
    let outcome = slow_subscriber(
        BrokerConfig::ephemeral(),
        Case::pmon_burst(QoS::AtLeastOnce),
    )
    .await;
    assert!(
        outcome.behind_at_publish_end > 10_000,
        "the subscriber must really lag (it was only {} behind): the test would prove nothing",
        outcome.behind_at_publish_end
    );
    assert_eq!(outcome.received, BURST, "every message arrives");
    assert_eq!(outcome.gaps, 0, "no gaps");
    assert_eq!(outcome.reordered, 0, "in publication order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_qos0_subscriber_loss_is_reported() {
    let _serial = SERIAL.lock().await;
    let outcome =
        slow_subscriber(BrokerConfig::ephemeral(), Case::pmon_burst(QoS::AtMostOnce)).await;
    // QoS 0 promises nothing; the loss is printed above. What arrives must stay in order.
    assert_eq!(outcome.reordered, 0, "in publication order");
    assert!(outcome.received > 0);
}

/// Control: with the log the design notes measured (64 KiB × 2) the same kind of burst loses
/// QoS 1 messages: this is what the default log size protects against, and proves the test
/// above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_log_loses_qos1_messages() {
    let _serial = SERIAL.lock().await;
    let mut config = BrokerConfig::ephemeral();
    config.max_segment_size = 64 * 1024;
    config.max_segment_count = 2;
    let count = 12_000;
    let case = Case {
        count,
        ..Case::pmon_burst(QoS::AtLeastOnce)
    };
    let outcome = slow_subscriber(config, case).await;
    assert!(
        outcome.received < count,
        "rumqttd 0.20 drops the oldest segment under a lagging QoS 1 subscriber; if it now keeps \
         everything, revisit the log sizing notes in pmon-broker's docs"
    );
}

/// The default log of a filter without `#` is deliberately small (memory for Home Assistant's
/// per-entity subscriptions): a subscriber to one exact topic lagging by more than 256 KiB of
/// it loses messages. pmon's services subscribe with `#` filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_topic_filter_gets_the_small_log() {
    let _serial = SERIAL.lock().await;
    let count = 12_000; // ~1.3 MB on one topic, 5× the narrow log
    let case = Case {
        qos: QoS::AtLeastOnce,
        count,
        filter: "pmon/test/c0/frame",
        single_topic: Some("pmon/test/c0/frame"),
    };
    let outcome = slow_subscriber(BrokerConfig::ephemeral(), case).await;
    assert!(outcome.received < count, "the narrow log did not apply");
    assert_eq!(outcome.reordered, 0);
}
