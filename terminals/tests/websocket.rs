//! The terminal end to end: a real bash on a real PTY, the pump over real WebSockets on
//! loopback, typed clients that check the offset arithmetic of everything they receive.

mod common;

use std::time::Duration;

use common::{find, markers, seq_output, Client, Event, TestServer, PATIENCE};
use terminals::{PumpEnd, PumpError, PumpOptions, ServerMessage, TerminalOptions, WinSize};

#[tokio::test]
async fn typed_input_is_echoed_and_run() {
    let server = TestServer::start().await;
    let mut c = server.connect("").await;
    let ServerMessage::Hello {
        offset,
        cols,
        rows,
        readonly,
        ref stream,
        window,
    } = c.hello
    else {
        unreachable!()
    };
    assert_eq!((offset, cols, rows, readonly), (0, 80, 24, false));
    assert_eq!(stream, server.terminal.id());
    assert_eq!(window, PumpOptions::default().ack_window);
    c.send_bytes(b"echo hello-$((6*7))\r").await;
    // The echo of the input, then the command's output.
    c.wait_for(b"echo hello-$((6*7))").await;
    c.wait_for(b"hello-42\r\n").await;
    assert_eq!(server.terminal.viewers(), 1);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn multibyte_utf8_is_intact_both_ways() {
    let server = TestServer::start().await;
    let mut c = server.connect("").await;
    let text = "héllo wörld € 😀 日本語";
    // Sent in pieces that split characters: input is bytes, not text.
    let line = format!("echo '{text}'\r");
    for piece in line.as_bytes().chunks(3) {
        c.send_bytes(piece).await;
    }
    c.wait_for(format!("echo '{text}'").as_bytes()).await;
    c.wait_for(format!("{text}\r\n").as_bytes()).await;
    // Output with many multi-byte characters, crossing read and frame boundaries.
    let out = c.run("printf '€😀é%.0s' {1..20000}; echo").await;
    assert_eq!(out, format!("{}\r\n", "€😀é".repeat(20000)));
    server.shutdown().await;
}

/// Options under which a reading test client (a debug build, sharing two cores with bash, the
/// server and other tests) stays well within the ring: the reader is not paced by viewers, so
/// a viewer that falls more than the ring behind is skipped ahead, by design.
fn keeping_up() -> TerminalOptions {
    TerminalOptions {
        ring_bytes: TerminalOptions::MAX_RING_BYTES,
        read_bytes_per_sec: 16 << 20,
        ..TerminalOptions::default()
    }
}

#[tokio::test]
async fn twenty_mib_of_output_arrive_complete_and_in_order() {
    let server = TestServer::start_with(keeping_up(), PumpOptions::default()).await;
    let mut c = server.connect("").await;
    let n = 2_800_000;
    let expected = seq_output(n);
    assert!(expected.len() > 20 << 20);
    let (start, end) = markers();
    // Without onlcr the PTY passes `\n` through, so the output is byte-for-byte `seq`'s.
    let cmd = format!(
        "stty -onlcr; echo {}; seq 1 {n}; echo {}; stty onlcr\r",
        start.typed, end.typed
    );
    c.send_bytes(cmd.as_bytes()).await;
    let from = c
        .wait_for(start.printed.replace("\r\n", "\n").as_bytes())
        .await;
    let end_printed = end.printed.replace("\r\n", "\n");
    let to = c.wait_for(end_printed.as_bytes()).await - end_printed.len();
    assert_eq!(to - from, expected.len(), "length of the output");
    assert!(
        c.seen[from..to] == expected[..],
        "output differs from seq's"
    );
    assert!(
        !c.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Skipped { .. })),
        "a reading viewer is never skipped"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn two_viewers_get_identical_bytes() {
    let server = TestServer::start().await;
    let mut a = server.connect("since=0").await;
    let mut b = server.connect("since=0").await;
    assert_eq!(server.terminal.viewers(), 2);
    let (_, end) = markers();
    let cmd = format!("seq 1 100000; echo {}\r", end.typed);
    a.send_bytes(cmd.as_bytes()).await;
    let ea = a.wait_for(end.printed.as_bytes()).await;
    let eb = b.wait_for(end.printed.as_bytes()).await;
    assert_eq!(a.start, b.start);
    assert_eq!(ea, eb);
    assert!(a.seen[..ea] == b.seen[..eb]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_late_viewer_gets_the_scrollback() {
    let server = TestServer::start().await;
    let mut a = server.connect("").await;
    let out = a.run("echo early-$((2+3))").await;
    assert_eq!(out, "early-5\r\n");
    let mut late = server.connect("").await;
    assert_eq!(late.hello_offset(), 0, "the ring still has everything");
    // Nothing new is typed: the replay alone contains the earlier output.
    late.wait_for(b"\r\nearly-5\r\n").await;
    // Up to where `a` has seen, the late viewer's bytes are the same.
    let n = a.seen.len().min(late.seen.len());
    assert_eq!(a.seen[..n], late.seen[..n]);
    server.shutdown().await;
}

#[tokio::test]
async fn reconnect_with_since_has_no_gap_and_no_duplicate() {
    let server = TestServer::start().await;
    let mut witness = server.connect("since=0").await;
    let mut a = server.connect("since=0").await;
    let (_, end) = markers();
    let cmd = format!("seq 1 150000; echo {}\r", end.typed);
    a.send_bytes(cmd.as_bytes()).await;
    // Leave in the middle of the output.
    while a.seen.len() < 100_000 {
        a.recv().await.expect("output");
    }
    let resume = a.offset;
    let first_part = std::mem::take(&mut a.seen);
    a.close().await;
    let mut a2 = server
        .connect(&format!("since={resume}&stream={}", server.terminal.id()))
        .await;
    assert_eq!(a2.hello_offset(), resume);
    let e2 = a2.wait_for(end.printed.as_bytes()).await;
    let ew = witness.wait_for(end.printed.as_bytes()).await;
    let mut joined = first_part;
    joined.extend_from_slice(&a2.seen[..e2]);
    assert_eq!(joined.len(), ew, "no gap, no duplicate");
    assert!(joined == witness.seen[..ew]);
    assert!(!a2.messages.iter().any(|m| matches!(
        m,
        ServerMessage::Error { .. } | ServerMessage::Skipped { .. }
    )));
    server.shutdown().await;
}

#[tokio::test]
async fn a_stale_stream_id_replays_instead_of_resuming() {
    let server = TestServer::start().await;
    let mut a = server.connect("").await;
    a.run("echo x").await;
    let c = server.connect("since=5&stream=0123456789abcdef").await;
    assert_eq!(c.hello_offset(), 0, "offsets of another stream are ignored");
    server.shutdown().await;
}

#[tokio::test]
async fn input_is_written_exactly_once_across_a_reconnect() {
    let server = TestServer::start().await;
    let mut a = server.connect("").await;
    for i in 0..50 {
        a.send_bytes(format!("echo a{i} >> log\r").as_bytes()).await;
    }
    let resume = a.offset;
    a.close().await;
    let mut b = server.connect(&format!("since={resume}")).await;
    for i in 0..50 {
        b.send_bytes(format!("echo b{i} >> log\r").as_bytes()).await;
    }
    let out = b.run("cat log").await;
    let want: String = (0..50)
        .map(|i| format!("a{i}\r\n"))
        .chain((0..50).map(|i| format!("b{i}\r\n")))
        .collect();
    assert_eq!(out, want);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_viewer_does_not_slow_another() {
    let server = TestServer::start_with(keeping_up(), PumpOptions::default()).await;
    let mut fast = server.connect("").await;
    // A small receive buffer, so the stalled viewer's pump really blocks on its socket.
    let slow = Client::connect(&server.url(""), Some(16 << 10)).await;
    let (fast_done_tx, fast_done_rx) = tokio::sync::oneshot::channel::<()>();
    let (start, end) = markers();
    let n = 2_800_000;
    let cmd = format!(
        "stty -onlcr; echo {}; seq 1 {n}; echo {}; stty onlcr\r",
        start.typed, end.typed
    );
    let end_printed = end.printed.replace("\r\n", "\n");
    let stalled = tokio::spawn(async move {
        // Read nothing for at least ten seconds and until the fast viewer is done.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let fast_finished_first = tokio::time::timeout(PATIENCE, fast_done_rx).await.is_ok();
        (slow, fast_finished_first)
    });
    fast.send_bytes(cmd.as_bytes()).await;
    let from = fast
        .wait_for(start.printed.replace("\r\n", "\n").as_bytes())
        .await;
    let to = fast.wait_for(end_printed.as_bytes()).await - end_printed.len();
    assert!(fast.seen[from..to] == seq_output(n)[..]);
    assert!(!fast
        .messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Skipped { .. })));
    fast_done_tx.send(()).unwrap();
    let (mut slow, fast_finished_first) = stalled.await.unwrap();
    assert!(
        fast_finished_first,
        "the fast viewer finished while the other was stalled"
    );
    // The stalled viewer catches up, skipping what left the ring meanwhile.
    slow.wait_for(end_printed.as_bytes()).await;
    let skipped: u64 = slow
        .messages
        .iter()
        .map(|m| match m {
            ServerMessage::Skipped { from, to } => to - from,
            _ => 0,
        })
        .sum();
    assert_eq!(
        slow.seen.len() as u64 + skipped,
        slow.offset - slow.start,
        "offsets add up"
    );
    assert!(
        skipped > 0,
        "20 MiB do not fit in the ring and a 16 KiB socket"
    );
    // What it got after its last skip is the same stream the fast viewer got there.
    let (offset, index) = *slow.skips.last().unwrap();
    let in_fast = (offset - fast.start) as usize;
    let n = (slow.seen.len() - index).min(fast.seen.len() - in_fast);
    assert!(n > 0);
    assert!(slow.seen[index..index + n] == fast.seen[in_fast..in_fast + n]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_one_mib_paste_arrives_byte_for_byte() {
    let server = TestServer::start().await;
    let mut c = server.connect("").await;
    // Printable lines (a canonical-mode tty takes at most 4095 bytes per line).
    let mut paste = Vec::with_capacity(1 << 20);
    let mut x: u32 = 12345;
    while paste.len() < 1 << 20 {
        for _ in 0..99 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            paste.push(b'!' + ((x >> 16) % 94) as u8);
        }
        paste.push(b'\n');
    }
    std::fs::write(server.dir.path().join("expected"), &paste).unwrap();
    // Once the marker is printed bash has handed the tty to cat, so the paste goes to cat.
    let (start, _) = markers();
    c.send_bytes(format!("echo {}; cat > got\r", start.typed).as_bytes())
        .await;
    c.wait_for(start.printed.as_bytes()).await;
    c.send_bytes(&paste).await;
    c.send_bytes(b"\x04").await;
    let out = c
        .run("wc -c < got; cmp got expected && echo same-$((1+1))")
        .await;
    assert_eq!(out, format!("{}\r\nsame-2\r\n", paste.len()));
    server.shutdown().await;
}

#[tokio::test]
async fn resize_follows_the_most_recently_active_viewer() {
    let server = TestServer::start().await;
    let mut a = server.connect("").await;
    let mut b = server.connect("").await;
    assert_eq!(a.run("stty size").await, "24 80\r\n");
    a.send_text(r#"{"type":"resize","cols":100,"rows":30}"#)
        .await;
    a.wait_msg(|m| {
        *m == ServerMessage::Resized {
            cols: 100,
            rows: 30,
        }
    })
    .await;
    assert_eq!(a.run("stty size").await, "30 100\r\n");
    b.send_text(r#"{"type":"resize","cols":90,"rows":20}"#)
        .await;
    b.wait_msg(|m| *m == ServerMessage::Resized { cols: 90, rows: 20 })
        .await;
    assert_eq!(server.terminal.size(), WinSize { cols: 90, rows: 20 });
    // Typing makes `a` the active viewer again: its size comes back.
    assert_eq!(a.run("stty size").await, "30 100\r\n");
    assert_eq!(b.run("stty size").await, "20 90\r\n");
    // Every viewer hears about every change.
    a.wait_msg(|m| *m == ServerMessage::Resized { cols: 90, rows: 20 })
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_read_only_viewer_watches_but_cannot_type_or_resize() {
    let server = TestServer::start().await;
    let mut w = server.connect("").await;
    let mut r = server.connect("readonly=1").await;
    assert!(matches!(
        r.hello,
        ServerMessage::Hello { readonly: true, .. }
    ));
    r.send_bytes(b"touch ro-file\r").await;
    let err = r
        .wait_msg(|m| matches!(m, ServerMessage::Error { .. }))
        .await;
    assert_eq!(
        err,
        ServerMessage::error("this viewer is read-only: input ignored")
    );
    r.send_text(r#"{"type":"resize","cols":50,"rows":10}"#)
        .await;
    r.wait_msg(|m| *m == ServerMessage::error("this viewer is read-only: resize ignored"))
        .await;
    let out = w.run("test -e ro-file && echo yes || echo no").await;
    assert_eq!(out, "no\r\n");
    assert_eq!(server.terminal.size(), WinSize::default());
    // It still sees everything.
    r.wait_for(b"\r\nno\r\n").await;
    server.shutdown().await;
}

#[tokio::test]
async fn attach_refuses_a_viewer_over_the_limit_in_one_step() {
    let opts = TerminalOptions {
        max_viewers: 3,
        ..TerminalOptions::default()
    };
    let server = TestServer::start_with(opts, PumpOptions::default()).await;
    let terminal = &server.terminal;
    // Attaches racing on both cores: exactly the limit get in.
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let terminal = terminal.clone();
            tokio::task::spawn_blocking(move || terminal.attach(None, false))
        })
        .collect();
    let mut viewers = Vec::new();
    let mut refusals = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("attach task") {
            Ok(viewer) => viewers.push(viewer),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    assert_eq!((viewers.len(), refusals.len()), (3, 13));
    assert!(refusals
        .iter()
        .all(|e| e == "this terminal already has 3 viewers"));
    assert_eq!(terminal.viewers(), 3);
    // A viewer that leaves makes room for one more.
    viewers.pop();
    assert_eq!(terminal.viewers(), 2);
    let again = terminal.attach(None, true).expect("room for one");
    assert!(terminal.attach(None, true).is_err());
    drop((viewers, again));
    assert_eq!(terminal.viewers(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_control_messages_get_errors_and_the_shell_goes_on() {
    let server = TestServer::start().await;
    let mut c = server.connect("").await;
    let bad = [
        "not json",
        r#"{"type":"nope"}"#,
        r#"{"type":"resize","cols":0,"rows":24}"#,
        r#"{"type":"resize","cols":80,"rows":1001}"#,
        r#"{"type":"resize","cols":80,"rows":24,"extra":true}"#,
        r#"{"type":"ack","offset":999999999}"#,
    ];
    for text in bad {
        c.send_text(text).await;
    }
    let mut errors = Vec::new();
    while errors.len() < bad.len() {
        if let Some(Event::Msg(ServerMessage::Error { message })) = c.recv().await {
            errors.push(message);
        }
    }
    assert!(
        errors[0].starts_with("malformed control message"),
        "{errors:?}"
    );
    assert!(errors[1].contains("unknown variant"), "{errors:?}");
    assert!(errors[2].contains("outside 1..=1000"), "{errors:?}");
    assert!(errors[3].contains("outside 1..=1000"), "{errors:?}");
    assert!(errors[4].contains("unknown field"), "{errors:?}");
    assert!(
        errors[5].contains("beyond the last byte sent"),
        "{errors:?}"
    );
    c.send_text(r#"{"type":"ping"}"#).await;
    c.wait_msg(|m| *m == ServerMessage::Pong).await;
    assert_eq!(c.run("echo still-$((1))").await, "still-1\r\n");
    server.shutdown().await;
}

#[tokio::test]
async fn an_offset_ahead_of_the_stream_is_an_error_and_replays() {
    let server = TestServer::start().await;
    let mut a = server.connect("").await;
    a.run("echo before").await;
    let mut c = server.connect("since=1000000000000").await;
    assert_eq!(c.hello_offset(), 0);
    let err = c
        .wait_msg(|m| matches!(m, ServerMessage::Error { .. }))
        .await;
    let ServerMessage::Error { message } = err else {
        unreachable!()
    };
    assert!(
        message.contains("offset 1000000000000 is ahead of the stream"),
        "{message}"
    );
    c.wait_for(b"\r\nbefore\r\n").await;
    assert_eq!(c.run("echo after").await, "after\r\n");
    server.shutdown().await;
}

#[tokio::test]
async fn an_evicted_offset_is_reported_as_skipped() {
    let opts = TerminalOptions {
        ring_bytes: 1 << 20,
        ..TerminalOptions::default()
    };
    let server = TestServer::start_with(opts, PumpOptions::default()).await;
    let mut a = server.connect("").await;
    a.run("seq 1 500000 >/dev/null; head -c 3000000 /dev/zero | tr '\\0' x; echo")
        .await;
    let mut c = server.connect("since=10").await;
    assert_eq!(c.hello_offset(), 10);
    let skipped = c
        .wait_msg(|m| matches!(m, ServerMessage::Skipped { .. }))
        .await;
    let ServerMessage::Skipped { from, to } = skipped else {
        unreachable!()
    };
    assert_eq!(from, 10);
    let oldest_possible = server.terminal.offset() - (1 << 20);
    assert!(
        to >= oldest_possible,
        "skipped to the oldest kept byte, got {to}"
    );
    // No byte before the skip: the first data comes after it.
    assert!(c.seen.is_empty() || c.offset - c.seen.len() as u64 >= to);
    assert_eq!(c.run("echo fine").await, "fine\r\n");
    server.shutdown().await;
}

#[tokio::test]
async fn a_shell_that_exits_is_replaced_and_viewers_are_told() {
    let server = TestServer::start().await;
    let mut c = server.connect("").await;
    c.run("cd /").await;
    c.send_bytes(b"exit 3\r").await;
    let restarted = c
        .wait_msg(|m| matches!(m, ServerMessage::Restarted { .. }))
        .await;
    // The notice is in the stream, before the new shell's output.
    let notice = b"[shell exited (exit status: 3); starting a new shell]\r\n";
    let at = c.wait_for(notice).await;
    let ServerMessage::Restarted { offset } = restarted else {
        unreachable!()
    };
    assert_eq!(
        offset,
        c.offset_of(at),
        "the new shell's output starts after it"
    );
    // A new shell: back in its home directory, and it works.
    assert_eq!(
        c.run("pwd").await,
        format!("{}\r\n", server.dir.path().display())
    );
    assert_eq!(server.terminal.restarts(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn ctrl_c_stops_a_flood() {
    let server = TestServer::start().await;
    let mut c = server.connect("").await;
    c.send_bytes(b"yes\r").await;
    c.wait_for(b"y\r\ny\r\ny\r\ny\r\n").await;
    c.send_bytes(b"\x03").await;
    assert_eq!(c.run("echo stopped").await, "stopped\r\n");
    server.shutdown().await;
}

#[tokio::test]
async fn close_reaches_every_viewer() {
    let mut server = TestServer::start().await;
    let mut a = server.connect("").await;
    let mut b = server.connect("readonly=1").await;
    a.run("sleep 1000 & true").await;
    server.terminal.close("node deleted");
    for c in [&mut a, &mut b] {
        c.wait_msg(|m| {
            *m == ServerMessage::Closed {
                reason: "node deleted".into(),
            }
        })
        .await;
        assert_eq!(c.wait_close().await, Some((1001, "node deleted".into())));
    }
    tokio::time::timeout(PATIENCE, server.terminal.closed())
        .await
        .unwrap();
    for _ in 0..2 {
        let end = server.ends.recv().await.unwrap().unwrap();
        assert_eq!(end, PumpEnd::TerminalClosed("node deleted".into()));
    }
    assert_eq!(server.terminal.viewers(), 0);
    // A viewer that comes later learns at once.
    let mut late = server.connect("").await;
    late.wait_msg(|m| matches!(m, ServerMessage::Closed { .. }))
        .await;
}

#[tokio::test]
async fn acks_bound_what_is_in_flight() {
    let pump_opts = PumpOptions {
        ack_window: 64 << 10,
        ..PumpOptions::default()
    };
    let server = TestServer::start_with(TerminalOptions::default(), pump_opts).await;
    let mut c = server.connect("").await;
    let acked = c.offset;
    c.send_text(&format!(r#"{{"type":"ack","offset":{acked}}}"#))
        .await;
    let (_, end) = markers();
    c.send_bytes(format!("seq 1 100000; echo {}\r", end.typed).as_bytes())
        .await;
    // Without further acks the server stops at the window.
    while c.offset - acked < 64 << 10 {
        c.recv().await.expect("data up to the window");
    }
    let more = tokio::time::timeout(Duration::from_millis(500), c.recv()).await;
    assert!(more.is_err(), "nothing beyond the window: {more:?}");
    assert_eq!(c.offset - acked, 64 << 10);
    // Acking as it reads, the client gets the rest.
    let mut rest = 0;
    while find(&c.seen, end.printed.as_bytes()).is_none() {
        let ack = c.offset;
        c.send_text(&format!(r#"{{"type":"ack","offset":{ack}}}"#))
            .await;
        while c.offset == ack {
            c.recv().await.expect("more after an ack");
        }
        rest += 1;
    }
    assert!(rest > 5);
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_disconnected() {
    let pump_opts = PumpOptions {
        ping_interval: Duration::from_millis(200),
        ..PumpOptions::default()
    };
    let mut server = TestServer::start_with(TerminalOptions::default(), pump_opts).await;
    // tungstenite answers pings only while it is polled: this client is not.
    let mut c = server.connect("").await;
    let end = server.ends.recv().await.unwrap();
    assert!(matches!(end, Err(PumpError::PingTimeout(_))), "{end:?}");
    let close = c.wait_close().await;
    assert_eq!(close.map(|c| c.0), Some(1001));
    // A client that is polled answers and stays.
    let mut live = server.connect("").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::timeout_at(deadline, live.recv()).await.is_ok() {}
    assert_eq!(live.run("echo alive").await, "alive\r\n");
    server.shutdown().await;
}
