//! Whether a node can reach its own directory. Under `userns` isolation a node's root is an
//! unprivileged host uid, and its init opens its files below `<state>/nodes/<node>` by path
//! (the overlay's layers, the idmapped image's mount point): every directory above must let
//! other users in (`o+x`), or creating a node fails with EACCES inside it. A `mktemp -d`
//! directory (0700) or a home directory are the usual traps. The base images need no such
//! thing: the host attaches them. Checked when the runtime opens and by `sandpit doctor`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `path`, or its nearest parent that exists (a state directory before the first start).
pub(crate) fn nearest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// The first directory on the way from `/` to `dir` (as far as it exists, symlinks resolved)
/// that other users may not enter, with its permission bits.
pub fn closed_ancestor(dir: &Path) -> Option<(PathBuf, u32)> {
    let resolved = std::fs::canonicalize(nearest_existing(dir)).ok()?;
    let mut down: Vec<&Path> = resolved.ancestors().collect();
    down.reverse();
    down.into_iter().find_map(|a| {
        let mode = std::fs::metadata(a).ok()?.permissions().mode() & 0o7777;
        (mode & 0o001 == 0).then(|| (a.to_owned(), mode))
    })
}

/// Nodes cannot reach `dir` (where their directories are, or will be): `closed` lets no other
/// user in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub dir: PathBuf,
    pub closed: PathBuf,
    pub mode: u32,
}

impl Unreachable {
    /// None when nodes can reach `dir`.
    pub fn check(dir: &Path) -> Option<Unreachable> {
        let (closed, mode) = closed_ancestor(dir)?;
        Some(Unreachable {
            dir: dir.to_owned(),
            closed,
            mode,
        })
    }

    pub fn problem(&self) -> String {
        format!(
            "nodes cannot reach their directory {}: {} has mode {:04o}, which lets no other \
             user in, and a node's root is an unprivileged user on the host (userns isolation)",
            self.dir.display(),
            self.closed.display(),
            self.mode
        )
    }

    pub fn fix(&self) -> String {
        format!(
            "chmod o+x {}, or use a state directory below directories that others may enter \
             (the default is /var/lib/sandpit)",
            self.closed.display()
        )
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; run {}", self.problem(), self.fix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    #[test]
    fn the_nearest_existing_parent() {
        assert_eq!(
            nearest_existing(Path::new("/proc/self/no/such/dir")),
            Path::new("/proc/self")
        );
    }

    #[test]
    fn finds_the_first_closed_directory_from_the_top() {
        let t = TempDir::new("reach");
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let a = t.0.join("a");
        let b = a.join("b");
        std::fs::create_dir_all(&b).unwrap();
        set(&t.0, 0o755);
        set(&a, 0o755);
        set(&b, 0o755);
        // Parts that do not exist yet are judged by the part that does.
        assert_eq!(closed_ancestor(&b.join("state/nodes")), None);
        set(&a, 0o700);
        set(&b, 0o750);
        assert_eq!(closed_ancestor(&b.join("nodes")), Some((a.clone(), 0o700)));
        let why = Unreachable::check(&b).unwrap().to_string();
        assert!(why.contains("has mode 0700"), "{why}");
        assert!(
            why.contains(&format!("run chmod o+x {}", a.display())),
            "{why}"
        );
        set(&a, 0o711);
        assert_eq!(closed_ancestor(&b), Some((b.clone(), 0o750)));
        // Through a symlink, the directories of its target count.
        let link = t.0.join("link");
        std::os::unix::fs::symlink(&b, &link).unwrap();
        assert_eq!(closed_ancestor(&link), Some((b.clone(), 0o750)));
        set(&b, 0o755);
        assert_eq!(Unreachable::check(&link), None);
    }
}
