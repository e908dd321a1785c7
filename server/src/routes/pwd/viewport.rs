//! PWD's resize rule: every terminal of a session has the smallest size over the session's
//! PWD pages ("the smallest viewer wins"), so no page sees lines wrapped for a wider one.
//! Each socket registers its page's size here and follows the session's size through a
//! `watch` channel. sandpit's own page keeps its rule (the most recently active viewer): the
//! size is applied through each PWD socket's viewers, so it holds while PWD pages type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use terminals::WinSize;
use tokio::sync::watch;

/// Every session's PWD pages and their sizes.
#[derive(Default)]
pub struct Viewports {
    sessions: Mutex<HashMap<String, Group>>,
}

struct Group {
    next: u64,
    sizes: HashMap<u64, WinSize>,
    size: watch::Sender<Option<WinSize>>,
}

/// One page's place in its session's group; leaves it when dropped.
pub struct Seat {
    viewports: Arc<Viewports>,
    sid: String,
    id: u64,
    /// The session's size (None until a page says its size).
    pub size: watch::Receiver<Option<WinSize>>,
}

impl Viewports {
    pub fn join(self: &Arc<Self>, sid: &str) -> Seat {
        let mut all = self.lock();
        let g = all.entry(sid.to_string()).or_insert_with(|| Group {
            next: 0,
            sizes: HashMap::new(),
            size: watch::channel(None).0,
        });
        g.next += 1;
        Seat {
            viewports: self.clone(),
            sid: sid.to_string(),
            id: g.next,
            size: g.size.subscribe(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, sid: &str, change: impl FnOnce(&mut HashMap<u64, WinSize>)) {
        let mut all = self.lock();
        let Some(g) = all.get_mut(sid) else { return };
        change(&mut g.sizes);
        let smallest = g.sizes.values().fold(None, |min: Option<WinSize>, s| {
            Some(min.map_or(*s, |m| WinSize {
                cols: m.cols.min(s.cols),
                rows: m.rows.min(s.rows),
            }))
        });
        // A page that leaves does not shrink the others back: the size stays until one speaks.
        if smallest.is_some() {
            g.size
                .send_if_modified(|now| std::mem::replace(now, smallest) != smallest);
        }
        if g.sizes.is_empty() && g.size.receiver_count() == 0 {
            all.remove(sid);
        }
    }
}

impl Seat {
    /// This page's size.
    pub fn set(&self, size: WinSize) {
        self.viewports.update(&self.sid, |sizes| {
            sizes.insert(self.id, size);
        });
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let id = self.id;
        // The receiver goes with this seat; count it gone before the group is looked at.
        let (_, gone) = watch::channel(None);
        self.size = gone;
        self.viewports.update(&self.sid, |sizes| {
            sizes.remove(&id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(cols: u16, rows: u16) -> WinSize {
        WinSize { cols, rows }
    }

    #[test]
    fn the_smallest_page_wins_per_session() {
        let v = Arc::new(Viewports::default());
        let a = v.join("s1");
        let b = v.join("s1");
        let other = v.join("s2");
        assert_eq!(*a.size.borrow(), None);
        a.set(size(120, 40));
        assert_eq!(*b.size.borrow(), Some(size(120, 40)));
        b.set(size(100, 50));
        assert_eq!(*a.size.borrow(), Some(size(100, 40)));
        assert_eq!(*other.size.borrow(), None);
        drop(b);
        a.set(size(130, 45));
        assert_eq!(*a.size.borrow(), Some(size(130, 45)));
        drop(a);
        drop(other);
        assert!(
            v.lock().is_empty(),
            "groups are removed with their last page"
        );
    }
}
