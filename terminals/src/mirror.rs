//! A copy of the output ring that outlives the server: a sealed memfd that the shell's holder
//! keeps, so that the next server rebuilds the ring and the stream goes on at the same offsets.
//!
//! The server writes every published chunk into it with `pwrite` (one or two calls per read
//! round, before the ring's own push and outside the lock viewers take; no mapping, so nothing
//! a peer does to the file can fault the server), then the stream's new end. A server killed between the two loses at most that
//! round's bytes from the copy; killed anywhere else, the copy holds exactly what viewers were
//! sent. The file is sealed at its size: it cannot be shrunk or grown by whoever holds it.
//!
//! Layout (little-endian): a header of [`HEADER`] bytes (magic, capacity, stream id, end,
//! restarts, the restart events), then `capacity` bytes where the byte at offset `o` lives at
//! `o % capacity`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;
use rustix::fs::{fstat, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::io::{pread, pwrite};

use crate::ring::Ring;

/// Restart events kept, here and in the terminal (each restart also writes a notice into the
/// ring, so few matter).
pub(crate) const MAX_EVENTS: usize = 1024;

const MAGIC: &[u8; 8] = b"sandpit\x01";
/// Room for the fixed fields and [`MAX_EVENTS`] event offsets.
const HEADER: u64 = 16 << 10;
const AT_CAPACITY: u64 = 8;
const AT_ID: u64 = 16;
const ID_LEN: usize = 32;
const AT_END: u64 = 48;
const AT_RESTARTS: u64 = 56;
const AT_EVENTS_BASE: u64 = 64;
const AT_EVENTS_LEN: u64 = 72;
const AT_EVENTS: u64 = 80;
const _: () = assert!(AT_EVENTS + 8 * MAX_EVENTS as u64 <= HEADER);

/// The ring's copy in a memfd.
#[derive(Debug)]
pub(crate) struct Mirror {
    fd: OwnedFd,
    capacity: u64,
    /// Offset of the next byte to copy (the stream's end as far as the copy goes).
    end: u64,
}

/// What a mirror held when a new server opened it.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) id: String,
    pub(crate) ring: Ring,
    /// Sequence number of the first restart event, and the events' offsets.
    pub(crate) events: (u64, Vec<u64>),
    pub(crate) restarts: u64,
}

impl Mirror {
    /// A new, empty copy of a ring of `capacity` bytes for stream `id` (32 hex digits).
    pub(crate) fn create(id: &str, capacity: usize) -> io::Result<Mirror> {
        if id.len() != ID_LEN {
            return Err(io::Error::other("a stream id has 32 characters"));
        }
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        let fd = memfd_create("sandpit-terminal-ring", flags)?;
        let capacity = capacity as u64;
        ftruncate(&fd, HEADER + capacity)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let mirror = Mirror {
            fd,
            capacity,
            end: 0,
        };
        mirror.write_at(0, MAGIC)?;
        mirror.write_u64(AT_CAPACITY, capacity)?;
        mirror.write_at(AT_ID, id.as_bytes())?;
        Ok(mirror)
    }

    /// Opens the copy another server wrote and rebuilds its ring.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<(Mirror, Restored)> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut head = [0u8; AT_EVENTS as usize];
        read_exact_at(&fd, &mut head, 0)?;
        if &head[..8] != MAGIC {
            return Err(bad("not a terminal's ring"));
        }
        let field =
            |at: u64| u64::from_le_bytes(head[at as usize..at as usize + 8].try_into().unwrap());
        let capacity = field(AT_CAPACITY);
        if capacity == 0 || fstat(&fd)?.st_size as u64 != HEADER + capacity {
            return Err(bad("the ring's size does not match its header"));
        }
        let id = std::str::from_utf8(&head[AT_ID as usize..AT_ID as usize + ID_LEN])
            .ok()
            .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("the ring's stream id is not hex"))?
            .to_owned();
        let (end, restarts) = (field(AT_END), field(AT_RESTARTS));
        let (events_base, events_len) = (field(AT_EVENTS_BASE), field(AT_EVENTS_LEN));
        if events_len > MAX_EVENTS as u64 {
            return Err(bad("the ring records too many restarts"));
        }
        let mirror = Mirror { fd, capacity, end };
        let kept = end.min(capacity);
        let mut bytes = BytesMut::zeroed(kept as usize);
        mirror.read_ring(end - kept, &mut bytes)?;
        let ring = Ring::resumed(capacity as usize, end - kept, bytes.freeze());
        let mut raw = vec![0u8; 8 * events_len as usize];
        read_exact_at(&mirror.fd, &mut raw, AT_EVENTS)?;
        let offsets = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .filter(|o| *o <= end)
            .collect();
        let restored = Restored {
            id,
            ring,
            events: (events_base, offsets),
            restarts,
        };
        Ok((mirror, restored))
    }

    /// The descriptor, for the holder to keep.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Copies `data`, the stream's next bytes, then records the new end.
    pub(crate) fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let at = self.end;
        let end = at + data.len() as u64;
        // Only the last `capacity` bytes can matter.
        let skip = data.len().saturating_sub(self.capacity as usize);
        let (mut at, mut data) = (at + skip as u64, &data[skip..]);
        while !data.is_empty() {
            let pos = at % self.capacity;
            let n = data.len().min((self.capacity - pos) as usize);
            self.write_at(HEADER + pos, &data[..n])?;
            (at, data) = (at + n as u64, &data[n..]);
        }
        self.write_u64(AT_END, end)?;
        self.end = end;
        Ok(())
    }

    /// Records the restart events (the sequence number of the first, and the offsets of all
    /// kept) and their count.
    pub(crate) fn record_restarts(
        &self,
        base: u64,
        offsets: impl ExactSizeIterator<Item = u64>,
        restarts: u64,
    ) -> io::Result<()> {
        let len = offsets.len().min(MAX_EVENTS);
        let mut raw = Vec::with_capacity(8 * len);
        for o in offsets.take(len) {
            raw.extend_from_slice(&o.to_le_bytes());
        }
        self.write_at(AT_EVENTS, &raw)?;
        self.write_u64(AT_EVENTS_BASE, base)?;
        self.write_u64(AT_EVENTS_LEN, len as u64)?;
        self.write_u64(AT_RESTARTS, restarts)
    }

    /// Reads the bytes from stream offset `from` into `out` (which the caller sized to end
    /// within what is kept).
    fn read_ring(&self, from: u64, out: &mut [u8]) -> io::Result<()> {
        let (mut at, mut done) = (from, 0);
        while done < out.len() {
            let pos = at % self.capacity;
            let n = (out.len() - done).min((self.capacity - pos) as usize);
            read_exact_at(&self.fd, &mut out[done..done + n], HEADER + pos)?;
            (at, done) = (at + n as u64, done + n);
        }
        Ok(())
    }

    fn write_u64(&self, at: u64, value: u64) -> io::Result<()> {
        self.write_at(at, &value.to_le_bytes())
    }

    fn write_at(&self, mut at: u64, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = pwrite(&self.fd, data, at)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            (at, data) = (at + n as u64, &data[n..]);
        }
        Ok(())
    }
}

fn read_exact_at(fd: &OwnedFd, mut out: &mut [u8], mut at: u64) -> io::Result<()> {
    while !out.is_empty() {
        let n = pread(fd, &mut *out, at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        at += n as u64;
        out = &mut out[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        "0123456789abcdef0123456789abcdef".to_owned()
    }

    fn reopen(m: &Mirror) -> Restored {
        let fd = m.fd.try_clone().unwrap();
        Mirror::open(fd).unwrap().1
    }

    #[test]
    fn a_reopened_mirror_has_the_same_stream() {
        let mut m = Mirror::create(&id(), 10).unwrap();
        m.append(b"hello").unwrap();
        m.append(b" world").unwrap();
        let r = reopen(&m);
        assert_eq!(r.id, id());
        // 11 bytes into a ring of 10: offset 1 on.
        assert_eq!((r.ring.start(), r.ring.end()), (1, 11));
        let s = r.ring.read_from(0, 100).unwrap();
        assert_eq!((s.offset, &s.bytes[..]), (1, &b"ello world"[..]));
    }

    #[test]
    fn a_chunk_longer_than_the_ring_keeps_its_tail() {
        let mut m = Mirror::create(&id(), 4).unwrap();
        m.append(b"ab").unwrap();
        m.append(b"cdefghij").unwrap();
        let r = reopen(&m);
        let s = r.ring.read_from(0, 100).unwrap();
        assert_eq!((s.offset, &s.bytes[..]), (6, &b"ghij"[..]));
    }

    #[test]
    fn restarts_survive() {
        let mut m = Mirror::create(&id(), 100).unwrap();
        m.append(b"0123456789").unwrap();
        m.record_restarts(4, [3, 7].into_iter(), 6).unwrap();
        let (reopened, r) = Mirror::open(m.fd.try_clone().unwrap()).unwrap();
        assert_eq!(reopened.end, 10, "a reopened copy goes on at its end");
        assert_eq!(r.restarts, 6);
        assert_eq!(r.events, (4, vec![3, 7]));
    }

    #[test]
    fn the_file_cannot_be_resized_and_junk_is_refused() {
        let m = Mirror::create(&id(), 100).unwrap();
        assert!(ftruncate(&m.fd, 10).is_err());
        let other = memfd_create("junk", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&other, HEADER + 5).unwrap();
        let err = Mirror::open(other).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
