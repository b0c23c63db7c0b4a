//! Framing: every packet is a 4-byte big-endian length followed by that many bytes.
//!
//! `check` looks at buffered bytes and says whether a whole frame is there, without copying;
//! the caller then parses the body. A length beyond the configured maximum (ZooKeeper's
//! `jute.maxbuffer`) or a negative one is a protocol violation: the connection must be closed.

/// ZooKeeper's default `jute.maxbuffer` (0xfffff bytes).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 0xfffff;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("negative frame length {0}")]
    Negative(i32),
}

/// If `buf` starts with a complete frame, returns the length of its body (the frame occupies
/// `4 + body` bytes). `Ok(None)` means more bytes are needed.
pub fn check(buf: &[u8], max_body_bytes: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 {
        return Err(FrameError::Negative(len));
    }
    let len = len as usize;
    if len > max_body_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_body_bytes,
        });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some(len))
}

/// Starts a frame in `out`: reserves the length prefix and returns its position, to be passed
/// to [`finish_frame`] once the body is written.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    at
}

/// Back-patches the length prefix reserved by [`begin_frame`].
pub fn finish_frame(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The four-letter-word commands a client may send instead of a connect frame.
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "ruok", "srvr", "stat", "conf", "cons", "crst", "dump", "envi", "mntr", "srst", "wchs", "wchc",
    "wchp", "isro", "dirs", "gtmk", "stmk",
];

/// If the first four bytes of a connection spell a four-letter word, returns it.
pub fn four_letter_word(first4: &[u8]) -> Option<&'static str> {
    let word = std::str::from_utf8(first4.get(..4)?).ok()?;
    FOUR_LETTER_WORDS.iter().copied().find(|w| *w == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_need_more_bytes() {
        assert_eq!(check(&[], 100), Ok(None));
        assert_eq!(check(&[0, 0, 0], 100), Ok(None));
        assert_eq!(check(&[0, 0, 0, 2, 1], 100), Ok(None));
        assert_eq!(check(&[0, 0, 0, 2, 1, 2], 100), Ok(Some(2)));
        assert_eq!(check(&[0, 0, 0, 0], 100), Ok(Some(0)));
    }

    #[test]
    fn oversized_and_negative_frames_are_errors() {
        assert_eq!(
            check(&[0, 0, 1, 0], 255),
            Err(FrameError::TooLarge { len: 256, max: 255 })
        );
        assert_eq!(
            check(&[0xff, 0xff, 0xff, 0xfe], 255),
            Err(FrameError::Negative(-2))
        );
    }

    #[test]
    fn frames_are_back_patched() {
        let mut out = vec![9];
        let at = begin_frame(&mut out);
        out.extend_from_slice(b"abc");
        finish_frame(&mut out, at);
        assert_eq!(out, vec![9, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn four_letter_words_are_recognised() {
        assert_eq!(four_letter_word(b"ruok"), Some("ruok"));
        assert_eq!(four_letter_word(b"mntr\n"), Some("mntr"));
        assert_eq!(four_letter_word(&[0, 0, 0, 44]), None);
        assert_eq!(four_letter_word(b"ru"), None);
    }
}
