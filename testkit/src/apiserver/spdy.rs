//! SPDY/3.1 framing, as far as `kubectl port-forward` uses it (a kubelet's part of the conversation).
//!
//! kubectl tunnels SPDY through a WebSocket (since 1.31) or speaks it on an upgraded HTTP/1.1 connection. Each
//! forwarded connection is a pair of client-initiated streams whose header blocks name the port; header blocks are
//! one zlib stream per direction, primed with the dictionary the SPDY/3 draft defines. Pure: frames in, frames out,
//! unit-tested without a socket.
//!
//! Flow control (WINDOW_UPDATE, SETTINGS) is read and ignored, as kubectl's own SPDY library (moby/spdystream) does:
//! neither side ever waits for a window.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const VERSION: u16 = 3;
const CONTROL_BIT: u8 = 0x80;
/// The last frame the sender sends on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// A frame's 24-bit length field; larger data is split.
pub const MAX_FRAME_DATA: usize = 0x00ff_ffff;
/// Header blocks beyond this are refused rather than inflated (kubectl sends three short headers).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// RST_STREAM status: the frame broke the protocol (unknown stream, bad headers).
pub const PROTOCOL_ERROR: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Vec<(String, String)>,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and control types this server has no use for.
    Ignored {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("a {kind} frame of {length} bytes is too short")]
    Short { kind: &'static str, length: usize },
    #[error("a header block cannot be inflated: {0}")]
    Inflate(String),
    #[error("a header block is malformed: {0}")]
    HeaderBlock(&'static str),
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1): header names and
/// values as length-prefixed words, then common values run together.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dict = Vec::with_capacity(1423);
    for word in WORDS {
        dict.put_u32(word.len() as u32);
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
}

/// One side of a SPDY connection: the inflater for what the peer sends, the deflater for what we send. Both are
/// connection-wide: every header block continues the same zlib stream.
pub struct Codec {
    dictionary: Vec<u8>,
    inflate: Decompress,
    deflate: Compress,
    deflate_primed: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            dictionary: dictionary(),
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::default(), true),
            deflate_primed: false,
        }
    }
}

impl Codec {
    /// The next whole frame in `buf` (consumed), or None when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + length {
            buf.reserve(8 + length - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(length).freeze();
        let flags = head[4];
        if head[0] & CONTROL_BIT == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |min: usize, name: &'static str| {
            if length < min {
                Err(SpdyError::Short { kind: name, length })
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            1 => {
                need(10, "SYN_STREAM")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                body.advance(6); // associated stream, priority, slot: kubectl sets none that matter here
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers: self.inflate_headers(&body)?,
                }
            }
            2 => {
                need(4, "SYN_REPLY")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers: self.inflate_headers(&body)?,
                }
            }
            3 => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            6 => {
                need(4, "PING")?;
                Frame::Ping { id: body.get_u32() }
            }
            7 => {
                need(8, "GOAWAY")?;
                Frame::GoAway {
                    last_stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            8 => {
                need(4, "HEADERS")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                Frame::Headers {
                    stream_id,
                    flags,
                    headers: self.inflate_headers(&body)?,
                }
            }
            other => Frame::Ignored { kind: other },
        };
        Ok(Some(frame))
    }

    /// Appends `frame` to `out`. Data larger than a frame can carry must be split by the caller.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        match frame {
            Frame::Data { stream_id, flags, data } => {
                debug_assert!(data.len() <= MAX_FRAME_DATA);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(u32::from(*flags) << 24 | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.deflate_headers(headers);
                let mut body = Vec::with_capacity(10 + block.len());
                body.put_u32(*stream_id);
                body.put_u32(0);
                body.put_u16(0);
                body.extend_from_slice(&block);
                control(out, 1, *flags, &body);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) { 2 } else { 8 };
                let block = self.deflate_headers(headers);
                let mut body = Vec::with_capacity(4 + block.len());
                body.put_u32(*stream_id);
                body.extend_from_slice(&block);
                control(out, kind, *flags, &body);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, 3, 0, &[stream_id.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ping { id } => control(out, 6, 0, &id.to_be_bytes()),
            Frame::GoAway { last_stream_id, status } => control(
                out,
                7,
                0,
                &[last_stream_id.to_be_bytes(), status.to_be_bytes()].concat(),
            ),
            Frame::Ignored { .. } => {}
        }
    }

    fn inflate_headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            let before = self.inflate.total_in();
            if plain.capacity() - plain.len() < 1024 {
                plain.reserve(4096);
            }
            match self
                .inflate
                .decompress_vec(&block[consumed..], &mut plain, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| SpdyError::Inflate(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Inflate(e.to_string())),
            }
            consumed += (self.inflate.total_in() - before) as usize;
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlock("larger than 64 KiB"));
            }
            if consumed >= block.len() && plain.len() < plain.capacity() {
                break;
            }
        }
        parse_header_block(&plain)
    }

    fn deflate_headers(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        if !self.deflate_primed {
            self.deflate
                .set_dictionary(&self.dictionary)
                .expect("a fresh zlib stream takes a dictionary");
            self.deflate_primed = true;
        }
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.extend_from_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut consumed = 0;
        loop {
            let before = self.deflate.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            self.deflate
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflating into a growing buffer cannot fail");
            consumed += (self.deflate.total_in() - before) as usize;
            // A sync flush is complete once all input is taken and zlib stopped short of the buffer's end.
            if consumed >= plain.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(u32::from(flags) << 24 | body.len() as u32);
    out.extend_from_slice(body);
}

/// Name/value pairs: a count, then length-prefixed names and values (all 32-bit, big-endian).
fn parse_header_block(mut plain: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    fn field(plain: &mut &[u8]) -> Result<String, SpdyError> {
        if plain.remaining() < 4 {
            return Err(SpdyError::HeaderBlock("a length is cut short"));
        }
        let len = plain.get_u32() as usize;
        if plain.remaining() < len {
            return Err(SpdyError::HeaderBlock("a name or value is cut short"));
        }
        let text = String::from_utf8(plain[..len].to_vec()).map_err(|_| SpdyError::HeaderBlock("not UTF-8"))?;
        plain.advance(len);
        Ok(text)
    }
    if plain.remaining() < 4 {
        return Err(SpdyError::HeaderBlock("the pair count is missing"));
    }
    let count = plain.get_u32() as usize;
    // Every pair takes at least 8 bytes: a count beyond that is a lie, not an allocation to make.
    if count > plain.remaining() / 8 {
        return Err(SpdyError::HeaderBlock("more pairs than bytes"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = field(&mut plain)?;
        let value = field(&mut plain)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// The value of header `name` (SPDY names are lower case).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_dictionary_is_the_drafts() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dict.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream_per_direction() {
        let (mut client, mut server) = (Codec::default(), Codec::default());
        let mut wire = Vec::new();
        for id in [1u32, 3, 5] {
            let headers = pairs(&[("streamtype", "data"), ("port", "3306"), ("requestid", &id.to_string())]);
            client.encode(
                &Frame::SynStream {
                    stream_id: id,
                    flags: 0,
                    headers,
                },
                &mut wire,
            );
        }
        let mut buf = BytesMut::from(&wire[..]);
        for id in [1u32, 3, 5] {
            let Some(Frame::SynStream { stream_id, headers, .. }) = server.decode(&mut buf).unwrap() else {
                panic!("a SYN_STREAM")
            };
            assert_eq!(stream_id, id);
            assert_eq!(header(&headers, "port"), Some("3306"));
            assert_eq!(header(&headers, "requestid"), Some(id.to_string().as_str()));
        }
        assert!(buf.is_empty());
        // The reply direction has its own stream, primed with the same dictionary.
        let mut wire = Vec::new();
        server.encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            &mut wire,
        );
        let frame = client.decode(&mut BytesMut::from(&wire[..])).unwrap();
        assert_eq!(
            frame,
            Some(Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![]
            })
        );
    }

    #[test]
    fn frames_wait_for_their_last_byte_and_keep_flags() {
        let mut codec = Codec::default();
        let mut wire = Vec::new();
        let data = Bytes::from_static(b"SELECT 1");
        codec.encode(
            &Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: data.clone(),
            },
            &mut wire,
        );
        codec.encode(&Frame::Ping { id: 7 }, &mut wire);
        codec.encode(
            &Frame::RstStream {
                stream_id: 3,
                status: PROTOCOL_ERROR,
            },
            &mut wire,
        );
        codec.encode(
            &Frame::GoAway {
                last_stream_id: 3,
                status: 0,
            },
            &mut wire,
        );
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Data {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    data
                },
                Frame::Ping { id: 7 },
                Frame::RstStream {
                    stream_id: 3,
                    status: PROTOCOL_ERROR
                },
                Frame::GoAway {
                    last_stream_id: 3,
                    status: 0
                },
            ]
        );
    }

    #[test]
    fn flow_control_frames_are_read_and_ignored() {
        let mut wire = Vec::new();
        control(&mut wire, 9, 0, &[0, 0, 0, 1, 0, 1, 0, 0]); // WINDOW_UPDATE
        control(&mut wire, 4, 0, &[0, 0, 0, 0]); // SETTINGS, no entries
        let mut buf = BytesMut::from(&wire[..]);
        let mut codec = Codec::default();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Ignored { kind: 9 }));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Ignored { kind: 4 }));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut codec = Codec::default();
        let mut wire = Vec::new();
        control(&mut wire, 6, 0, &[0, 1]);
        assert_eq!(
            codec.decode(&mut BytesMut::from(&wire[..])),
            Err(SpdyError::Short {
                kind: "PING",
                length: 2
            })
        );
        let v2 = vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert_eq!(codec.decode(&mut BytesMut::from(&v2[..])), Err(SpdyError::Version(2)));
        wire.clear();
        control(&mut wire, 1, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&wire[..])),
            Err(SpdyError::Inflate(_))
        ));
        assert_eq!(
            parse_header_block(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]),
            Err(SpdyError::HeaderBlock("more pairs than bytes"))
        );
        assert_eq!(
            parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'p', 0, 0, 0, 0, 0, 0, 0]),
            Err(SpdyError::HeaderBlock("a name or value is cut short"))
        );
    }
}
