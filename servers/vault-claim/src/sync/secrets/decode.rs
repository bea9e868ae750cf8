//! The encodings a secret can hide under, undone before the rules look again: UTF-16 text,
//! and base64 runs (which may also be DER key material, with no text to match at all).
//!
//! Each step is linear and bounded: UTF-16 is decoded only when the bytes look like it (a
//! byte order mark, or NULs in a quarter of one byte lane), and a base64 run only from 28
//! characters (the shortest token encoded) up to [`MAX_RUN`].

use std::{fmt, sync::LazyLock};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use regex::bytes::{Regex, RegexBuilder};

/// An encoding a finding was under, outermost first in a finding's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-16, little-endian (Windows' "Unicode").
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
    /// Base64 (standard or URL-safe alphabet), possibly wrapped over lines.
    Base64,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Utf16Le => "UTF-16LE",
            Encoding::Utf16Be => "UTF-16BE",
            Encoding::Base64 => "base64",
        })
    }
}

/// The text these bytes hold if they look like UTF-16, once per likely byte order.
///
/// A byte order mark decides; without one, ASCII text in UTF-16 has a NUL in every other
/// byte, so a lane (even or odd bytes) at least a quarter NULs is taken as the high bytes.
/// Files with no NUL at all (every UTF-8 note) cost one `memchr`.
pub(super) fn utf16_texts(bytes: &[u8]) -> Vec<(Encoding, String)> {
    match bytes {
        [0xFF, 0xFE, rest @ ..] => return vec![(Encoding::Utf16Le, decode_utf16(rest, true))],
        [0xFE, 0xFF, rest @ ..] => return vec![(Encoding::Utf16Be, decode_utf16(rest, false))],
        _ => {}
    }
    if !bytes.contains(&0) {
        return Vec::new();
    }
    let units = bytes.len() / 2;
    let (mut even, mut odd) = (0, 0);
    for pair in bytes.chunks_exact(2) {
        even += usize::from(pair[0] == 0);
        odd += usize::from(pair[1] == 0);
    }
    let mut texts = Vec::new();
    if odd * 4 >= units {
        texts.push((Encoding::Utf16Le, decode_utf16(bytes, true)));
    }
    if even * 4 >= units {
        texts.push((Encoding::Utf16Be, decode_utf16(bytes, false)));
    }
    texts
}

/// UTF-16 bytes as text; a lone surrogate becomes U+FFFD, an odd last byte is dropped.
fn decode_utf16(bytes: &[u8], little_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|pair| {
        let pair = [pair[0], pair[1]];
        if little_endian {
            u16::from_le_bytes(pair)
        } else {
            u16::from_be_bytes(pair)
        }
    });
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// The fewest base64 characters worth decoding: a 20-character token (an AWS key id).
const MIN_RUN: usize = 28;

/// The most base64 characters decoded from one run. A key, even a 4096-bit RSA one as a
/// base64-encoded PEM file, is under 5 KiB of base64; an image pasted into a note can be
/// megabytes. Past this, the rest of a run is not decoded (only its start can be key material
/// of a plausible size), so a note with big images stays a linear, bounded scan.
pub(super) const MAX_RUN: usize = 256 * 1024;

/// A base64 run: a line of at least 16 base64 characters (standard or URL-safe), and the lines
/// right after it, each possibly indented or quoted (`> `), up to any padding. Blank lines
/// and anything else end it, so prose becomes no run and wrapped base64 becomes one.
static BASE64_RUN: LazyLock<Regex> = LazyLock::new(|| {
    RegexBuilder::new(r"[A-Za-z0-9+/_-]{16,}(?:[ \t]*\r?\n[ \t>]*[A-Za-z0-9+/_-]+)*=*")
        .unicode(false)
        .build()
        .expect("the base64 run pattern is fixed and valid")
});

/// Base64 that tolerates what a run's end can be: missing padding and stray trailing bits.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// The bytes each base64 run in `bytes` decodes to (at most [`MAX_RUN`] characters of each).
pub(super) fn base64_runs(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    BASE64_RUN.find_iter(bytes).filter_map(|run| {
        let mut chars: Vec<u8> = run
            .as_bytes()
            .iter()
            .filter_map(|&b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => Some(b),
                // The URL-safe alphabet, read as the standard one.
                b'-' => Some(b'+'),
                b'_' => Some(b'/'),
                _ => None,
            })
            .take(MAX_RUN)
            .collect();
        if chars.len() < MIN_RUN {
            return None;
        }
        // One character past a multiple of four holds no whole byte.
        if chars.len() % 4 == 1 {
            chars.pop();
        }
        LENIENT_BASE64.decode(&chars).ok()
    })
}

/// Whether `der` opens like a DER-encoded private key: PKCS#1 (RSA), DSA, SEC1 (EC), PKCS#8
/// (plain or encrypted) or a PKCS#12 key store. Certificates, public keys and signing
/// requests open otherwise and do not match.
pub(super) fn der_private_key(der: &[u8]) -> bool {
    /// PKCS#5 OIDs 1.2.840.113549.1.5.* (PBES1, PBES2): the encrypted PKCS#8 schemes.
    const PKCS5: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x05];
    /// PKCS#12 PBE OIDs 1.2.840.113549.1.12.1.*: the older encrypted PKCS#8 schemes.
    const PKCS12_PBE: &[u8] = &[
        0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01,
    ];
    let Some(body) = der_sequence(der) else {
        return false;
    };
    match body {
        // A version INTEGER (0 or 1) then the key: a modulus or the DSA parameters (PKCS#1,
        // DSA), an algorithm (PKCS#8, OneAsymmetricKey), or the key's octets (SEC1).
        [0x02, 0x01, 0x00 | 0x01, 0x02 | 0x30 | 0x04, ..] => true,
        // PKCS#12 (PFX): version 3, then its content.
        [0x02, 0x01, 0x03, 0x30, ..] => true,
        // EncryptedPrivateKeyInfo: an algorithm identifier naming a password-based scheme.
        [0x30, ..] => der_sequence(body)
            .is_some_and(|alg| alg.starts_with(PKCS5) || alg.starts_with(PKCS12_PBE)),
        _ => false,
    }
}

/// The contents of the DER SEQUENCE `der` opens with (cut short if `der` is). Lengths past
/// 64 KiB are not read: no key is that long.
fn der_sequence(der: &[u8]) -> Option<&[u8]> {
    let (len, header) = match der {
        [0x30, len @ 0..=0x7F, ..] => (usize::from(*len), 2),
        [0x30, 0x81, len, ..] => (usize::from(*len), 3),
        [0x30, 0x82, hi, lo, ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), 4),
        _ => return None,
    };
    let body = &der[header..];
    Some(&body[..len.min(body.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UTF-16 text encoded in one byte order, with or without a byte order mark.
    fn utf16(text: &str, little_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let units = bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16());
        for unit in units {
            out.extend(if little_endian {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            });
        }
        out
    }

    /// Both byte orders, with and without a mark, decode back to the text; UTF-8 is left alone.
    #[test]
    fn sync_secret_utf16_detected_and_decoded() {
        let text = "Notes: déjà vu, 東京.\r\n";
        for (le, encoding) in [(true, Encoding::Utf16Le), (false, Encoding::Utf16Be)] {
            for bom in [true, false] {
                let texts = utf16_texts(&utf16(text, le, bom));
                assert!(
                    texts.contains(&(encoding, text.to_owned())),
                    "{encoding} bom={bom}: {texts:?}"
                );
            }
        }
        assert!(utf16_texts(text.as_bytes()).is_empty());
        assert!(utf16_texts(b"").is_empty());
    }

    /// Wrapped, indented, quoted and URL-safe base64 decode whole; short runs and prose do not.
    #[test]
    fn sync_secret_base64_runs_decoded() {
        let payload: Vec<u8> = (0..=255).collect();
        let standard = base64::engine::general_purpose::STANDARD.encode(&payload);
        let wrapped: String = standard
            .as_bytes()
            .chunks(64)
            .map(|line| format!("  > {}\r\n", String::from_utf8_lossy(line)))
            .collect();
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&payload);
        for text in [standard.clone(), wrapped, format!("img: {url_safe}.")] {
            let runs: Vec<_> = base64_runs(text.as_bytes()).collect();
            assert_eq!(runs, vec![payload.clone()], "{text}");
        }
        let prose = "An ordinary paragraph, with words of ordinary length.\n\nAnd another.";
        assert_eq!(base64_runs(prose.as_bytes()).count(), 0);
        assert_eq!(base64_runs(b"c2hvcnQgb25l").count(), 0);
    }

    /// A run longer than the bound is decoded only up to it.
    #[test]
    fn sync_secret_base64_run_bounded() {
        let big = "QUJD".repeat(MAX_RUN);
        let runs: Vec<_> = base64_runs(big.as_bytes()).collect();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].len(), MAX_RUN / 4 * 3);
    }

    /// The openings of each private key kind match; certificates, public keys and a signing
    /// request (all SEQUENCEs too) do not.
    #[test]
    fn sync_secret_der_private_keys_recognised() {
        let keys: &[&[u8]] = &[
            // PKCS#8 Ed25519.
            &[
                0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04,
            ],
            // PKCS#1 RSA.
            &[
                0x30, 0x82, 0x04, 0xA4, 0x02, 0x01, 0x00, 0x02, 0x82, 0x01, 0x01, 0x00,
            ],
            // SEC1 EC.
            &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20, 0x11],
            // Encrypted PKCS#8 (PBES2).
            &[
                0x30, 0x81, 0x9B, 0x30, 0x57, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01,
                0x05, 0x0D, 0x30,
            ],
            // PKCS#12.
            &[0x30, 0x82, 0x09, 0x00, 0x02, 0x01, 0x03, 0x30, 0x82],
        ];
        for key in keys {
            assert!(der_private_key(key), "{key:02X?}");
        }
        let others: &[&[u8]] = &[
            // A certificate: SEQUENCE { SEQUENCE { [0] { INTEGER 2 } ... } }.
            &[
                0x30, 0x82, 0x03, 0x00, 0x30, 0x82, 0x02, 0x00, 0xA0, 0x03, 0x02, 0x01, 0x02,
            ],
            // An RSA SubjectPublicKeyInfo.
            &[
                0x30, 0x82, 0x01, 0x22, 0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D,
                0x01, 0x01, 0x01, 0x05, 0x00,
            ],
            // A PKCS#1 RSA public key: the modulus comes first.
            &[0x30, 0x82, 0x01, 0x0A, 0x02, 0x82, 0x01, 0x01, 0x00],
            // A signing request: SEQUENCE { SEQUENCE { INTEGER 0 ... } }.
            &[
                0x30, 0x82, 0x02, 0x00, 0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30,
            ],
            b"\x89PNG\r\n\x1a\n",
            b"",
        ];
        for other in others {
            assert!(!der_private_key(other), "{other:02X?}");
        }
    }
}
