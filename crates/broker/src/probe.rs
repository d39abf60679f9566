//! A minimal blocking MQTT 3.1.1 client that checks a listener answers CONNECT with CONNACK.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The address a client on this host uses to reach a listener bound to `bind`: the loopback
/// address of the same family when `bind` is the unspecified address.
pub fn client_addr(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bind.port())
        }
        _ => bind,
    }
}

/// Tries an MQTT CONNECT (clean session, keep-alive 10 s: rumqttd refuses keep-alive 0) until a
/// CONNACK "accepted" comes back or `timeout` passes. Returns the last failure.
pub fn wait_for_connack(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt made");
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect_once(addr, left.min(Duration::from_secs(2))) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last)
}

fn connect_once(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    static PROBE: AtomicU32 = AtomicU32::new(0);
    let timeout = timeout.max(Duration::from_millis(10));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;

    // Client ids may not contain '/', '+', '#' or '$' (rumqttd drops such connections silently).
    let client_id = format!(
        "pmon-broker-probe-{}-{}",
        std::process::id(),
        PROBE.fetch_add(1, Ordering::Relaxed)
    );
    stream.write_all(&connect_packet(&client_id))?;

    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    // CONNACK: type 2, remaining length 2, session-present flags, return code 0 = accepted.
    if connack[0] != 0x20 || connack[1] != 0x02 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected a CONNACK, got bytes {connack:02x?}"),
        ));
    }
    if connack[3] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("CONNACK refused the connection, return code {}", connack[3]),
        ));
    }
    // Just close: after a DISCONNECT packet rumqttd 0.20 handles the disconnection twice and
    // logs "no-connection id … is already gone" at ERROR level; a plain close logs at INFO.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// An MQTT 3.1.1 CONNECT packet: clean session, keep-alive 10 s, no will, no credentials.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let id = &id[..usize::from(id_len)];
    // Variable header (10 bytes) + client id (2 + n); short ids keep this below 128.
    let remaining = 10 + 2 + id.len();
    let mut packet = Vec::with_capacity(2 + remaining);
    packet.push(0x10);
    push_remaining_length(&mut packet, remaining);
    packet.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0A]);
    packet.extend_from_slice(&id_len.to_be_bytes());
    packet.extend_from_slice(id);
    packet
}

fn push_remaining_length(packet: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_bytes() {
        assert_eq!(
            connect_packet("ab"),
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn remaining_length_is_variable_length() {
        let mut v = Vec::new();
        push_remaining_length(&mut v, 321);
        assert_eq!(v, [0xC1, 0x02]);
    }

    #[test]
    fn unspecified_binds_are_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:1883".parse().expect("addr");
        assert_eq!(client_addr(any), "127.0.0.1:1883".parse().expect("addr"));
        let any6: SocketAddr = "[::]:1883".parse().expect("addr");
        assert_eq!(client_addr(any6), "[::1]:1883".parse().expect("addr"));
    }
}
