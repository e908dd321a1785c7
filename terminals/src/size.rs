//! The window size: what the PTY has, and whose size that is.
//!
//! The kernel keeps a window size per PTY (`TIOCSWINSZ`) and sends SIGWINCH to the shell's
//! foreground job when it changes; full-screen programs redraw for it. A shared shell has one
//! size but many viewers, each with a window of its own, so [`Window`] decides which applies.
//!
//! **Resize policy**: the PTY has the window size of the most recently active viewer, that is
//! the last one that sent input or a resize. A viewer's resize applies at once; input from a
//! viewer that is not the active one first applies that viewer's last requested size. When the
//! active viewer leaves, the size stays until another viewer acts.
//!
//! [`Window`] is pure bookkeeping; the terminal's shared state owns the one [`Window`] and
//! applies what it decides to the PTY of the running shell, under the same lock.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A terminal window size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub cols: u16,
    pub rows: u16,
}

impl WinSize {
    /// The largest accepted number of columns or rows.
    pub const MAX: u16 = 1000;

    /// Whether both dimensions are within `1..=1000`.
    pub fn is_valid(self) -> bool {
        (1..=Self::MAX).contains(&self.cols) && (1..=Self::MAX).contains(&self.rows)
    }
}

impl Default for WinSize {
    fn default() -> Self {
        Self { cols: 80, rows: 24 }
    }
}

/// The terminal's window size and the viewers' requests that decide it.
#[derive(Debug)]
pub(crate) struct Window {
    size: WinSize,
    /// Bumped on every change, so viewers notice one.
    seq: u64,
    /// The viewer whose size the PTY follows.
    active: Option<u64>,
    /// The size each attached viewer last asked for.
    requested: HashMap<u64, WinSize>,
}

impl Window {
    pub(crate) fn new(size: WinSize) -> Self {
        Self {
            size,
            seq: 0,
            active: None,
            requested: HashMap::new(),
        }
    }

    /// The size the PTY has (or gets when the next shell starts).
    pub(crate) fn size(&self) -> WinSize {
        self.size
    }

    /// Counts size changes.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// `viewer` sent input: it becomes the active viewer. Returns the new size when that
    /// changes the PTY's (to the size it last asked for).
    pub(crate) fn activate(&mut self, viewer: u64) -> Option<WinSize> {
        if self.active == Some(viewer) {
            return None;
        }
        self.active = Some(viewer);
        let size = *self.requested.get(&viewer)?;
        self.set(size)
    }

    /// `viewer` asked for `size` (valid): it becomes the active viewer and its size applies.
    /// Returns the new size when the PTY's changes.
    pub(crate) fn request(&mut self, viewer: u64, size: WinSize) -> Option<WinSize> {
        self.requested.insert(viewer, size);
        self.active = Some(viewer);
        self.set(size)
    }

    /// `viewer` left; the size stays until another viewer acts.
    pub(crate) fn leave(&mut self, viewer: u64) {
        self.requested.remove(&viewer);
        if self.active == Some(viewer) {
            self.active = None;
        }
    }

    fn set(&mut self, size: WinSize) -> Option<WinSize> {
        if self.size == size {
            return None;
        }
        self.size = size;
        self.seq += 1;
        Some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: WinSize = WinSize { cols: 80, rows: 24 };
    const WIDE: WinSize = WinSize {
        cols: 200,
        rows: 50,
    };
    const TALL: WinSize = WinSize {
        cols: 100,
        rows: 80,
    };

    #[test]
    fn window_sizes_are_bounded() {
        assert!(WinSize { cols: 1, rows: 1 }.is_valid());
        assert!(WinSize {
            cols: 1000,
            rows: 1000
        }
        .is_valid());
        assert!(!WinSize { cols: 0, rows: 24 }.is_valid());
        assert!(!WinSize {
            cols: 80,
            rows: 1001
        }
        .is_valid());
    }

    #[test]
    fn the_pty_follows_the_most_recently_active_viewer() {
        let mut w = Window::new(SMALL);
        // A viewer that never asked for a size changes nothing by typing.
        assert_eq!(w.activate(1), None);
        assert_eq!((w.size(), w.seq()), (SMALL, 0));
        // A resize applies at once; asking for the current size is no change.
        assert_eq!(w.request(1, WIDE), Some(WIDE));
        assert_eq!(w.request(1, WIDE), None);
        assert_eq!(w.request(2, TALL), Some(TALL));
        assert_eq!(w.seq(), 2);
        // Typing in viewer 1 brings its size back; typing again there changes nothing.
        assert_eq!(w.activate(1), Some(WIDE));
        assert_eq!(w.activate(1), None);
        // The active viewer leaves: the size stays until another one acts.
        w.leave(1);
        assert_eq!(w.size(), WIDE);
        assert_eq!(w.activate(2), Some(TALL));
        // A viewer that left has no size to bring back.
        assert_eq!(w.activate(1), None);
        assert_eq!((w.size(), w.seq()), (TALL, 4));
    }
}
