//! Splitting a connection's byte stream into frames, apart from any socket so it can be
//! tested byte by byte.

use bytes::{Buf, Bytes, BytesMut};
use corral_proto::frame::{self, FrameError};

/// Bytes read from a connection that have not yet formed a whole frame.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: BytesMut,
    max_body_bytes: usize,
}

impl FrameBuffer {
    pub fn new(max_body_bytes: usize) -> FrameBuffer {
        FrameBuffer {
            buf: BytesMut::with_capacity(8 * 1024),
            max_body_bytes,
        }
    }

    /// Where the socket appends what it reads (with room for at least one more read).
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8 * 1024);
        }
        &mut self.buf
    }

    /// The bytes buffered so far (the first four tell a four-letter word from a frame).
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the next complete frame body off the front, if one is there. The error means
    /// the peer announced a length we refuse to buffer; the connection must be closed
    /// without reading on (its stream can no longer be trusted to be in step).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        match frame::check(&self.buf, self.max_body_bytes)? {
            None => {
                // Reserve room for the announced frame up front, so a large body is read
                // in few syscalls rather than grown chunk by chunk.
                if self.buf.len() >= 4 {
                    let len =
                        i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                    let want = 4 + len as usize;
                    self.buf.reserve(want.saturating_sub(self.buf.len()));
                }
                Ok(None)
            }
            Some(body_len) => {
                self.buf.advance(4);
                Ok(Some(self.buf.split_to(body_len).freeze()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut fb = FrameBuffer::new(100);
        let stream = [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 1, b'z'];
        let mut got = Vec::new();
        for b in stream {
            fb.read_buf().extend_from_slice(&[b]);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"abc"),
                Bytes::new(),
                Bytes::from_static(b"z")
            ]
        );
        assert!(fb.buffered().is_empty());
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut fb = FrameBuffer::new(100);
        fb.read_buf()
            .extend_from_slice(&[0, 0, 0, 1, 7, 0, 0, 0, 1, 8, 0, 0]);
        assert_eq!(fb.next_frame().unwrap(), Some(Bytes::from_static(&[7])));
        assert_eq!(fb.next_frame().unwrap(), Some(Bytes::from_static(&[8])));
        assert_eq!(fb.next_frame().unwrap(), None);
        assert_eq!(fb.buffered(), &[0, 0]);
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused() {
        let mut fb = FrameBuffer::new(10);
        fb.read_buf().extend_from_slice(&[0, 0, 0, 11]);
        assert_eq!(
            fb.next_frame(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        let mut fb = FrameBuffer::new(10);
        fb.read_buf().extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(fb.next_frame(), Err(FrameError::Negative(-1)));
    }
}
