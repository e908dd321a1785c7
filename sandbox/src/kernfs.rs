//! Kernel pseudo-files (procfs, sysfs, cgroupfs): one value per file, read whole, and the errno
//! of a failed access, which is what their error messages name.

use std::io;
use std::path::Path;

use nix::errno::Errno;

/// The content of a one-value file, without surrounding whitespace.
pub(crate) fn read_trimmed(path: impl AsRef<Path>) -> io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// The errno of an I/O error (EIO if it has none).
pub(crate) fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
