//! The DNS server of a session network, on the bridge address (UDP port 53): every node's
//! `resolv.conf` names it.
//!
//! It answers A queries for the session's node names (so containers inside a node resolve
//! `node2` too, which `/etc/hosts` of the node cannot give them), and every other query either
//! with NXDOMAIN at once (no egress: nothing outside exists for the nodes) or by relaying it to
//! the host's upstream nameservers (egress). Without it a lookup would be rejected with an ICMP
//! error, which the kernel rate-limits: after a burst of six, every lookup stalls for the
//! resolver's full timeout.
//!
//! Only the small part of RFC 1035 needed here is implemented: a query with one question;
//! names are compared case-insensitively, with or without a trailing search domain.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;

/// Node names and addresses of one session, shared with the runtime, which updates it.
pub(crate) type Table = Arc<RwLock<HashMap<String, Ipv4Addr>>>;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_FORMERR: u8 = 1;
/// Short: names come and go with nodes.
const TTL_SECS: u32 = 5;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// A parsed question: the name (lowercase, no trailing dot) and where the question ends.
#[derive(Debug, PartialEq)]
struct Question {
    name: String,
    qtype: u16,
    qclass: u16,
    end: usize,
}

fn parse_question(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        // Compression pointers never appear in a question's name.
        if len > 63 {
            return None;
        }
        let label = msg.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]);
    Some(Question {
        name: labels.join("."),
        qtype,
        qclass,
        end: pos + 4,
    })
}

/// The address of `name` in the table: `node1`, or `node1.<search domain>`.
fn lookup(table: &HashMap<String, Ipv4Addr>, name: &str) -> Option<Ipv4Addr> {
    let host = name.split('.').next()?;
    table.get(name).or_else(|| table.get(host)).copied()
}

/// A response to `query` (whose question ends at `q.end`) with `rcode` and an optional A
/// record.
fn response(query: &[u8], q_end: usize, rcode: u8, answer: Option<Ipv4Addr>) -> Vec<u8> {
    let mut out = Vec::with_capacity(q_end + 16);
    out.extend_from_slice(&query[0..2]); // id
    let rd = query[2] & 0x01;
    out.push(0x80 | 0x04 | rd); // QR, AA, RD copied
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&[0, 1]); // one question
    out.extend_from_slice(&[0, answer.is_some() as u8]);
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority or additional records
    out.extend_from_slice(&query[12..q_end]);
    if let Some(ip) = answer {
        out.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question's
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECS.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// What to do with one query.
#[derive(Debug, PartialEq)]
enum Reply {
    Answer(Vec<u8>),
    Relay,
    Ignore,
}

fn answer(query: &[u8], table: &HashMap<String, Ipv4Addr>, egress: bool) -> Reply {
    // Responses and other non-queries are ignored.
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Reply::Ignore;
    }
    let Some(q) = parse_question(query) else {
        return Reply::Answer(response(&query[..12], 12, RCODE_FORMERR, None)[..12].to_vec());
    };
    match lookup(table, &q.name) {
        Some(ip) if q.qclass == CLASS_IN => {
            // A node name: its address, or an empty answer for other types (AAAA, ...).
            let a = (q.qtype == TYPE_A).then_some(ip);
            Reply::Answer(response(query, q.end, 0, a))
        }
        _ if egress => Reply::Relay,
        _ => Reply::Answer(response(query, q.end, RCODE_NXDOMAIN, None)),
    }
}

/// Queries relayed upstream at once; more are dropped (the resolver retries).
const MAX_RELAYS: usize = 64;

/// Serves DNS on the gateway of `subnet`, to peers in `subnet`, until the task is aborted.
pub(crate) async fn serve(
    subnet: super::Subnet,
    table: Table,
    upstream: Vec<Ipv4Addr>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = Arc::new(UdpSocket::bind(SocketAddrV4::new(subnet.gateway(), 53)).await?);
    let egress = !upstream.is_empty();
    let relays = Arc::new(tokio::sync::Semaphore::new(MAX_RELAYS));
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let from_session = match peer {
                SocketAddr::V4(p) => subnet.contains(*p.ip()),
                SocketAddr::V6(_) => false,
            };
            if !from_session {
                continue;
            }
            let query = buf[..n].to_vec();
            let reply = {
                let t = table.read().unwrap_or_else(|p| p.into_inner());
                answer(&query, &t, egress)
            };
            match reply {
                Reply::Answer(r) => {
                    let _ = sock.send_to(&r, peer).await;
                }
                Reply::Relay => {
                    if let Ok(permit) = relays.clone().try_acquire_owned() {
                        let (sock, upstream) = (sock.clone(), upstream.clone());
                        tokio::spawn(async move {
                            relay(sock, query, peer, upstream).await;
                            drop(permit);
                        });
                    }
                }
                Reply::Ignore => {}
            }
        }
    }))
}

/// Asks the upstream nameservers in turn and passes the first answer back to `peer`.
async fn relay(sock: Arc<UdpSocket>, query: Vec<u8>, peer: SocketAddr, upstream: Vec<Ipv4Addr>) {
    let Ok(out) = UdpSocket::bind("0.0.0.0:0").await else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    for ns in upstream {
        if out.send_to(&query, (ns, 53)).await.is_err() {
            continue;
        }
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(UPSTREAM_TIMEOUT, out.recv_from(&mut buf)).await
        {
            let _ = sock.send_to(&buf[..n], peer).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn table() -> HashMap<String, Ipv4Addr> {
        HashMap::from([("node2".to_string(), Ipv4Addr::new(10, 1, 0, 3))])
    }

    #[test]
    fn node_names_resolve() {
        let q = query("Node2", TYPE_A);
        let Reply::Answer(r) = answer(&q, &table(), false) else {
            panic!()
        };
        assert_eq!(&r[0..2], &[0x12, 0x34], "same id");
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 1, 0, 3]);
        // With a search domain appended, too.
        assert!(
            matches!(answer(&query("node2.lan", TYPE_A), &table(), false), Reply::Answer(r) if r.ends_with(&[10, 1, 0, 3]))
        );
    }

    #[test]
    fn other_types_of_a_node_name_get_an_empty_answer() {
        let Reply::Answer(r) = answer(&query("node2", 28), &table(), false) else {
            panic!()
        };
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
    }

    #[test]
    fn unknown_names_fail_at_once_or_are_relayed() {
        let q = query("example.com", TYPE_A);
        let Reply::Answer(r) = answer(&q, &table(), false) else {
            panic!()
        };
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(answer(&q, &table(), true), Reply::Relay);
    }

    #[test]
    fn garbage_is_refused_or_ignored() {
        assert_eq!(answer(&[1, 2, 3], &table(), false), Reply::Ignore);
        let mut resp = query("node2", TYPE_A);
        resp[2] |= 0x80;
        assert_eq!(answer(&resp, &table(), false), Reply::Ignore);
        let mut truncated = query("node2", TYPE_A);
        truncated.truncate(15);
        let Reply::Answer(r) = answer(&truncated, &table(), false) else {
            panic!()
        };
        assert_eq!(r[3] & 0x0f, RCODE_FORMERR);
    }
}
