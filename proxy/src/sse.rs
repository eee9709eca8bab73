//! Incremental server-sent-events parsing (the rules of the WHATWG spec that
//! LLM providers rely on): events end at a blank line; `data:` lines of one
//! event are joined with `\n`; lines starting with `:` are comments; `\n`,
//! `\r\n` and `\r` all end a line; a network read may split anything.

use bytes::{Buf, BytesMut};

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, empty when absent.
    pub event: String,
    pub data: String,
}

/// Feeds bytes in, takes complete events out.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
    current: Event,
    has_data: bool,
    /// The previous chunk ended in `\r`: a leading `\n` belongs to it.
    skip_lf: bool,
}

impl Parser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.skip_lf && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
                self.skip_lf = false;
            }
            let end = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let line = self.buf.split_to(end);
            let terminator = self.buf[0];
            self.buf.advance(1);
            if terminator == b'\r' {
                self.skip_lf = true;
            }
            if line.is_empty() {
                if self.has_data || !self.current.event.is_empty() {
                    self.has_data = false;
                    return Some(std::mem::take(&mut self.current));
                }
                continue;
            }
            self.field(&line);
        }
    }

    fn field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.current.event = value.into_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut Parser) -> Vec<Event> {
        std::iter::from_fn(|| parser.next_event()).collect()
    }

    #[test]
    fn events_split_across_reads_are_reassembled() {
        let mut p = Parser::default();
        p.push(b"data: {\"a\"");
        assert!(p.next_event().is_none());
        p.push(b":1}\n\ndata: [DONE]\n");
        assert_eq!(all(&mut p), vec![Event { event: String::new(), data: "{\"a\":1}".into() }]);
        p.push(b"\n");
        assert_eq!(p.next_event().map(|e| e.data), Some("[DONE]".into()));
    }

    #[test]
    fn crlf_cr_comments_and_multiline_data_are_understood() {
        let mut p = Parser::default();
        p.push(b": keep-alive\r\nevent: ping\r\ndata: a\r\ndata:b\r\r\ndata: c\r");
        p.push(b"\n\n");
        let events = all(&mut p);
        assert_eq!(events[0], Event { event: "ping".into(), data: "a\nb".into() });
        assert_eq!(events[1].data, "c");
        assert_eq!(events.len(), 2);
    }
}
