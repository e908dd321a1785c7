//! Errors of the registries.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the registry binary {} is missing: install Debian's docker-registry package (ops/setup does)",
        .0.display()
    )]
    MissingExe(PathBuf),
    #[error(
        "no seed image store at {}: build it with ops/seed/publish (ops/setup does), or make \
         the mirror a pull-through cache",
        .0.display()
    )]
    MissingStore(PathBuf),
    #[error("the registry did not listen on {}; its log ends with:\n{log_tail}", socket.display())]
    NotListening { socket: PathBuf, log_tail: String },
    #[error("make the offline Docker Hub certificate: {0}")]
    Tls(String),
    #[error("start the registry relay on {addr}: {source}")]
    Relay {
        addr: std::net::SocketAddrV4,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Wraps an I/O error of `what` on `path`, for `map_err`.
    pub(crate) fn io(what: &'static str, path: &Path) -> impl Fn(std::io::Error) -> RegistryError {
        let path = path.to_owned();
        move |source| RegistryError::Io {
            what,
            path: path.clone(),
            source,
        }
    }
}
