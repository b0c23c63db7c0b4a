//! The jute primitive encoding: big-endian integers, length-prefixed buffers and strings,
//! length-prefixed vectors. `-1` as a length means "null".
//!
//! Decoding is check-then-parse: every read verifies that enough bytes remain before touching
//! them, so a short or hostile buffer yields a [`DecodeError`], never a panic.

use bytes::{BufMut, Bytes};

/// Why a byte sequence is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated record: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("invalid length {len} at offset {offset}")]
    BadLength { offset: usize, len: i32 },
    #[error("string at offset {offset} is not valid UTF-8")]
    BadUtf8 { offset: usize },
    #[error("unknown {what} value {value}")]
    UnknownValue { what: &'static str, value: i32 },
    #[error("{0} trailing bytes after record")]
    TrailingBytes(usize),
}

/// A cursor over a received frame body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A length prefix; `None` for the null marker (-1). Lengths are checked against the bytes
    /// actually present (`elem_min` bytes per element) so a hostile length cannot make us allocate.
    fn read_len(&mut self, elem_min: usize) -> Result<Option<usize>, DecodeError> {
        let offset = self.pos;
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(DecodeError::BadLength { offset, len });
        }
        let n = len as usize;
        if n.saturating_mul(elem_min) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n.saturating_mul(elem_min) - self.remaining(),
            });
        }
        Ok(Some(n))
    }

    pub fn read_buffer(&mut self) -> Result<Option<Bytes>, DecodeError> {
        match self.read_len(1)? {
            None => Ok(None),
            Some(n) => Ok(Some(Bytes::copy_from_slice(self.take(n)?))),
        }
    }

    /// A buffer borrowed from the input (no copy); `None` for the null buffer.
    pub fn read_buffer_ref(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.read_len(1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n)?)),
        }
    }

    /// A string borrowed from the input (no copy); the null string reads as "".
    pub fn read_str(&mut self) -> Result<&'a str, DecodeError> {
        match self.read_len(1)? {
            None => Ok(""),
            Some(n) => {
                let offset = self.pos;
                std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::BadUtf8 { offset })
            }
        }
    }

    pub fn read_string(&mut self) -> Result<String, DecodeError> {
        match self.read_len(1)? {
            None => Ok(String::new()),
            Some(n) => {
                let offset = self.pos;
                let b = self.take(n)?;
                String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadUtf8 { offset })
            }
        }
    }

    pub fn read_vec<T: Jute>(&mut self) -> Result<Vec<T>, DecodeError> {
        match self.read_len(T::MIN_ENCODED_LEN)? {
            None => Ok(Vec::new()),
            Some(n) => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(T::read(self)?);
                }
                Ok(v)
            }
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// Appends jute-encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn write_i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }

    pub fn write_i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }

    pub fn write_bool(&mut self, v: bool) {
        self.buf.put_u8(v as u8);
    }

    pub fn write_buffer(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.write_i32(-1),
            Some(b) => {
                self.write_i32(b.len() as i32);
                self.buf.extend_from_slice(b);
            }
        }
    }

    pub fn write_string(&mut self, v: &str) {
        self.write_i32(v.len() as i32);
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub fn write_vec<T: Jute>(&mut self, v: &[T]) {
        self.write_i32(v.len() as i32);
        for item in v {
            item.write(self);
        }
    }

    /// Overwrites 4 bytes at `at` (used to back-patch frame lengths).
    pub fn patch_i32(&mut self, at: usize, v: i32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
}

/// A value with a jute encoding.
pub trait Jute: Sized {
    /// The fewest bytes one encoded value can take; bounds vector lengths while decoding.
    const MIN_ENCODED_LEN: usize;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    fn write(&self, w: &mut Writer);

    /// Decodes a whole buffer, rejecting trailing bytes.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_inner()
    }
}

impl Jute for i32 {
    const MIN_ENCODED_LEN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_i32()
    }
    fn write(&self, w: &mut Writer) {
        w.write_i32(*self)
    }
}

impl Jute for i64 {
    const MIN_ENCODED_LEN: usize = 8;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_i64()
    }
    fn write(&self, w: &mut Writer) {
        w.write_i64(*self)
    }
}

impl Jute for bool {
    const MIN_ENCODED_LEN: usize = 1;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_bool()
    }
    fn write(&self, w: &mut Writer) {
        w.write_bool(*self)
    }
}

impl Jute for String {
    const MIN_ENCODED_LEN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_string()
    }
    fn write(&self, w: &mut Writer) {
        w.write_string(self)
    }
}

/// A jute `buffer`: `None` is the null buffer (length -1), which ZooKeeper distinguishes from an
/// empty one (zkCli prints `null` for a node created without data).
impl Jute for Option<Bytes> {
    const MIN_ENCODED_LEN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_buffer()
    }
    fn write(&self, w: &mut Writer) {
        w.write_buffer(self.as_deref())
    }
}

impl<T: Jute> Jute for Vec<T> {
    const MIN_ENCODED_LEN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_vec()
    }
    fn write(&self, w: &mut Writer) {
        w.write_vec(self)
    }
}

/// Declares a jute record: a struct whose fields are encoded in declaration order.
#[macro_export]
macro_rules! record {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl $crate::jute::Jute for $name {
            const MIN_ENCODED_LEN: usize = 0 $(+ <$ty as $crate::jute::Jute>::MIN_ENCODED_LEN)*;
            #[allow(unused_variables)]
            fn read(r: &mut $crate::jute::Reader<'_>) -> Result<Self, $crate::jute::DecodeError> {
                Ok($name { $($field: <$ty as $crate::jute::Jute>::read(r)?),* })
            }
            #[allow(unused_variables)]
            fn write(&self, w: &mut $crate::jute::Writer) {
                $(<$ty as $crate::jute::Jute>::write(&self.$field, w);)*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_buffer_and_empty_buffer_differ() {
        let null: Option<Bytes> = None;
        let empty: Option<Bytes> = Some(Bytes::new());
        assert_eq!(null.encode(), vec![0xff, 0xff, 0xff, 0xff]);
        assert_eq!(empty.encode(), vec![0, 0, 0, 0]);
        assert_eq!(Option::<Bytes>::decode(&null.encode()).unwrap(), None);
        assert_eq!(
            Option::<Bytes>::decode(&empty.encode()).unwrap(),
            Some(Bytes::new())
        );
    }

    #[test]
    fn hostile_vector_length_is_rejected_without_allocating() {
        // 0x7fffffff strings announced, 0 bytes present.
        let buf = [0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            Vec::<String>::decode(&buf),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn negative_length_other_than_null_is_rejected() {
        let buf = (-2i32).to_be_bytes();
        assert!(matches!(
            String::decode(&buf),
            Err(DecodeError::BadLength { len: -2, .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let buf = [0, 0, 0, 2, 0xc3, 0x28];
        assert!(matches!(
            String::decode(&buf),
            Err(DecodeError::BadUtf8 { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected_by_decode() {
        let buf = [0, 0, 0, 1, 9];
        assert_eq!(i32::decode(&buf), Err(DecodeError::TrailingBytes(1)));
    }
}
