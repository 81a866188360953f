//! The one form packed data takes inside the process: numbers native-endian (lengths and
//! counts as u32, stamps and ids as u64), byte strings as their u32 length and their bytes.
//! A packed exchange (`reference::packed`), packed device facts ([`super::entry::FactsFound`])
//! and the grader's queue (`reference::handoff`) are written and read with it.
//!
//! Nothing packed leaves the process, and a reader only reads what a writer here wrote; still,
//! a read past the end gives zeroes and empty strings rather than panicking.

/// Appends to a buffer.
pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    /// A length or count (past u32, its maximum: bodies and stanzas are capped far below).
    pub fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_ne_bytes());
    }

    pub fn number(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_ne_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }
}

/// Reads what a [`Writer`] wrote, in the same order.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.at.saturating_add(n).min(self.buf.len());
        let taken = &self.buf[self.at.min(end)..end];
        self.at = end;
        taken
    }

    /// Bytes not read yet: more than any count of items still to read (each takes one at least).
    pub fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The next byte, if any is left.
    pub fn next_byte(&mut self) -> Option<u8> {
        self.take(1).first().copied()
    }

    pub fn byte(&mut self) -> u8 {
        self.next_byte().unwrap_or_default()
    }

    pub fn count(&mut self) -> usize {
        self.take(4).try_into().map_or(0, u32::from_ne_bytes) as usize
    }

    pub fn number(&mut self) -> u64 {
        self.take(8).try_into().map_or(0, u64::from_ne_bytes)
    }

    pub fn bytes(&mut self) -> &'a [u8] {
        let n = self.count();
        self.take(n)
    }

    pub fn text(&mut self) -> String {
        text(self.bytes())
    }
}

/// Bytes written from text, as text: valid, and checked faster than a lossy reading checks it.
pub fn text(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes).into_owned(), str::to_owned)
}
