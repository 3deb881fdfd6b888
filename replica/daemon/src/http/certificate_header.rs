//! A bound on the CBOR in a canister's `IC-Certificate` header, checked before the IC's
//! response verification decodes it.
//!
//! The header's certificate, tree and expression path are base64 CBOR written by the canister,
//! which is untrusted code. `ic-response-verification` 3.2 decodes them with `ic-cbor`, which
//! preallocates a map or an array of the length the CBOR declares and recurses once per nested
//! item: a declared length of 2^61 panicked with "Hash table capacity overflow" (found by the
//! `gateway_reply` fuzz target; its input is in `e2e/fuzz/regressions/gateway_reply/`), a
//! smaller one would allocate gigabytes, and deep nesting would overflow the stack. So every
//! field the verification would decode is walked first, read exactly as `ic-cbor` reads it
//! (a simple value or a float is followed by one more item, like a tag; indefinite lengths are
//! refused), and so is a delegation's certificate, which it decodes before checking any
//! signature: each declared length must fit in the bytes that remain (every item takes at
//! least one byte), nesting is at most [`MAX_DEPTH`] deep, and a field decodes to at most
//! [`MAX_FIELD_BYTES`]. A first version read simple values as CBOR does, and the fuzz target
//! got past it through a `true` before the map.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Deepest nesting accepted: a hash tree's forks are about 2·log2(entries) deep per label.
pub const MAX_DEPTH: usize = 256;
/// Largest field accepted, decoded: a certificate with its delegation and a witness of one
/// path take a few kilobytes.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// The base64 the verification decodes header fields with (padding optional, trailing bits
/// allowed), so that every field it would decode is checked here.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Checks the CBOR fields (`certificate`, `tree`, `expr_path`) of every `IC-Certificate`
/// header in `headers`; a field that is not base64 is left to the verification to refuse.
pub fn check(headers: &[(String, String)]) -> Result<(), String> {
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("ic-certificate") {
            continue;
        }
        for field in value.split(',') {
            let Some((key, rest)) = field.trim().split_once('=') else {
                continue;
            };
            if !matches!(key, "certificate" | "tree" | "expr_path") {
                continue;
            }
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            let encoded = rest.split(':').next().unwrap_or_default();
            let Ok(bytes) = BASE64.decode(encoded) else {
                continue;
            };
            if bytes.len() > MAX_FIELD_BYTES {
                return Err(format!(
                    "its {key} is {} bytes, more than {MAX_FIELD_BYTES}",
                    bytes.len()
                ));
            }
            bounded(&bytes).map_err(|e| format!("its {key} is not bounded CBOR: {e}"))?;
        }
    }
    Ok(())
}

/// Walks `bytes` as `ic-cbor` reads them: every declared length fits in what remains, and
/// nesting is at most [`MAX_DEPTH`] deep. The byte strings under a `certificate` key (a
/// delegation's certificate, which the verification decodes too, before any signature is
/// checked) are walked the same way.
pub fn bounded(bytes: &[u8]) -> Result<(), String> {
    let mut nested = Vec::new();
    let mut pos = 0;
    item(bytes, &mut pos, 0, &mut nested)?;
    for (start, end) in nested {
        let mut pos = 0;
        item(&bytes[start..end], &mut pos, 0, &mut Vec::new())
            .map_err(|e| format!("in the delegation's certificate: {e}"))?;
    }
    Ok(())
}

/// The head of an item, as `ic-cbor` reads it: its major type and argument. Indefinite
/// lengths (and the reserved values) are refused, as `ic-cbor` refuses them.
fn head(b: &[u8], pos: &mut usize) -> Result<(u8, u64), String> {
    let first = *b.get(*pos).ok_or("it ends inside an item")?;
    *pos += 1;
    let (major, info) = (first >> 5, first & 0x1f);
    let size = match info {
        0..=23 => return Ok((major, u64::from(info))),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => {
            return Err(format!(
                "additional information {info} (indefinite or reserved)"
            ));
        }
    };
    let arg = b
        .get(*pos..*pos + size)
        .ok_or("it ends inside an item's head")?
        .iter()
        .fold(0u64, |a, x| (a << 8) | u64::from(*x));
    *pos += size;
    Ok((major, arg))
}

/// Fails unless `count` items of at least `each` bytes can fit in what remains.
fn fits(b: &[u8], pos: usize, count: u64, each: u64) -> Result<(), String> {
    let left = (b.len() - pos) as u64;
    if count.saturating_mul(each) > left {
        return Err(format!(
            "it declares {count} entries with {left} bytes left"
        ));
    }
    Ok(())
}

/// Where the content of the string item at `pos` is, if it is one (past any tags or simple
/// values before it, which `ic-cbor` reads through). Only called on an item walked already.
fn string_at(b: &[u8], mut pos: usize) -> Option<(usize, usize)> {
    loop {
        match head(b, &mut pos).ok()? {
            (2 | 3, len) => return Some((pos, pos + len as usize)),
            (6 | 7, _) => continue,
            _ => return None,
        }
    }
}

/// Walks one item at `pos`, noting in `nested` where the byte strings under a `certificate`
/// key are.
fn item(
    b: &[u8],
    pos: &mut usize,
    depth: usize,
    nested: &mut Vec<(usize, usize)>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("it nests more than {MAX_DEPTH} deep"));
    }
    let (major, arg) = head(b, pos)?;
    match major {
        0 | 1 => Ok(()),
        2 | 3 => {
            fits(b, *pos, arg, 1)?;
            *pos += arg as usize;
            Ok(())
        }
        4 => {
            fits(b, *pos, arg, 1)?;
            for _ in 0..arg {
                item(b, pos, depth + 1, nested)?;
            }
            Ok(())
        }
        5 => {
            fits(b, *pos, arg, 2)?;
            for _ in 0..arg {
                let key = *pos;
                item(b, pos, depth + 1, nested)?;
                let key = string_at(b, key);
                let value = *pos;
                item(b, pos, depth + 1, nested)?;
                if key.is_some_and(|(start, end)| &b[start..end] == b"certificate") {
                    nested.extend(string_at(b, value));
                }
            }
            Ok(())
        }
        // `ic-cbor` reads a tag, and also a simple value or float, as a head followed by
        // one more item.
        _ => item(b, pos, depth + 1, nested),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(field: &str, cbor: &[u8]) -> Vec<(String, String)> {
        vec![(
            "IC-Certificate".into(),
            format!(
                "certificate=:AAAA:, {field}=:{}:, version=2",
                base64::engine::general_purpose::STANDARD.encode(cbor)
            ),
        )]
    }

    /// `{"delegation": {"certificate": h'<certificate>'}}`.
    fn delegating(certificate: &[u8]) -> Vec<u8> {
        let mut out = vec![0xa1, 0x6a];
        out.extend(b"delegation");
        out.extend([0xa1, 0x6b]);
        out.extend(b"certificate");
        out.extend([
            0x59,
            (certificate.len() >> 8) as u8,
            certificate.len() as u8,
        ]);
        out.extend(certificate);
        out
    }

    #[test]
    fn well_formed_cbor_passes() {
        // 55799([1, {"a": h'0102'}, "x", -3]), and a certificate-shaped map whose
        // delegation's certificate is bounded CBOR.
        let ok: &[&[u8]] = &[
            &[
                0xd9, 0xd9, 0xf7, 0x84, 0x01, 0xa1, 0x61, b'a', 0x42, 1, 2, 0x61, b'x', 0x22,
            ],
            &delegating(&[0xa1, 0x61, b'k', 0x01]),
        ];
        for cbor in ok {
            assert_eq!(bounded(cbor), Ok(()), "{cbor:02x?}");
            assert_eq!(check(&header("tree", cbor)), Ok(()));
        }
    }

    #[test]
    fn declared_lengths_past_the_end_and_deep_nesting_are_refused() {
        // A map of 2^61 entries (what crashed ic-cbor), an array of 2^32, a byte string of
        // 2^32, nesting 300 deep, a reserved head and a stray break.
        let deep = [vec![0x81; 300], vec![0x00]].concat();
        let bad: &[&[u8]] = &[
            &[0xbb, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x00],
            &[0x9a, 0xff, 0xff, 0xff, 0xff, 0x00],
            &[0x5a, 0xff, 0xff, 0xff, 0xff, 0x00],
            &deep,
            &[0x1c],
            &[0xff],
            &[0x82, 0x01],
            // What ic-cbor refuses: indefinite lengths.
            &[0x9f, 0x01, 0xff],
            &[0x5f, 0x41, 0x01, 0xff],
            // ic-cbor reads a simple value or a float like a tag, followed by an item: `true`
            // then a map of 2^61 entries (found by gateway_reply after the first fix), and a
            // float with nothing after it.
            &[0xf5, 0xbb, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x00],
            &[0x82, 0xf9, 0x3e, 0x00, 0x01],
        ];
        for cbor in bad {
            assert!(bounded(cbor).is_err(), "{cbor:02x?}");
            let e = check(&header("expr_path", cbor)).unwrap_err();
            assert!(e.starts_with("its expr_path is not bounded CBOR"), "{e}");
        }
        // A delegation's certificate is walked too, and only a certificate key's.
        let crash = [0xbb, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x00];
        let e = check(&header("certificate", &delegating(&crash))).unwrap_err();
        assert!(e.contains("in the delegation's certificate"), "{e}");
        let mut elsewhere = delegating(&crash);
        elsewhere[15] = b'C';
        assert_eq!(bounded(&elsewhere), Ok(()));
        // Other headers, other fields and text that is not base64 are not this check's.
        let other = vec![("x-ic-certificate".into(), "tree=:uw==:".into())];
        assert_eq!(check(&other), Ok(()));
        let other = vec![(
            "ic-certificate".into(),
            "version=:uw==:, tree=:not base64!:".into(),
        )];
        assert_eq!(check(&other), Ok(()));
    }

    #[test]
    fn a_field_over_the_size_limit_is_refused() {
        let big = [vec![0x5a, 0x00, 0x20, 0x00, 0x00], vec![0; 2 << 20]].concat();
        let e = check(&header("certificate", &big)).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
