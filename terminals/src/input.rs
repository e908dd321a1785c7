//! The input queue: what viewers typed or pasted, on its way to the shell.
//!
//! Every viewer's input goes through one bounded queue, so concurrent viewers' messages are
//! serialised and each stays whole: a writer holds the queue while it queues its pieces, so no
//! other writer's piece comes in between. The queue is bounded in bytes by counting pieces of at
//! most [`INPUT_PIECE`]; a writer waits while it is full, which is how a large paste waits for a
//! slow shell instead of being dropped. The writer task (`shell.rs`) takes the pieces in order
//! and writes each one to the shell as fast as the line discipline accepts it.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Input is queued in pieces of at most this size, so the queue is bounded in bytes.
pub(crate) const INPUT_PIECE: usize = 64 << 10;

/// The sending side of a terminal's input queue.
pub(crate) struct InputQueue {
    queue: tokio::sync::Mutex<mpsc::Sender<Bytes>>,
}

impl InputQueue {
    /// A queue holding at most `bytes` (rounded down to whole pieces, at least one), and the
    /// receiver for the writer task.
    pub(crate) fn new(bytes: usize) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel((bytes / INPUT_PIECE).max(1));
        let queue = Self {
            queue: tokio::sync::Mutex::new(tx),
        };
        (queue, rx)
    }

    /// Queues `data` in pieces, none of another writer's in between; waits while the queue is
    /// full. Fails once the writer task is gone (the terminal closed).
    pub(crate) async fn send(&self, mut data: Bytes) -> Result<(), mpsc::error::SendError<Bytes>> {
        let queue = self.queue.lock().await;
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(INPUT_PIECE));
            queue.send(piece).await?;
        }
        Ok(())
    }
}
