//! The output ring: the last few MiB of a terminal's output, addressed by a running byte offset.
//!
//! Every byte a terminal ever produced has an offset (0 for its first byte); the ring keeps the
//! bytes in `start..end` and forgets older ones. Viewers read by offset, so a reconnecting viewer
//! that says "I have everything before N" gets exactly the bytes from N on, and one whose offset
//! was evicted learns how many bytes it lost.
//!
//! Storage is a queue of [`Bytes`] chunks (one per reader wake-up), so a read that falls inside
//! one chunk is a reference-counted slice, not a copy. Tiny chunks (keystroke echoes) are merged
//! so the queue stays short. After an eviction the ring never starts inside a UTF-8 sequence: a
//! replay that began with a continuation byte would show a replacement character.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Ring size when nothing else is configured.
pub const DEFAULT_CAPACITY: usize = 2 << 20;

/// Chunks shorter than this are merged with a following short chunk (a copy of at most this
/// many bytes), which bounds the queue to about `capacity / MERGE_BELOW * 2` entries.
const MERGE_BELOW: usize = 1024;

/// A UTF-8 sequence has at most three continuation bytes.
const MAX_CONTINUATION: usize = 3;

/// Reading from a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The offset names bytes that were never produced.
    #[error("offset {offset} is ahead of the stream, which ends at {end}")]
    Future { offset: u64, end: u64 },
}

/// Bytes read from the ring. `offset` is the offset of `bytes[0]`; when it is greater than the
/// offset asked for, the bytes in between were evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub offset: u64,
    pub bytes: Bytes,
}

/// A bounded byte buffer with a running offset.
#[derive(Debug)]
pub struct Ring {
    /// `(offset of the chunk's first byte, chunk)`, oldest first, contiguous, none empty.
    chunks: VecDeque<(u64, Bytes)>,
    /// Offset of the oldest kept byte.
    start: u64,
    /// Offset of the next byte to be pushed.
    end: u64,
    /// Bytes kept (`end - start`).
    len: usize,
    capacity: usize,
}

impl Ring {
    /// An empty ring that keeps at most `capacity` bytes (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            start: 0,
            end: 0,
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// A ring of `capacity` bytes that holds `bytes` from stream offset `start` on (rebuilt
    /// from a copy that outlived a server); the stream goes on at `start + bytes.len()`.
    pub(crate) fn resumed(capacity: usize, start: u64, bytes: Bytes) -> Self {
        let mut ring = Self::new(capacity);
        (ring.start, ring.end) = (start, start);
        ring.push(bytes);
        ring
    }

    /// Offset of the oldest byte kept; a new viewer's replay starts here.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset of the next byte to be pushed (the total number of bytes ever pushed).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Number of bytes kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most bytes kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `data`, evicting the oldest bytes beyond the capacity.
    pub fn push(&mut self, mut data: Bytes) {
        if data.is_empty() {
            return;
        }
        if data.len() >= self.capacity {
            // Only the tail survives; the rest is counted but never stored.
            self.end += data.len() as u64;
            data = data.slice(data.len() - self.capacity..);
            self.chunks.clear();
            self.start = self.end - data.len() as u64;
            self.len = data.len();
            self.chunks.push_back((self.start, data));
            self.skip_continuation_bytes();
            return;
        }
        match self.chunks.back_mut() {
            Some((_, last)) if last.len() < MERGE_BELOW && data.len() < MERGE_BELOW => {
                let mut merged = BytesMut::with_capacity(last.len() + data.len());
                merged.extend_from_slice(last);
                merged.extend_from_slice(&data);
                *last = merged.freeze();
            }
            _ => self.chunks.push_back((self.end, data.clone())),
        }
        self.end += data.len() as u64;
        self.len += data.len();
        if self.len > self.capacity {
            self.evict(self.len - self.capacity);
            self.skip_continuation_bytes();
        }
    }

    /// Up to `max` bytes from `offset` on. An evicted offset reads from [`Ring::start`]
    /// (the returned offset tells); `offset == end` gives no bytes.
    pub fn read_from(&self, offset: u64, max: usize) -> Result<Slice, RingError> {
        if offset > self.end {
            return Err(RingError::Future {
                offset,
                end: self.end,
            });
        }
        let from = offset.max(self.start);
        let want = usize::try_from(self.end - from)
            .unwrap_or(usize::MAX)
            .min(max);
        if want == 0 {
            return Ok(Slice {
                offset: from,
                bytes: Bytes::new(),
            });
        }
        // The last chunk that starts at or before `from`.
        let first = self.chunks.partition_point(|(o, _)| *o <= from) - 1;
        let (chunk_offset, chunk) = &self.chunks[first];
        let skip = (from - chunk_offset) as usize;
        if chunk.len() - skip >= want {
            return Ok(Slice {
                offset: from,
                bytes: chunk.slice(skip..skip + want),
            });
        }
        // Spans chunks: one copy, capped at `max`.
        let mut out = BytesMut::with_capacity(want);
        out.extend_from_slice(&chunk[skip..]);
        for (_, chunk) in self.chunks.range(first + 1..) {
            let take = (want - out.len()).min(chunk.len());
            out.extend_from_slice(&chunk[..take]);
            if out.len() == want {
                break;
            }
        }
        Ok(Slice {
            offset: from,
            bytes: out.freeze(),
        })
    }

    /// Drops the oldest `n` bytes.
    fn evict(&mut self, mut n: usize) {
        while n > 0 {
            let Some((offset, chunk)) = self.chunks.front_mut() else {
                break;
            };
            if chunk.len() <= n {
                n -= chunk.len();
                self.len -= chunk.len();
                self.start += chunk.len() as u64;
                self.chunks.pop_front();
            } else {
                *chunk = chunk.slice(n..);
                *offset += n as u64;
                self.len -= n;
                self.start += n as u64;
                n = 0;
            }
        }
    }

    /// After an eviction, moves `start` past continuation bytes (at most three) so that a replay
    /// begins on a character boundary.
    fn skip_continuation_bytes(&mut self) {
        for _ in 0..MAX_CONTINUATION {
            match self.chunks.front().and_then(|(_, c)| c.first()) {
                Some(b) if is_continuation(*b) => self.evict(1),
                _ => break,
            }
        }
    }
}

/// `10xxxxxx`: a byte inside a multi-byte UTF-8 sequence.
fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(capacity: usize, pushes: &[&[u8]]) -> Ring {
        let mut ring = Ring::new(capacity);
        for p in pushes {
            ring.push(Bytes::copy_from_slice(p));
        }
        ring
    }

    fn read(ring: &Ring, offset: u64, max: usize) -> (u64, Vec<u8>) {
        let s = ring.read_from(offset, max).unwrap();
        (s.offset, s.bytes.to_vec())
    }

    #[test]
    fn a_resumed_ring_goes_on_at_its_offsets() {
        let mut ring = Ring::resumed(100, 40, Bytes::from_static(b"abc"));
        ring.push(Bytes::from_static(b"def"));
        assert_eq!((ring.start(), ring.end()), (40, 46));
        assert_eq!(read(&ring, 0, 100), (40, b"abcdef".to_vec()));
        assert_eq!(read(&ring, 43, 100), (43, b"def".to_vec()));
    }

    #[test]
    fn offsets_count_every_byte() {
        let ring = ring_with(100, &[b"hello", b" ", b"world"]);
        assert_eq!((ring.start(), ring.end(), ring.len()), (0, 11, 11));
        assert_eq!(read(&ring, 0, 100), (0, b"hello world".to_vec()));
        assert_eq!(read(&ring, 6, 100), (6, b"world".to_vec()));
        assert_eq!(read(&ring, 11, 100), (11, vec![]));
    }

    #[test]
    fn max_caps_a_read() {
        let ring = ring_with(100, &[b"abcdef", b"ghij"]);
        assert_eq!(read(&ring, 1, 3), (1, b"bcd".to_vec()));
        assert_eq!(read(&ring, 4, 4), (4, b"efgh".to_vec()));
        assert_eq!(read(&ring, 4, 0), (4, vec![]));
    }

    #[test]
    fn future_offset_is_an_error() {
        let ring = ring_with(100, &[b"abc"]);
        assert_eq!(
            ring.read_from(4, 10),
            Err(RingError::Future { offset: 4, end: 3 })
        );
        assert_eq!(
            RingError::Future { offset: 4, end: 3 }.to_string(),
            "offset 4 is ahead of the stream, which ends at 3"
        );
    }

    #[test]
    fn eviction_keeps_the_newest_bytes_inside_a_chunk() {
        let big = vec![b'x'; 2000];
        let mut ring = ring_with(3000, &[&big, &big]);
        assert_eq!((ring.start(), ring.end(), ring.len()), (1000, 4000, 3000));
        ring.push(Bytes::from(vec![b'y'; 2000]));
        assert_eq!((ring.start(), ring.end(), ring.len()), (3000, 6000, 3000));
        let (offset, bytes) = read(&ring, 3000, 10_000);
        assert_eq!(offset, 3000);
        assert_eq!(&bytes[..1000], &[b'x'; 1000][..]);
        assert_eq!(&bytes[1000..], &[b'y'; 2000][..]);
    }

    #[test]
    fn evicted_offset_reads_from_the_oldest_kept_byte() {
        let ring = ring_with(4, &[b"0123456789"]);
        assert_eq!((ring.start(), ring.end()), (6, 10));
        assert_eq!(read(&ring, 2, 100), (6, b"6789".to_vec()));
        assert_eq!(read(&ring, 2, 1), (6, b"6".to_vec()));
    }

    #[test]
    fn wraps_many_times_with_exact_offsets() {
        // Pushes of varying sizes past the capacity many times over; any read must equal the
        // same range of a reference copy of everything pushed.
        let mut ring = Ring::new(5000);
        let mut all = Vec::new();
        for i in 0..500u32 {
            let n = (i * 37 % 1500) as usize;
            let chunk: Vec<u8> = (0..n)
                .map(|j| b'a' + ((i as usize + j) % 26) as u8)
                .collect();
            all.extend_from_slice(&chunk);
            ring.push(Bytes::from(chunk));
            assert_eq!(ring.end(), all.len() as u64);
            assert!(ring.len() <= 5000);
            assert_eq!(ring.end() - ring.start(), ring.len() as u64);
            for back in [0u64, 1, 999, 4999] {
                let from = ring.end().saturating_sub(back).max(ring.start());
                let (o, bytes) = read(&ring, from, 700);
                assert_eq!(o, from);
                let want = &all[from as usize..(from as usize + 700).min(all.len())];
                assert_eq!(bytes, want);
            }
        }
        assert_eq!(ring.len(), 5000);
    }

    #[test]
    fn a_push_larger_than_the_ring_keeps_its_tail() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).map(|b| b & 0x7F).collect();
        let ring = ring_with(1000, &[b"before", &data]);
        assert_eq!((ring.start(), ring.end(), ring.len()), (9006, 10_006, 1000));
        assert_eq!(read(&ring, 0, 2000).1, &data[9000..]);
    }

    #[test]
    fn small_chunks_are_merged() {
        let mut ring = Ring::new(1 << 20);
        for _ in 0..10_000 {
            ring.push(Bytes::from_static(b"k"));
        }
        assert!(ring.chunks.len() <= 10, "{} chunks", ring.chunks.len());
        assert_eq!(read(&ring, 0, 1 << 20).1, vec![b'k'; 10_000]);
    }

    #[test]
    fn a_read_inside_one_chunk_does_not_copy() {
        let ring = ring_with(1 << 20, &[&[b'a'; 4096], &[b'b'; 4096]]);
        let inner = &ring.chunks[1].1;
        let s = ring.read_from(4100, 10).unwrap();
        assert_eq!(s.bytes.as_ptr(), inner[4..].as_ptr());
    }

    #[test]
    fn replay_after_eviction_starts_on_a_char_boundary() {
        // "é" is C3 A9, "€" is E2 82 AC, "😀" is F0 9F 98 80.
        for (text, keep, start_char) in [
            ("aé€😀", 9, "é€😀"), // starts on C3: a boundary
            ("aé€😀", 8, "€😀"),  // would start on A9: skips one
            ("aé€😀", 6, "😀"),   // would start on 82: skips "\x82\xAC"
            ("aé€😀", 3, ""),     // would start on 9F: skips three
            ("aé€😀", 7, "€😀"),  // starts on E2: a boundary
            ("é😀b", 4, "b"),     // would start on 9F: skips three
        ] {
            let ring = ring_with(keep, &[text.as_bytes()]);
            let (offset, bytes) = read(&ring, 0, 100);
            assert_eq!(
                std::str::from_utf8(&bytes).unwrap(),
                start_char,
                "{text:?} keep {keep}"
            );
            assert_eq!(offset, (text.len() - start_char.len()) as u64);
        }
    }

    #[test]
    fn boundary_skip_crosses_chunks() {
        // "😀" split over three chunks (big neighbours keep them from being merged); the
        // eviction lands on its second byte, alone in the middle chunk.
        let mut a = vec![b'x'; 1500];
        a.push(0xF0);
        let mut c = vec![0x98, 0x80];
        c.extend_from_slice(&[b'y'; 1500]);
        let ring = ring_with(1503, &[&a, &[0x9F], &c]);
        assert_eq!(ring.start(), 1504);
        assert_eq!(read(&ring, 0, 10_000), (1504, vec![b'y'; 1500]));
        assert_eq!(ring.end(), 3004);
    }

    #[test]
    fn binary_output_skips_at_most_three_bytes() {
        let ring = ring_with(8, &[&[0x80; 20]]);
        assert_eq!(ring.start(), 15);
        assert_eq!(ring.len(), 5);
    }

    #[test]
    fn a_resumed_offset_is_honoured_exactly_even_mid_character() {
        let ring = ring_with(100, &["é".as_bytes()]);
        assert_eq!(read(&ring, 1, 10), (1, vec![0xA9]));
    }
}
