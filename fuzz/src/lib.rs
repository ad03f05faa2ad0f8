//! What the fuzz targets share: reading their inputs as text (so that the
//! seeds are readable and the fuzzer's finds can be read back), and the
//! header maps made of it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Splits an input into blocks separated by a line holding only `--`.
pub fn blocks(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match find(rest, b"\n--\n") {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + 4..];
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The lines of a block (split on `\n`; a final `\r` is part of the line).
pub fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block.split(|&b| b == b'\n')
}

/// One header line `name: value`, or `None` when the name or the value is
/// not one `http` accepts. One space after the colon is dropped; any other
/// is kept in the value.
pub fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = &line[colon + 1..];
    let value = value.strip_prefix(b" ").unwrap_or(value);
    let value = HeaderValue::from_bytes(value).ok()?;
    Some((name, value))
}

/// A header map of a block's lines, in order (repeated names appended);
/// lines that are not headers are skipped.
pub fn header_map(block: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines(block).filter_map(header_line) {
        map.append(name, value);
    }
    map
}

/// Every value of `name` in a map, as bytes, in order.
pub fn values<'a>(map: &'a HeaderMap, name: &HeaderName) -> Vec<&'a [u8]> {
    map.get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}
