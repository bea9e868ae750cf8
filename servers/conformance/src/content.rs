//! The media the fixtures return: a real PNG and a real WAV, so a client that decodes
//! what it receives gets valid files, not just valid base64.

use base64::{Engine, engine::general_purpose::STANDARD};

/// A 1x1 red PNG, base64: the suite's "minimal test image".
pub const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// The PNG's media type.
pub const PNG_MIME: &str = "image/png";

/// The WAV's media type.
pub const WAV_MIME: &str = "audio/wav";

/// Samples per second of the WAV.
const WAV_RATE: u32 = 8_000;

/// A 1 ms, 8 kHz, mono, 16-bit PCM WAV of silence, base64: the suite's "minimal test
/// audio file".
pub fn wav_base64() -> String {
    STANDARD.encode(silent_wav(WAV_RATE / 1_000))
}

/// A canonical 44-byte-header PCM WAV holding `samples` silent 16-bit mono samples.
fn silent_wav(samples: u32) -> Vec<u8> {
    const CHANNELS: u16 = 1;
    const BITS: u16 = 16;
    let block_align = CHANNELS * BITS / 8;
    let data_len = samples * u32::from(block_align);
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&CHANNELS.to_le_bytes());
    wav.extend_from_slice(&WAV_RATE.to_le_bytes());
    wav.extend_from_slice(&(WAV_RATE * u32::from(block_align)).to_le_bytes());
    wav.extend_from_slice(&block_align.to_le_bytes());
    wav.extend_from_slice(&BITS.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PNG decodes and carries the PNG signature and an IHDR of 1x1.
    #[test]
    fn png_is_a_png() {
        let png = STANDARD.decode(PNG_BASE64).expect("valid base64");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[16..24], &[0, 0, 0, 1, 0, 0, 0, 1]);
    }

    /// The WAV's RIFF and data sizes agree with its length.
    #[test]
    fn wav_headers_match_length() {
        let wav = STANDARD.decode(wav_base64()).expect("valid base64");
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        let riff = u32::from_le_bytes(wav[4..8].try_into().expect("4 bytes"));
        assert_eq!(riff as usize, wav.len() - 8);
        assert_eq!(&wav[36..40], b"data");
        let data = u32::from_le_bytes(wav[40..44].try_into().expect("4 bytes"));
        assert_eq!(data as usize, wav.len() - 44);
        assert_eq!(data, 16, "8 samples of 2 bytes");
    }
}
