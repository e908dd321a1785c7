//! The terminal WebSocket protocol, all of it: query parameters, control messages both ways
//! and close codes. `docs/protocol.md` is its reference for client authors; the web client
//! mirrors these types.
//!
//! Binary frames carry raw terminal bytes both ways and are not described here (no JSON on
//! the hot path). Text frames carry one JSON object each, tagged by `"type"`. Client messages
//! reject unknown fields, so a typo is an error rather than silently ignored.

use serde::{Deserialize, Deserializer, Serialize};

use crate::size::WinSize;

/// Normal closure: the client closed the connection.
pub const CLOSE_NORMAL: u16 = 1000;
/// The server ends the connection: the terminal closed (after a `closed` message), or the peer
/// stopped answering or reading.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Something failed on the server.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// A control message that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed control message: {0}")]
    Malformed(String),
    #[error(
        "window size {cols}x{rows} is outside 1..={max} columns and rows",
        max = WinSize::MAX
    )]
    Size { cols: u16, rows: u16 },
}

/// Client to server, in text frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The client's window size; the PTY follows the most recently active viewer.
    Resize { cols: u16, rows: u16 },
    /// Flow control: the client has processed every byte before `offset`. After the first
    /// ack the server keeps at most the hello's `window` bytes unacknowledged.
    Ack { offset: u64 },
    /// Application-level liveness check; answered with `pong`. (A struct variant: a unit
    /// variant would accept unknown fields.)
    Ping {},
}

impl ClientMessage {
    /// Parses and validates a text frame.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let msg: Self = serde_json::from_str(text)
            .map_err(|e| ProtocolError::Malformed(shortened(e.to_string())))?;
        if let Self::Resize { cols, rows } = msg {
            if !(WinSize { cols, rows }).is_valid() {
                return Err(ProtocolError::Size { cols, rows });
            }
        }
        Ok(msg)
    }
}

/// serde's message quotes what it could not take (a `type` of megabytes, say): the error sent
/// back keeps its start.
fn shortened(mut message: String) -> String {
    const MAX: usize = 200;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Server to client, in text frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Always first. `offset` is the offset of the next terminal byte the client gets.
    Hello {
        offset: u64,
        cols: u16,
        rows: u16,
        readonly: bool,
        /// Id of this terminal's byte stream; offsets are only valid within one stream.
        stream: String,
        /// Most unacknowledged bytes once the client sends acks.
        window: u64,
    },
    /// Bytes `from..to` were lost (evicted before this client read them); the stream goes on
    /// at `to`.
    Skipped { from: u64, to: u64 },
    /// The shell exited and a new one was started; its output begins at `offset`.
    Restarted { offset: u64 },
    /// The PTY's window size changed (another viewer became the active one, or this one).
    Resized { cols: u16, rows: u16 },
    /// A message or input was refused; the connection and the shell go on.
    Error { message: String },
    /// The terminal was closed for good; a WebSocket close follows. Do not reconnect.
    Closed { reason: String },
    /// The answer to a `ping`.
    Pong,
}

impl ServerMessage {
    /// The text frame for this message.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","message":"serialise a control message: {e}"}}"#)
        })
    }

    /// A refusal.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

/// Query parameters of `GET .../terminal`, for the server's query extractor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TerminalQuery {
    /// Resume offset: the client has every byte before it.
    pub since: Option<u64>,
    /// Watch only (`readonly=1`, `readonly=true` or a bare `readonly`).
    #[serde(default, deserialize_with = "flag")]
    pub readonly: bool,
    /// The stream id from a previous hello; `since` is ignored if it names another stream.
    pub stream: Option<String>,
    /// Which of the node's terminals (a node may have several shells); the server's default
    /// when absent.
    pub name: Option<String>,
}

impl TerminalQuery {
    /// The offset to resume from in the stream `stream_id`: `since`, unless the client named a
    /// different stream (its offsets mean nothing here).
    pub fn since_in(&self, stream_id: &str) -> Option<u64> {
        match &self.stream {
            Some(s) if s != stream_id => None,
            _ => self.since,
        }
    }
}

/// `1`, `true`, `yes`, or empty (a bare key) are true; `0`, `false`, `no` are false.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    match s.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "expected 1 or 0 (or true or false), got {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quote_at_most_the_start_of_a_huge_message() {
        let huge = format!(r#"{{"type":"{}"}}"#, "é".repeat(1 << 20));
        match ClientMessage::parse(&huge) {
            Err(ProtocolError::Malformed(m)) => {
                assert!(m.len() <= 204, "{} bytes", m.len());
                assert!(m.starts_with("unknown variant"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"resize","cols":120,"rows":40}"#),
            Ok(ClientMessage::Resize {
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"rows":1,"type":"resize","cols":1000}"#),
            Ok(ClientMessage::Resize {
                cols: 1000,
                rows: 1
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping {})
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ack","offset":123456789012}"#),
            Ok(ClientMessage::Ack {
                offset: 123_456_789_012
            })
        );
    }

    #[test]
    fn validates_sizes() {
        for (cols, rows) in [(0, 10), (10, 0), (1001, 10), (10, 1001)] {
            let text = format!(r#"{{"type":"resize","cols":{cols},"rows":{rows}}}"#);
            assert_eq!(
                ClientMessage::parse(&text),
                Err(ProtocolError::Size { cols, rows })
            );
        }
        assert_eq!(
            ProtocolError::Size { cols: 0, rows: 5 }.to_string(),
            "window size 0x5 is outside 1..=1000 columns and rows"
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        for text in [
            "",
            "resize",
            "[]",
            r#"{"cols":80,"rows":24}"#,
            r#"{"type":"nope"}"#,
            r#"{"type":"Resize","cols":80,"rows":24}"#,
            r#"{"type":"resize","cols":80}"#,
            r#"{"type":"resize","cols":80,"rows":24,"extra":1}"#,
            r#"{"type":"resize","cols":-1,"rows":24}"#,
            r#"{"type":"resize","cols":70000,"rows":24}"#,
            r#"{"type":"resize","cols":"80","rows":24}"#,
            r#"{"type":"ping","extra":true}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","offset":-5}"#,
            r#"{"type":"ping"} trailing"#,
        ] {
            match ClientMessage::parse(text) {
                Err(ProtocolError::Malformed(m)) => assert!(!m.is_empty()),
                other => panic!("{text:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let cases = [
            (
                ServerMessage::Hello {
                    offset: 5,
                    cols: 80,
                    rows: 24,
                    readonly: false,
                    stream: "ab12".into(),
                    window: 1_048_576,
                },
                r#"{"type":"hello","offset":5,"cols":80,"rows":24,"readonly":false,"stream":"ab12","window":1048576}"#,
            ),
            (
                ServerMessage::Skipped { from: 1, to: 9 },
                r#"{"type":"skipped","from":1,"to":9}"#,
            ),
            (
                ServerMessage::Restarted { offset: 42 },
                r#"{"type":"restarted","offset":42}"#,
            ),
            (
                ServerMessage::Resized {
                    cols: 100,
                    rows: 30,
                },
                r#"{"type":"resized","cols":100,"rows":30}"#,
            ),
            (
                ServerMessage::error("no"),
                r#"{"type":"error","message":"no"}"#,
            ),
            (
                ServerMessage::Closed {
                    reason: "node deleted".into(),
                },
                r#"{"type":"closed","reason":"node deleted"}"#,
            ),
            (ServerMessage::Pong, r#"{"type":"pong"}"#),
        ];
        for (msg, json) in cases {
            assert_eq!(msg.to_json(), json);
            assert_eq!(serde_json::from_str::<ServerMessage>(json).unwrap(), msg);
        }
    }

    fn query(q: &str) -> Result<TerminalQuery, serde_urlencoded::de::Error> {
        serde_urlencoded::from_str(q)
    }

    #[test]
    fn parses_query_parameters() {
        assert_eq!(query("").unwrap(), TerminalQuery::default());
        let q = query("since=1234&readonly=1&stream=abc&name=build").unwrap();
        assert_eq!(
            q,
            TerminalQuery {
                since: Some(1234),
                readonly: true,
                stream: Some("abc".into()),
                name: Some("build".into()),
            }
        );
        for (text, readonly) in [
            ("readonly=1", true),
            ("readonly=true", true),
            ("readonly", true),
            ("readonly=0", false),
            ("readonly=false", false),
        ] {
            assert_eq!(query(text).unwrap().readonly, readonly, "{text}");
        }
        assert!(query("readonly=maybe").is_err());
        assert!(query("since=-1").is_err());
        assert!(query("since=abc").is_err());
        // Unknown parameters (cache busters) are ignored.
        assert_eq!(query("t=5").unwrap(), TerminalQuery::default());
    }

    #[test]
    fn since_only_applies_to_its_own_stream() {
        let q = query("since=10&stream=abc").unwrap();
        assert_eq!(q.since_in("abc"), Some(10));
        assert_eq!(q.since_in("other"), None);
        assert_eq!(query("since=10").unwrap().since_in("any"), Some(10));
        assert_eq!(query("stream=abc").unwrap().since_in("abc"), None);
    }
}
