//! Length-prefixed, checksummed frames over a byte stream.
//!
//! ```text
//! len    u32 LE   bytes of kind + payload (≤ the connection's limit)
//! kind   u8       1 = JSON message, 2 = data
//! payload
//! crc32  u32 LE   CRC-32 (IEEE) of kind + payload
//! ```
//! The length is checked against the limit *before* anything is allocated
//! or read, so a peer cannot make us buffer more than one frame; the limit
//! is [`PRE_AUTH_LIMIT`] until the peer has authenticated. Data frames carry
//! `[stream u8][bytes]`; [`DataWriter`] turns a `Write` (e.g.
//! `Image::write_to`) into a stream of data frames, so an image is sent as
//! it is produced, never buffered whole.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

/// Largest frame once authenticated.
pub const MAX_FRAME: usize = 4 << 20;
/// Largest frame before the peer has proved it holds the key.
pub const PRE_AUTH_LIMIT: usize = 4096;
/// Payload bytes per data frame when streaming.
pub const DATA_CHUNK: usize = 1 << 20;

pub const KIND_MSG: u8 = 1;
pub const KIND_DATA: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {limit} (refused without reading it)")]
    Oversized { len: usize, limit: usize },
    #[error("frame checksum mismatch (stored {stored:08x}, computed {computed:08x}): corrupt frame")]
    Checksum { stored: u32, computed: u32 },
    #[error("protocol: {0}")]
    Protocol(String),
}

/// One TCP connection, framed.
pub struct Framed {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    pub limit: usize,
    /// Bytes sent and received (frames included), for throughput figures.
    pub sent: u64,
    pub received: u64,
    /// Test hook: corrupt the payload of the n-th data frame sent (1-based).
    pub corrupt_data_frame: Option<u64>,
    data_frames: u64,
}

impl Framed {
    pub fn new(s: TcpStream) -> std::io::Result<Framed> {
        s.set_nodelay(true)?;
        let r = BufReader::with_capacity(256 << 10, s.try_clone()?);
        let w = BufWriter::with_capacity(256 << 10, s);
        Ok(Framed { r, w, limit: PRE_AUTH_LIMIT, sent: 0, received: 0, corrupt_data_frame: None, data_frames: 0 })
    }

    /// Test hook: corrupt the next data frame sent.
    pub fn corrupt_next_data_frame(&mut self) {
        self.corrupt_data_frame = Some(self.data_frames + 1);
    }

    pub fn stream(&self) -> &TcpStream {
        self.w.get_ref()
    }

    pub fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.stream().set_read_timeout(t)?;
        self.stream().set_write_timeout(t)
    }

    /// Writes one frame (buffered: call [`Framed::flush`] before waiting for an answer).
    pub fn send_raw(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), FrameError> {
        let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        if len > MAX_FRAME {
            return Err(FrameError::Oversized { len, limit: MAX_FRAME });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        for p in parts {
            crc.update(p);
        }
        let crc = crc.finalize();
        self.w.write_all(&(len as u32).to_le_bytes())?;
        self.w.write_all(&[kind])?;
        let corrupt = kind == KIND_DATA && {
            self.data_frames += 1;
            self.corrupt_data_frame == Some(self.data_frames)
        };
        for (i, p) in parts.iter().enumerate() {
            if corrupt && i == parts.len() - 1 && !p.is_empty() {
                let mut v = p.to_vec();
                let mid = v.len() / 2;
                v[mid] ^= 0x5a;
                self.w.write_all(&v)?;
            } else {
                self.w.write_all(p)?;
            }
        }
        self.w.write_all(&crc.to_le_bytes())?;
        self.sent += len as u64 + 8;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), FrameError> {
        self.w.flush()?;
        Ok(())
    }

    /// Sends one JSON message and flushes.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        let v = serde_json::to_vec(msg).map_err(|e| FrameError::Protocol(e.to_string()))?;
        self.send_raw(KIND_MSG, &[&v])?;
        self.flush()
    }

    pub fn send_data(&mut self, stream: u8, bytes: &[u8]) -> Result<(), FrameError> {
        self.send_raw(KIND_DATA, &[&[stream], bytes])
    }

    /// Reads one frame: `(kind, payload)`.
    pub fn recv_raw(&mut self) -> Result<(u8, Vec<u8>), FrameError> {
        let mut hdr = [0u8; 4];
        match self.r.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(hdr) as usize;
        if len > self.limit {
            return Err(FrameError::Oversized { len, limit: self.limit });
        }
        if len == 0 {
            return Err(FrameError::Protocol("empty frame (no kind byte)".into()));
        }
        let mut buf = vec![0u8; len + 4];
        self.r.read_exact(&mut buf).map_err(|e| if e.kind() == std::io::ErrorKind::UnexpectedEof { FrameError::Closed } else { e.into() })?;
        let stored = u32::from_le_bytes(buf[len..].try_into().unwrap_or_default());
        buf.truncate(len);
        let computed = crc32fast::hash(&buf);
        if stored != computed {
            return Err(FrameError::Checksum { stored, computed });
        }
        self.received += len as u64 + 8;
        let kind = buf.remove(0);
        Ok((kind, buf))
    }

    /// Reads the next frame, which must be a JSON message.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        let (kind, payload) = self.recv_raw()?;
        if kind != KIND_MSG {
            return Err(FrameError::Protocol(format!("expected a message frame, got kind {kind}")));
        }
        serde_json::from_slice(&payload).map_err(|e| FrameError::Protocol(format!("bad message: {e}")))
    }
}

/// A `Write` that sends what is written as data frames of one stream.
pub struct DataWriter<'a> {
    pub conn: &'a mut Framed,
    pub stream: u8,
    buf: Vec<u8>,
    pub total: u64,
}

impl<'a> DataWriter<'a> {
    pub fn new(conn: &'a mut Framed, stream: u8) -> Self {
        DataWriter { conn, stream, buf: Vec::with_capacity(DATA_CHUNK), total: 0 }
    }
    fn emit(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.conn.send_data(self.stream, &self.buf).map_err(std::io::Error::other)?;
        self.total += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl Write for DataWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(DATA_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == DATA_CHUNK {
            self.emit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()?;
        self.conn.flush().map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Framed, Framed) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (Framed::new(a).unwrap(), Framed::new(b).unwrap())
    }

    #[test]
    fn roundtrip_and_limits() {
        let (mut a, mut b) = pair();
        a.send(&serde_json::json!({"x": 1})).unwrap();
        let v: serde_json::Value = b.recv().unwrap();
        assert_eq!(v["x"], 1);
        // Over the pre-auth limit: refused from the header alone.
        a.send_data(1, &vec![7u8; PRE_AUTH_LIMIT + 10]).unwrap();
        a.flush().unwrap();
        assert!(matches!(b.recv_raw(), Err(FrameError::Oversized { .. })));
    }

    #[test]
    fn corrupt_frame_detected() {
        let (mut a, mut b) = pair();
        a.corrupt_data_frame = Some(1);
        a.send_data(1, b"hello world").unwrap();
        a.flush().unwrap();
        assert!(matches!(b.recv_raw(), Err(FrameError::Checksum { .. })));
    }
}
