//! The structure of a page body, read on bytes.
//!
//! serde_json reads a whole body or nothing: one invalid UTF-8 byte inside one event's
//! string would fail the page, and every retry would fail the same way. This scanner
//! checks only the structure (brackets, strings, commas). Each element of `data` is
//! first offered to a reader, which reads an event where it starts and says where it
//! ends; the scanner hands back the byte span of each element the reader did not take,
//! so that it can be read on its own. Any byte may appear inside a string here; a body
//! cut short or otherwise broken in its structure is still not a page (and is retried).

use super::NotAPage;

/// Reads the element of `data` that starts at the byte given, and says how many bytes
/// it took; `None` leaves the element to the scan, which then hands back its bytes.
pub(super) type Reader<'r> = &'r mut dyn FnMut(usize) -> Option<usize>;

/// The parts of the top-level object that matter.
pub(super) struct TopLevel<'a> {
    /// `Some` when the key is present: the elements the reader did not take (none for
    /// `null` or `[]`).
    pub data: Option<Vec<&'a [u8]>>,
    pub pagination: Option<&'a [u8]>,
    pub meta: Option<&'a [u8]>,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn broken(what: &str, at: usize) -> NotAPage {
    NotAPage(format!("{what} at byte {at}"))
}

impl<'a> Scanner<'a> {
    fn skip_whitespace(&mut self) {
        while self.bytes.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Result<u8, NotAPage> {
        self.bytes.get(self.at).copied().ok_or_else(|| broken("the body ends early", self.at))
    }

    fn next(&mut self) -> Result<u8, NotAPage> {
        let b = self.peek()?;
        self.at += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), NotAPage> {
        self.skip_whitespace();
        let at = self.at;
        if self.next()? == want { Ok(()) } else { Err(broken(&format!("expected '{}'", want as char), at)) }
    }

    /// A string starting at the cursor; returns its bytes between the quotes.
    fn string(&mut self) -> Result<&'a [u8], NotAPage> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            let rest = &self.bytes[self.at..];
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                self.at = self.bytes.len();
                return Err(broken("a string is not closed", start));
            };
            self.at += i;
            if self.next()? == b'"' {
                return Ok(&self.bytes[start..self.at - 1]);
            }
            // An escape: whatever follows the backslash is part of the string.
            self.next()?;
        }
    }

    /// A number, `true`, `false` or `null`: the structure only needs its extent.
    fn scalar(&mut self) -> Result<(), NotAPage> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
            self.at += 1;
        }
        if self.at == start { Err(broken("expected a value", start)) } else { Ok(()) }
    }

    /// One whole value (any depth, without recursion) starting at the cursor.
    fn value(&mut self) -> Result<&'a [u8], NotAPage> {
        self.skip_whitespace();
        let start = self.at;
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    let close = if self.next()? == b'{' { b'}' } else { b']' };
                    self.skip_whitespace();
                    if self.peek()? == close {
                        self.at += 1;
                    } else {
                        open.push(close);
                        if close == b'}' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: close what it ends, or go on to the next one.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(&self.bytes[start..self.at]);
                };
                self.skip_whitespace();
                let at = self.at;
                match self.next()? {
                    b',' => {
                        if close == b'}' {
                            self.key()?;
                        }
                        break;
                    }
                    b if b == close => {
                        open.pop();
                    }
                    _ => return Err(broken(&format!("expected ',' or '{}'", close as char), at)),
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<&'a [u8], NotAPage> {
        self.skip_whitespace();
        let key = self.string()?;
        self.expect(b':')?;
        Ok(key)
    }
}

/// Reads the top-level object of a page body.
pub(super) fn top_level<'a>(bytes: &'a [u8], read: Reader<'_>) -> Result<TopLevel<'a>, NotAPage> {
    let mut s = Scanner { bytes, at: 0 };
    let mut top = TopLevel { data: None, pagination: None, meta: None };
    s.expect(b'{')?;
    s.skip_whitespace();
    if s.peek()? == b'}' {
        s.at += 1;
    } else {
        loop {
            let key = s.key()?;
            s.skip_whitespace();
            let at = s.at;
            let duplicate = || broken(&format!("\"{}\" appears twice", String::from_utf8_lossy(key)), at);
            match key {
                b"data" => {
                    if top.data.is_some() {
                        return Err(duplicate());
                    }
                    top.data = Some(data(&mut s, read)?);
                }
                b"pagination" => {
                    if top.pagination.replace(s.value()?).is_some() {
                        return Err(duplicate());
                    }
                }
                b"meta" => {
                    if top.meta.replace(s.value()?).is_some() {
                        return Err(duplicate());
                    }
                }
                _ => {
                    s.value()?;
                }
            }
            s.skip_whitespace();
            let at = s.at;
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return Err(broken("expected ',' or '}'", at)),
            }
        }
    }
    s.skip_whitespace();
    if s.at != bytes.len() {
        return Err(broken("unexpected text after the page", s.at));
    }
    Ok(top)
}

/// The value of `data`: the array's elements that `read` did not take, or none for `null`.
fn data<'a>(s: &mut Scanner<'a>, read: Reader<'_>) -> Result<Vec<&'a [u8]>, NotAPage> {
    let at = s.at;
    match s.peek()? {
        b'[' => {}
        b'n' if s.value()? == b"null" => return Ok(Vec::new()),
        _ => return Err(broken("\"data\" is not an array", at)),
    }
    s.at += 1;
    let mut elements = Vec::new();
    s.skip_whitespace();
    if s.peek()? == b']' {
        s.at += 1;
        return Ok(elements);
    }
    loop {
        s.skip_whitespace();
        match read(s.at) {
            // The scan goes on after the element the reader took (one of no bytes
            // would be no element: it is scanned).
            Some(taken) if taken > 0 => s.at += taken,
            _ => elements.push(s.value()?),
        }
        s.skip_whitespace();
        let at = s.at;
        match s.next()? {
            b',' => {}
            b']' => return Ok(elements),
            _ => return Err(broken("expected ',' or ']'", at)),
        }
    }
}
