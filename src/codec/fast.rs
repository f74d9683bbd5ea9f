//! A fast path for the commonest records: recording lines and `tracking`
//! payloads in plain JSON (strings without escapes, integer times). It
//! reads the same [`RawEvent`] serde would, in one pass over the line and
//! without serde's per-field machinery, and gives up (`None`) on anything
//! it does not handle exactly as serde_json does: escapes, duplicate
//! fields, a value of another type, leading zeros, trailing text, ... The
//! caller then decodes with serde, which also words every error. So the
//! fast path decides nothing: a record it reads is one serde reads the same
//! way (the tests compare both on mutated records), and every other record
//! goes the serde way.

use super::{RawContext, RawEvent, RawItem, RawTraits};
use dataflows::model::Str;

/// A cursor over JSON text.
struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            b: text.as_bytes(),
            i: 0,
        }
    }
}

/// Most nested arrays and objects an unknown field may hold (serde_json
/// skips deeper ones too; beyond this the fast path hands over).
const MAX_SKIP_DEPTH: usize = 64;

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        // Both ends are at ASCII quotes: character boundaries of the text.
        let s = self.text.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    /// The text of a JSON number (RFC 8259 grammar), not converted.
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        let digit = |p: &Self| p.b.get(p.i).is_some_and(u8::is_ascii_digit);
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while digit(self) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digit(self) {
                return None;
            }
            while digit(self) {
                self.i += 1;
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digit(self) {
                return None;
            }
            while digit(self) {
                self.i += 1;
            }
        }
        // A number runs into the next token only through a delimiter.
        match self.b.get(self.i) {
            None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => {}
            _ => return None,
        }
        self.text.get(start..self.i)
    }

    /// `null`, or a value read by `f`.
    fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Some(None)
        } else {
            f(self).map(Some)
        }
    }

    fn opt_str(&mut self) -> Option<Option<Str>> {
        self.nullable(|p| p.string().map(Str::new))
    }

    /// An unsigned integer as serde reads a `u64`: digits only.
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        self.nullable(|p| {
            let n = p.number()?;
            if n.bytes().all(|c| c.is_ascii_digit()) {
                n.parse().ok()
            } else {
                None
            }
        })
    }

    /// A signed integer as serde reads an `i64` (or `i32`).
    fn opt_int<T: std::str::FromStr>(&mut self) -> Option<Option<T>> {
        self.nullable(|p| {
            let n = p.number()?;
            let digits = n.strip_prefix('-').unwrap_or(n);
            if digits.bytes().all(|c| c.is_ascii_digit()) {
                n.parse().ok()
            } else {
                None
            }
        })
    }

    /// A number as serde reads an `f64`: by serde_json itself, so that the
    /// rounding is its own.
    fn opt_f64(&mut self) -> Option<Option<f64>> {
        self.nullable(|p| serde_json::from_str(p.number()?).ok())
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        self.nullable(|p| match p.peek()? {
            b't' => p.literal(b"true").map(|_| true),
            b'f' => p.literal(b"false").map(|_| false),
            _ => None,
        })
    }

    /// Skips any value (as serde skips an unknown field's), within
    /// [`MAX_SKIP_DEPTH`].
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                if depth >= MAX_SKIP_DEPTH {
                    return None;
                }
                self.object(|p, _| p.skip(depth + 1))
            }
            b'[' => {
                if depth >= MAX_SKIP_DEPTH {
                    return None;
                }
                self.array(|p| p.skip(depth + 1))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }

    /// An object: `field` is called with each key, the cursor at its value,
    /// and must consume the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array: `element` is called with the cursor at each element, and
    /// must consume it.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            element(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A nullable array of elements read by `item`.
    fn opt_array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Option<Vec<T>>> {
        self.nullable(|p| {
            let mut out = Vec::new();
            p.array(|p| {
                out.push(item(p)?);
                Some(())
            })?;
            Some(out)
        })
    }

    fn end(&mut self) -> Option<()> {
        (self.peek().is_none()).then_some(())
    }
}

/// Sets `slot` once: a repeated field gives up (serde reports it).
fn once<T>(seen: &mut u32, bit: u32, slot: &mut T, v: T) -> Option<()> {
    if *seen & (1 << bit) != 0 {
        return None;
    }
    *seen |= 1 << bit;
    *slot = v;
    Some(())
}

fn language_timezone(p: &mut Parser) -> Option<(Option<Str>, Option<Str>)> {
    let (mut language, mut timezone) = (None, None);
    let mut seen = 0;
    p.object(|p, key| match key {
        "language" => {
            let v = p.opt_str()?;
            once(&mut seen, 0, &mut language, v)
        }
        "timezone" => {
            let v = p.opt_str()?;
            once(&mut seen, 1, &mut timezone, v)
        }
        _ => p.skip(0),
    })?;
    Some((language, timezone))
}

fn item(p: &mut Parser) -> Option<RawItem> {
    let mut it = RawItem {
        product_id: None,
        quantity: None,
        price: None,
        seller_id: None,
    };
    let mut seen = 0;
    p.object(|p, key| match key {
        "product_id" => {
            let v = p.opt_str()?;
            once(&mut seen, 0, &mut it.product_id, v)
        }
        "quantity" => {
            let v = p.opt_u64()?;
            once(&mut seen, 1, &mut it.quantity, v)
        }
        "price" => {
            let v = p.opt_f64()?;
            once(&mut seen, 2, &mut it.price, v)
        }
        "seller_id" => {
            let v = p.opt_str()?;
            once(&mut seen, 3, &mut it.seller_id, v)
        }
        _ => p.skip(0),
    })?;
    Some(it)
}

fn event_object(p: &mut Parser) -> Option<RawEvent> {
    let mut r = RawEvent::default();
    let mut seen = 0u32;
    p.object(|p, key| {
        macro_rules! set {
            ($bit:expr, $field:ident, $read:expr) => {{
                let v = $read;
                once(&mut seen, $bit, &mut r.$field, v)
            }};
        }
        match key {
            "event_id" => set!(0, event_id, p.opt_str()?),
            "type" => set!(1, kind, p.opt_str()?),
            "ts" => set!(2, ts, p.opt_u64()?),
            "user_id" => set!(3, user_id, p.opt_str()?),
            "anonymous_id" => set!(4, anonymous_id, p.opt_str()?),
            "context" => set!(
                5,
                context,
                p.nullable(language_timezone)?
                    .map(|(language, timezone)| RawContext { language, timezone })
            ),
            "product_id" => set!(6, product_id, p.opt_str()?),
            "category_id" => set!(7, category_id, p.opt_str()?),
            "price" => set!(8, price, p.opt_f64()?),
            "query" => set!(9, query, p.opt_str()?),
            "result_count" => set!(10, result_count, p.opt_u64()?),
            "quantity" => set!(11, quantity, p.opt_u64()?),
            "order_id" => set!(12, order_id, p.opt_str()?),
            "items" => set!(13, items, p.opt_array(item)?),
            "payment" => set!(14, payment, p.opt_str()?),
            "reason" => set!(15, reason, p.opt_str()?),
            "seller_id" => set!(16, seller_id, p.opt_str()?),
            "traits" => set!(
                17,
                traits,
                p.nullable(language_timezone)?
                    .map(|(language, timezone)| RawTraits { language, timezone })
            ),
            "channel" => set!(18, channel, p.opt_str()?),
            "granted" => set!(19, granted, p.opt_bool()?),
            _ => p.skip(0),
        }
    })?;
    Some(r)
}

/// A `tracking` payload as serde would read it, or `None` to let serde.
pub(super) fn raw_event(payload: &str) -> Option<RawEvent> {
    let mut p = Parser::new(payload);
    let r = event_object(&mut p)?;
    p.end()?;
    Some(r)
}

/// A recording line whose topic precedes a `tracking` payload, read in one
/// pass: `(topic, payload)`, or `None` to let serde read the line. `is_tracking`
/// tells whether a topic name is the tracking topic.
pub(super) fn tracking_line(
    line: &str,
    is_tracking: impl Fn(&str) -> bool,
) -> Option<(&str, RawEvent)> {
    let mut p = Parser::new(line);
    let (mut topic, mut key, mut event): (Option<&str>, Option<Option<&str>>, Option<RawEvent>) =
        (None, None, None);
    let (mut partition, mut offset, mut timestamp) = (None, None, None);
    let mut seen = 0u32;
    p.object(|p, k| match k {
        "topic" => {
            let t = p.string()?;
            once(&mut seen, 0, &mut topic, Some(t))
        }
        "key" => {
            let v = p.nullable(Parser::string)?;
            once(&mut seen, 1, &mut key, Some(v))
        }
        "partition" => {
            let v = p.opt_int::<i32>()?;
            once(&mut seen, 2, &mut partition, Some(v))
        }
        "offset" => {
            let v = p.opt_int::<i64>()?;
            once(&mut seen, 3, &mut offset, Some(v))
        }
        "timestamp" => {
            let v = p.opt_int::<i64>()?;
            once(&mut seen, 4, &mut timestamp, Some(v))
        }
        "value" => {
            // Only a tracking payload, after its topic.
            if !topic.is_some_and(&is_tracking) {
                return None;
            }
            let e = event_object(p)?;
            once(&mut seen, 5, &mut event, Some(e))
        }
        _ => p.skip(0),
    })?;
    p.end()?;
    Some((topic?, event?))
}
