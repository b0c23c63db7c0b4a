//! Splitting a connection's byte stream into frames, apart from any socket so it can be
//! tested byte by byte.

use bytes::{Buf, Bytes, BytesMut};
use corral_proto::frame::{self, FrameError};

/// Room added to the buffer when it runs low: one socket read's worth.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Bytes read from a connection that have not yet formed a whole frame.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: BytesMut,
    max_body_bytes: usize,
}

impl FrameBuffer {
    pub fn new(max_body_bytes: usize) -> FrameBuffer {
        FrameBuffer {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            max_body_bytes,
        }
    }

    /// Where the socket appends what it reads (with room for at least one more read).
    ///
    /// The buffer grows with the bytes that actually arrive, never with the length a frame
    /// announces: a peer that announces a large frame and then stalls costs only what it
    /// sent. (`BytesMut` grows geometrically, so a large frame still takes few reallocations.)
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 8 {
            self.buf.reserve(READ_CHUNK_BYTES);
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
            None => Ok(None),
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
    fn an_announced_length_reserves_nothing_until_the_bytes_arrive() {
        let max = 1 << 20;
        let mut fb = FrameBuffer::new(max);
        // Announces a 1 MiB frame, sends 8 bytes of it, then stalls.
        fb.read_buf()
            .extend_from_slice(&[0, 0x0f, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(fb.next_frame(), Ok(None));
        let _ = fb.read_buf();
        assert!(
            fb.buf.capacity() <= 2 * READ_CHUNK_BYTES,
            "capacity {} after 12 bytes",
            fb.buf.capacity()
        );
        // The frame still completes when its bytes do come, in socket-sized pieces.
        let body_len = 0x000f_ffff;
        let mut left = body_len - 8;
        while left > 0 {
            let n = left.min(3000);
            fb.read_buf().extend_from_slice(&vec![9u8; n]);
            left -= n;
            if left > 0 {
                assert_eq!(fb.next_frame(), Ok(None));
            }
        }
        let body = fb.next_frame().unwrap().expect("whole frame");
        assert_eq!(body.len(), body_len);
        assert_eq!(&body[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(fb.buffered().is_empty());
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
