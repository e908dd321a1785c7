//! Where the registries keep their files: the one place that knows the on-disk layout.
//!
//! ```text
//! <state>/registry/
//!   <name>.yml .sock .pid .log   each registry process (mirror, push, hub): its configuration,
//!                                socket, pid (to stop a stale one) and log
//!   push/                        the session registry's store
//!   cache/                       the mirror's store when it is a pull-through cache
//!   tls/                         the offline Docker Hub stand-in's certificate
//! ```
//! A store (the distribution registry's filesystem driver) keeps its repositories under
//! `docker/registry/v2/repositories/<name>/`, tags under `_manifests/tags/<tag>`.

use std::path::{Path, PathBuf};

/// The registry directory of one state directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    dir: PathBuf,
}

/// Files of one registry process.
pub(crate) struct Files {
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl Layout {
    /// The registries of the runtime with state directory `state_dir`.
    pub fn of_state_dir(state_dir: &Path) -> Layout {
        Layout::at(&state_dir.join("registry"))
    }

    /// The registries whose directory is `dir`.
    pub fn at(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files of registry `name`.
    pub fn files(&self, name: &str) -> Files {
        Files {
            config: self.dir.join(format!("{name}.yml")),
            socket: self.dir.join(format!("{name}.sock")),
            pid: self.dir.join(format!("{name}.pid")),
            log: self.dir.join(format!("{name}.log")),
        }
    }

    pub fn push_store(&self) -> PathBuf {
        self.dir.join("push")
    }

    pub fn cache_store(&self) -> PathBuf {
        self.dir.join("cache")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
}

/// The repositories of a store.
pub(crate) fn repositories(store: &Path) -> PathBuf {
    store.join("docker/registry/v2/repositories")
}
