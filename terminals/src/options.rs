//! A terminal's tunables and limits, checked once when it starts.
//!
//! They bound what one terminal may cost the server: the ring is its memory for output, the
//! read rate its CPU during a flood, the input queue its memory for input, and the viewer limit
//! the connections (each holding at most one input message) that may share it.

use std::time::Duration;

use crate::input::INPUT_PIECE;
use crate::pty::READ_SIZE;
use crate::size::WinSize;

/// Tunables of one terminal.
#[derive(Clone, Debug)]
pub struct TerminalOptions {
    /// Output kept for scrollback and resume, 1-4 MiB.
    pub ring_bytes: usize,
    /// Most output read from the PTY per second; over it the shell's writes block.
    pub read_bytes_per_sec: u64,
    /// Window size of the first shell, until a viewer sets one.
    pub size: WinSize,
    /// Least time between two shell starts, so a shell that dies at once does not spin.
    pub restart_interval: Duration,
    /// Input queued for the shell before writers wait (in 64 KiB pieces).
    pub input_queue_bytes: usize,
    /// Viewers attached at once; [`Terminal::attach`](crate::Terminal::attach) refuses more.
    pub max_viewers: usize,
    /// Keep a copy of the output ring in a memfd that the spawner's holder keeps with the
    /// shell, so that a new server can take the terminal over ([`Terminal::adopt`](crate::Terminal::adopt)).
    pub keep_output: bool,
}

impl TerminalOptions {
    /// Smallest accepted ring.
    pub const MIN_RING_BYTES: usize = 1 << 20;
    /// Largest accepted ring.
    pub const MAX_RING_BYTES: usize = 4 << 20;
    /// Slowest accepted read rate (one full read per second).
    pub const MIN_READ_BYTES_PER_SEC: u64 = READ_SIZE as u64;

    pub(crate) fn validate(&self) -> Result<(), OptionsError> {
        if !(Self::MIN_RING_BYTES..=Self::MAX_RING_BYTES).contains(&self.ring_bytes) {
            return Err(OptionsError::RingSize(self.ring_bytes));
        }
        if self.read_bytes_per_sec < Self::MIN_READ_BYTES_PER_SEC {
            return Err(OptionsError::ReadRate(self.read_bytes_per_sec));
        }
        if !self.size.is_valid() {
            return Err(OptionsError::Size(self.size));
        }
        if self.input_queue_bytes < INPUT_PIECE {
            return Err(OptionsError::InputQueue(self.input_queue_bytes));
        }
        Ok(())
    }
}

impl Default for TerminalOptions {
    fn default() -> Self {
        Self {
            ring_bytes: crate::ring::DEFAULT_CAPACITY,
            read_bytes_per_sec: 64 << 20,
            size: WinSize::default(),
            restart_interval: Duration::from_secs(1),
            input_queue_bytes: 4 << 20,
            max_viewers: 64,
            keep_output: false,
        }
    }
}

/// Options a terminal refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "ring size {0} bytes is outside {min}..={max}",
        min = TerminalOptions::MIN_RING_BYTES,
        max = TerminalOptions::MAX_RING_BYTES
    )]
    RingSize(usize),
    #[error(
        "read rate {0} bytes/s is below {min}",
        min = TerminalOptions::MIN_READ_BYTES_PER_SEC
    )]
    ReadRate(u64),
    #[error("input queue of {0} bytes is below {min}", min = INPUT_PIECE)]
    InputQueue(usize),
    #[error("window size {}x{} is outside 1..=1000 columns and rows", .0.cols, .0.rows)]
    Size(WinSize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let ok = TerminalOptions::default();
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut TerminalOptions)| {
            let mut o = TerminalOptions::default();
            f(&mut o);
            o.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|o| o.ring_bytes = 5 << 20),
            "ring size 5242880 bytes is outside 1048576..=4194304"
        );
        assert_eq!(
            bad(|o| o.read_bytes_per_sec = 1000),
            "read rate 1000 bytes/s is below 65536"
        );
        assert_eq!(
            bad(|o| o.size = WinSize { cols: 0, rows: 5 }),
            "window size 0x5 is outside 1..=1000 columns and rows"
        );
        assert_eq!(
            bad(|o| o.input_queue_bytes = 10),
            "input queue of 10 bytes is below 65536"
        );
    }
}
