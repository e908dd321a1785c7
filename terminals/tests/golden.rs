//! The terminal protocol's golden examples, `web/golden/terminal.json`: one message of every
//! variant of [`ServerMessage`] and [`ClientMessage`], serialised from the real types. The
//! page's mirror (`web/src/protocol.ts`) is checked against the same file by `web/build`, so
//! a change on either side that the other does not follow fails one of the two checks.
//!
//! `SANDPIT_UPDATE_GOLDEN=1 cargo test -p terminals --test golden` rewrites the file after a
//! deliberate change of the protocol; then update `web/src/protocol.ts` to match.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use terminals::{ClientMessage, ServerMessage};

/// One example of every server message. The match in `server_variant` has no wildcard, so a
/// new variant does not compile until it has an example here.
fn server_examples() -> Vec<ServerMessage> {
    vec![
        ServerMessage::Hello {
            offset: 5,
            cols: 80,
            rows: 24,
            readonly: false,
            stream: "9f86d081884c7d65".into(),
            window: 1_048_576,
        },
        ServerMessage::Skipped {
            from: 1024,
            to: 4096,
        },
        ServerMessage::Restarted { offset: 8192 },
        ServerMessage::Resized {
            cols: 120,
            rows: 40,
        },
        ServerMessage::error("window size 0x5 is outside 1..=1000 columns and rows"),
        ServerMessage::Closed {
            reason: "node deleted".into(),
        },
        ServerMessage::Pong,
    ]
}

fn server_variant(m: &ServerMessage) -> &'static str {
    match m {
        ServerMessage::Hello { .. } => "hello",
        ServerMessage::Skipped { .. } => "skipped",
        ServerMessage::Restarted { .. } => "restarted",
        ServerMessage::Resized { .. } => "resized",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Closed { .. } => "closed",
        ServerMessage::Pong => "pong",
    }
}

/// The arms of `server_variant`.
const SERVER_VARIANTS: usize = 7;

/// One example of every client message; `client_variant` keeps the list complete.
fn client_examples() -> Vec<ClientMessage> {
    vec![
        ClientMessage::Resize {
            cols: 120,
            rows: 40,
        },
        ClientMessage::Ack { offset: 65_536 },
        ClientMessage::Ping {},
    ]
}

fn client_variant(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Resize { .. } => "resize",
        ClientMessage::Ack { .. } => "ack",
        ClientMessage::Ping {} => "ping",
    }
}

/// The arms of `client_variant`.
const CLIENT_VARIANTS: usize = 3;

fn json(m: &impl serde::Serialize) -> Value {
    serde_json::to_value(m).expect("a control message serialises")
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/golden/terminal.json")
}

/// The file's text: type names of `web/src/protocol.ts` to examples, pretty, sorted keys.
fn golden_text() -> String {
    let server = server_examples();
    let client = client_examples();
    let names: BTreeSet<_> = server.iter().map(server_variant).collect();
    assert_eq!(
        names.len(),
        SERVER_VARIANTS,
        "one example per server message"
    );
    let names: BTreeSet<_> = client.iter().map(client_variant).collect();
    assert_eq!(
        names.len(),
        CLIENT_VARIANTS,
        "one example per client message"
    );

    let golden = BTreeMap::from([
        ("ServerMessage", server.iter().map(json).collect::<Vec<_>>()),
        ("ClientMessage", client.iter().map(json).collect()),
    ]);
    serde_json::to_string_pretty(&golden).unwrap() + "\n"
}

#[test]
fn terminal_protocol_matches_the_golden_file() {
    let path = golden_path();
    let want = golden_text();
    if std::env::var_os("SANDPIT_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; run `SANDPIT_UPDATE_GOLDEN=1 cargo test -p terminals --test golden`",
            path.display()
        )
    });
    if have != want {
        let (line, (file, types)) = have
            .lines()
            .chain(std::iter::repeat(""))
            .zip(want.lines().chain(std::iter::repeat("")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .expect("texts that differ have a line that differs");
        panic!(
            "web/golden/terminal.json is not what the terminal protocol \
             (terminals/src/protocol.rs) sends; first difference at line {}:\n  \
             file:  {file}\n  types: {types}\n\
             If the protocol changed on purpose, run `SANDPIT_UPDATE_GOLDEN=1 cargo test -p \
             terminals --test golden`, then update web/src/protocol.ts to match (web/build \
             checks it against the file) and docs/protocol.md.",
            line + 1
        );
    }
}

/// What the page sends must be accepted by the server: every client example parses (strictly,
/// sizes checked) back into the message it came from. (The examples are the file's: the test
/// above holds the two equal.)
#[test]
fn client_examples_are_accepted() {
    let golden: BTreeMap<String, Vec<Value>> = serde_json::from_str(&golden_text()).unwrap();
    let examples = &golden["ClientMessage"];
    assert_eq!(examples.len(), client_examples().len());
    for (value, message) in examples.iter().zip(client_examples()) {
        let parsed = ClientMessage::parse(&value.to_string())
            .unwrap_or_else(|e| panic!("the server refuses the example {value}: {e}"));
        assert_eq!(parsed, message);
    }
    for value in &golden["ServerMessage"] {
        let parsed: ServerMessage = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(json(&parsed), *value);
    }
}
