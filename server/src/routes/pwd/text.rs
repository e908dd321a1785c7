//! Terminal bytes as text: PWD carries terminal output in JSON strings, so a character split
//! across two reads of the PTY must not become two broken halves. The decoder holds back an
//! incomplete sequence at the end of a chunk until the next one; bytes that are not UTF-8 at
//! all become U+FFFD, as a terminal would show them.

#[derive(Debug, Default)]
pub struct Utf8Stream {
    /// The start of a character whose rest has not arrived (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text of `bytes` after what was held back, holding back a new incomplete end.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // Valid up to here by the error's own account: no replacement happens.
                    out.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        None => {
                            self.pending = bad.to_vec();
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                    }
                }
            }
        }
        out
    }

    /// Forgets a held-back start (the stream jumped: skipped output, a new shell).
    pub fn reset(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_reads_arrive_whole() {
        let text = "naïve ☃ 🐳 end";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut d = Utf8Stream::default();
            let mut out = d.push(&bytes[..cut]);
            out += &d.push(&bytes[cut..]);
            assert_eq!(out, text, "cut at {cut}");
        }
        // One byte at a time.
        let mut d = Utf8Stream::default();
        let out: String = bytes.iter().map(|b| d.push(&[*b])).collect();
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.push(b"a\xffb\xc3"), "a\u{fffd}b");
        assert_eq!(d.push(b"("), "\u{fffd}(");
        d.push(b"\xe2\x98");
        d.reset();
        assert_eq!(d.push(b"ok"), "ok");
    }
}
