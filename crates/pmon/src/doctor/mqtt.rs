//! Is the broker there? A TCP connection and an MQTT 3.1.1 CONNECT answered by CONNACK.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why the broker could not be reached, in the terms the fix depends on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `mqtt://host[:port]` or `tcp://host[:port]`.
    #[error("{0}")]
    Url(String),
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// Nothing listens at the address.
    #[error("connection refused by {0}: nothing listens there")]
    Refused(SocketAddr),
    /// No answer in time (a firewall, a host that is down, a wrong address).
    #[error("no answer from {addr} within {seconds} s")]
    Timeout {
        /// The address tried.
        addr: SocketAddr,
        /// The timeout.
        seconds: u64,
    },
    /// Another network error.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// What the OS said.
        reason: String,
    },
    /// The broker closed the connection without a CONNACK.
    #[error("{0} closed the connection without answering the MQTT CONNECT")]
    Closed(SocketAddr),
    /// Something answered that is not an MQTT broker.
    #[error("{addr} answered with bytes {bytes:02x?}, not an MQTT CONNACK: is something else listening there?")]
    NotMqtt {
        /// The address tried.
        addr: SocketAddr,
        /// The first bytes received.
        bytes: Vec<u8>,
    },
    /// The broker refused the connection with a CONNACK return code.
    #[error("the broker refused the connection: {} (CONNACK code {code})", connack_reason(*.code))]
    Refusal {
        /// MQTT 3.1.1 return code, 1..=5.
        code: u8,
    },
}

/// The meaning of an MQTT 3.1.1 CONNACK return code.
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

/// Host and port of `mqtt://host[:port][/…][?…]` or `tcp://…`; 1883 by default.
pub fn parse_url(url: &str) -> Result<(String, u16), ProbeError> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| {
            ProbeError::Url(format!(
                "broker URL {url:?}: pmon speaks plain MQTT only: use mqtt://host:port"
            ))
        })?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| ProbeError::Url(format!("broker URL {url:?}: unclosed [")))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(ProbeError::Url(format!("broker URL {url:?} names no host")));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| ProbeError::Url(format!("broker URL {url:?}: bad port {port:?}")))?,
        None => 1883,
    };
    Ok((host.to_string(), port))
}

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s (rumqttd refuses 0), optional
/// user name and password.
pub fn connect_packet(client_id: &str, credentials: Option<(&str, &str)>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut flags = 0x02u8;
    if credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&10u16.to_be_bytes());
    string(&mut body, client_id);
    if let Some((user, password)) = credentials {
        string(&mut body, user);
        string(&mut body, password);
    }
    let mut packet = vec![0x10];
    let mut remaining = body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Connects to the broker of `url` and checks that it accepts an MQTT session. Returns the
/// address that answered.
pub fn probe(
    url: &str,
    credentials: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    let (host, port) = parse_url(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| ProbeError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last = ProbeError::Resolve {
        host: host.clone(),
        reason: "no address".into(),
    };
    for addr in addrs {
        match connect(addr, credentials, timeout) {
            Ok(()) => return Ok(addr),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn connect(
    addr: SocketAddr,
    credentials: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let io_error = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::ConnectionRefused => ProbeError::Refused(addr),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ProbeError::Timeout {
            addr,
            seconds: timeout.as_secs().max(1),
        },
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => ProbeError::Closed(addr),
        _ => ProbeError::Connect {
            addr,
            reason: error.to_string(),
        },
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_error)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    // No '/', '+', '#' or '$' in the id: rumqttd drops such clients without a CONNACK.
    let client_id = format!("pmon-doctor-{}", std::process::id());
    stream
        .write_all(&connect_packet(&client_id, credentials))
        .map_err(io_error)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).map_err(io_error)?;
    if connack[0] != 0x20 || connack[1] != 0x02 {
        return Err(ProbeError::NotMqtt {
            addr,
            bytes: connack.to_vec(),
        });
    }
    let _ = stream.write_all(&[0xE0, 0x00]);
    match connack[3] {
        0 => Ok(()),
        code => Err(ProbeError::Refusal { code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(parse_url("tcp://broker"), Ok(("broker".into(), 1883)));
        assert_eq!(
            parse_url("mqtt://user@host.lan:2883/?client_id=x"),
            Ok(("host.lan".into(), 2883))
        );
        assert_eq!(parse_url("mqtt://[::1]:1884"), Ok(("::1".into(), 1884)));
        assert!(matches!(
            parse_url("mqtts://h:8883"),
            Err(ProbeError::Url(_))
        ));
        assert!(matches!(parse_url("mqtt://:1883"), Err(ProbeError::Url(_))));
        assert!(matches!(parse_url("mqtt://h:x"), Err(ProbeError::Url(_))));
    }

    #[test]
    fn connect_packet_bytes() {
        // MQTT 3.1.1 §3.1: fixed header, "MQTT", level 4, clean session, keep-alive 10, id "ab".
        assert_eq!(
            connect_packet("ab", None),
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 2, b'a', b'b']
        );
        let with = connect_packet("a", Some(("u", "pw")));
        assert_eq!(with[9], 0xC2, "user name and password flags");
        assert_eq!(&with[with.len() - 7..], &[0, 1, b'u', 0, 2, b'p', b'w']);
        assert_eq!(usize::from(with[1]), with.len() - 2);
        // A long id needs a two-byte remaining length.
        let long = connect_packet(&"x".repeat(200), None);
        assert_eq!(long[1] & 0x80, 0x80);
        assert_eq!(
            usize::from(long[1] & 0x7F) + 128 * usize::from(long[2]),
            long.len() - 3
        );
    }

    #[test]
    fn connack_codes_are_explained() {
        assert_eq!(connack_reason(4), "bad user name or password");
        assert!(ProbeError::Refusal { code: 5 }
            .to_string()
            .contains("not authorized"));
    }

    #[test]
    fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = probe(
            &format!("mqtt://127.0.0.1:{port}"),
            None,
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(error, ProbeError::Refused(_)), "{error}");
    }

    #[test]
    fn a_listener_that_is_not_mqtt_is_named_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 64];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let error = probe(
            &format!("mqtt://127.0.0.1:{port}"),
            None,
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(error, ProbeError::NotMqtt { .. }), "{error}");
        let _ = server.join();
    }
}
