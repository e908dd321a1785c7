//! One terminal on a host bash, served over WebSocket on loopback: the pump and the terminal
//! without the rest of sandpit, for `shared/tools/termbench` and for trying a client.
//!
//! ```sh
//! cargo run --release -p terminals --example host_terminal -- 127.0.0.1:7681
//! python3 termbench.py --proto raw --url ws://127.0.0.1:7681/terminal --wait-hello \
//!     --server-pid <printed pid> --label sandpit
//! ```
//!
//! With `--keep-output` after the address the terminal keeps a copy of its output for a next
//! server as node terminals do (`TerminalOptions::keep_output`), to measure what that costs.
//!
//! It runs a shell on the host: never expose it beyond loopback.

#[path = "../tests/common/shell.rs"]
mod shell;
#[path = "../tests/common/ws.rs"]
mod ws;

use std::sync::{Arc, Mutex};

use terminals::{pump, PumpOptions, Terminal, TerminalOptions, TerminalQuery};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7681".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    if !listener.local_addr()?.ip().is_loopback() {
        return Err("listen on a loopback address only".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("host-terminal-")
        .tempdir()?;
    let shell = shell::HostShell {
        dir: dir.path().to_owned(),
    };
    let opts = TerminalOptions {
        keep_output: std::env::args().nth(2).as_deref() == Some("--keep-output"),
        ..TerminalOptions::default()
    };
    let terminal = Terminal::start(shell, opts).await?;
    println!(
        "listening on ws://{}/terminal (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                stream.set_nodelay(true)?;
                tokio::spawn(serve(terminal.clone(), stream));
            }
        }
    }
    terminal.close("server stopped");
    terminal.closed().await;
    Ok(())
}

async fn serve(terminal: Terminal, stream: tokio::net::TcpStream) {
    let query = Arc::new(Mutex::new(String::new()));
    let seen = query.clone();
    // The error type is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        *seen.lock().unwrap() = req.uri().query().unwrap_or("").to_owned();
        Ok(resp)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let query = query.lock().unwrap().clone();
    let query: TerminalQuery = match serde_urlencoded::from_str(&query) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("bad query {query:?}: {e}");
            return;
        }
    };
    let viewer = match terminal.attach(query.since_in(terminal.id()), query.readonly) {
        Ok(viewer) => viewer,
        Err(e) => {
            eprintln!("viewer refused: {e}");
            return;
        }
    };
    let (sink, stream) = ws::frames(socket);
    let end = pump(viewer, sink, stream, &PumpOptions::default()).await;
    eprintln!("viewer left: {end:?}");
}
