//! Shells in nodes: a `terminals::Terminal` on the server's `NodeShell` over the real runtime, driven through a viewer
//! as the WebSocket pump drives it. The PTY comes from the node's own devpts (`tty` names it,
//! owned by root:tty inside), the size follows resizes, UTF-8 passes both ways, Ctrl-C
//! interrupts a flood at once, and a shell that exits is replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox::NodeInfo;
use sandpit::{NodeShell, SandboxRuntime};
use sandpit_tests::TestRuntime;
use terminals::{Output, Terminal, TerminalOptions, Viewer, ViewerInput, WinSize};

/// How long any single expected thing may take.
const PATIENCE: Duration = Duration::from_secs(30);

async fn start_terminal(t: &TestRuntime, node: &NodeInfo) -> Terminal {
    let runtime = Arc::new(SandboxRuntime::new(t.shared()));
    let spawner = NodeShell::new(runtime, &node.network, &node.hostname, "main");
    Terminal::start(spawner, TerminalOptions::default())
        .await
        .expect("start a terminal on the node")
}

/// A viewer that keeps what it saw.
struct Screen {
    viewer: Viewer,
    input: ViewerInput,
    /// Every byte received (nothing is skipped at these volumes but a flood's middle).
    seen: Vec<u8>,
    /// Where the next search starts.
    searched: usize,
    events: Vec<Output>,
}

static MARKERS: AtomicU64 = AtomicU64::new(1);

impl Screen {
    fn new(terminal: &Terminal) -> Self {
        let viewer = terminal.attach(None, false).expect("attach a viewer");
        let input = viewer.input();
        Self {
            viewer,
            input,
            seen: Vec::new(),
            searched: 0,
            events: Vec::new(),
        }
    }

    async fn recv(&mut self, deadline: Instant) {
        let out = tokio::time::timeout_at(deadline.into(), self.viewer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "nothing expected arrived in time; tail: {:?}",
                    String::from_utf8_lossy(&self.seen[self.seen.len().saturating_sub(600)..])
                )
            });
        match out {
            Output::Data(b) => self.seen.extend_from_slice(&b),
            Output::Closed { reason } => panic!("terminal closed: {reason}"),
            other => self.events.push(other),
        }
    }

    /// Reads until `needle` appears after the previous find; returns the index just past it.
    async fn wait_for(&mut self, needle: &[u8]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = find(&self.seen[self.searched..], needle) {
                self.searched += i + needle.len();
                return self.searched;
            }
            self.recv(deadline).await;
        }
    }

    async fn wait_event(&mut self, pred: impl Fn(&Output) -> bool) -> Output {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = self.events.iter().position(&pred) {
                return self.events.remove(i);
            }
            self.recv(deadline).await;
        }
    }

    async fn type_in(&self, text: &str) {
        self.input
            .write(bytes::Bytes::copy_from_slice(text.as_bytes()))
            .await
            .expect("input accepted");
    }

    /// Types `cmd` and returns what it printed, between two markers written as arithmetic so
    /// that the echo of the command line never matches them.
    async fn run(&mut self, cmd: &str) -> Vec<u8> {
        let n = MARKERS.fetch_add(2, Ordering::Relaxed);
        self.type_in(&format!("echo M$(({n}))M; {cmd}; echo M$(({}))M\r", n + 1))
            .await;
        let from = self.wait_for(format!("M{n}M\r\n").as_bytes()).await;
        let end = format!("M{}M\r\n", n + 1);
        let to = self.wait_for(end.as_bytes()).await - end.len();
        self.seen[from..to].to_vec()
    }

    async fn run_text(&mut self, cmd: &str) -> String {
        let out = self.run(cmd).await;
        String::from_utf8(out).expect("utf-8 output")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `/dev/pts/<n>\r\n`.
fn is_pts_line(s: &str) -> bool {
    s.strip_prefix("/dev/pts/")
        .and_then(|r| r.strip_suffix("\r\n"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shell_is_a_real_terminal() {
    let t = TestRuntime::new().await;
    let nodes = t.session("sh", 1).await;
    let terminal = start_terminal(&t, &nodes[0]).await;
    let mut screen = Screen::new(&terminal);

    // The node's own devpts, the slave owned by root:tty inside, and a session with job
    // control (bash says "no job control" when its stdin is not its controlling terminal).
    let tty = screen.run_text("tty").await;
    assert!(is_pts_line(&tty), "tty printed {tty:?}");
    // (Mode 600, not devpts' 620: root's .profile says `mesg n`, as on any Debian.)
    let owner = screen.run_text("stat -c %U:%G $(tty)").await;
    assert_eq!(owner, "root:tty\r\n");
    // Jobs start with no signal ignored (the server's ignored SIGPIPE is not inherited).
    let ignored = screen
        .run_text("awk '/^SigIgn/ { print $2 }' /proc/self/status")
        .await;
    assert_eq!(ignored, "0000000000000000\r\n");
    let whoami = screen.run_text("id -un; pwd; echo $TERM; echo $LANG").await;
    assert_eq!(whoami, "root\r\n/root\r\nxterm-256color\r\nC.UTF-8\r\n");
    let seen = String::from_utf8_lossy(&screen.seen).into_owned();
    assert!(!seen.contains("job control"), "{seen}");
    let sid = screen.run_text("ps -o sid= -p $$; echo $$").await;
    let ids: Vec<&str> = sid.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{sid:?}");
    assert_eq!(ids[0], ids[1], "the shell leads its session");

    // The size at start, then after a resize.
    assert_eq!(screen.run_text("stty size").await, "24 80\r\n");
    screen
        .input
        .resize(WinSize {
            cols: 132,
            rows: 43,
        })
        .unwrap();
    screen
        .wait_event(|o| {
            matches!(
                o,
                Output::Resized(WinSize {
                    cols: 132,
                    rows: 43
                })
            )
        })
        .await;
    assert_eq!(screen.run_text("stty size").await, "43 132\r\n");

    // UTF-8 both ways: typed into readline and printed back, and made by printf.
    let typed = screen.run_text("printf '%s\\n' 'é€😀'").await;
    assert_eq!(typed, "é€😀\r\n");
    let made = screen
        .run("printf '\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80\\n'")
        .await;
    assert_eq!(made, "é€😀\r\n".as_bytes());

    // Ctrl-C during a flood: `yes` dies of SIGINT and the prompt comes back.
    screen.type_in("yes\r").await;
    screen.wait_for(b"y\r\ny\r\ny\r\ny\r\n").await;
    let pressed = Instant::now();
    screen.type_in("\x03").await;
    screen.type_in("echo X$?X\r").await;
    screen.wait_for(b"X130X\r\n").await;
    eprintln!("ctrl-c to prompt: {:?}", pressed.elapsed());
    // Memory of the flood is not needed any more.
    screen.seen.drain(..screen.searched);
    screen.searched = 0;

    // Exiting the shell starts a new one, announced in the stream and as an event.
    let before = screen.run_text("echo $$").await;
    screen.type_in("exit\r").await;
    screen
        .wait_for(b"[shell exited (exit status: 0); starting a new shell]")
        .await;
    screen
        .wait_event(|o| matches!(o, Output::Restarted { .. }))
        .await;
    let after = screen.run_text("echo $$").await;
    assert_ne!(before, after, "a new shell");
    let tty = screen.run_text("tty").await;
    assert!(is_pts_line(&tty), "tty printed {tty:?} in the new shell");
    assert_eq!(terminal.restarts(), 1);

    // Closing hangs the shell up and reaps it.
    terminal.close("test over");
    tokio::time::timeout(PATIENCE, terminal.closed())
        .await
        .expect("the shell is reaped after close");
    drop(screen);
    drop(terminal);
    t.finish().await;
}

/// Rootful nodes map no ids: the PTY belongs to host root and the tty group directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rootful_node_shell_owns_its_terminal() {
    let t = TestRuntime::with(|c| c.isolation = sandbox::Isolation::Rootful).await;
    let nodes = t.session("shr", 1).await;
    let terminal = start_terminal(&t, &nodes[0]).await;
    let mut screen = Screen::new(&terminal);
    let tty = screen.run_text("tty").await;
    assert!(is_pts_line(&tty), "tty printed {tty:?}");
    let owner = screen.run_text("stat -c %U:%G $(tty)").await;
    assert_eq!(owner, "root:tty\r\n");
    terminal.close("test over");
    tokio::time::timeout(PATIENCE, terminal.closed())
        .await
        .expect("the shell is reaped after close");
    drop(screen);
    drop(terminal);
    t.finish().await;
}
