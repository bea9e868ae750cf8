//! Sealed SEP-2322 `requestState`: what a multi-round tool remembers between rounds.
//!
//! The client echoes `requestState` back verbatim, so on the way in it is untrusted input.
//! Every state is HMAC-sealed with a key made fresh for each process, bound to the tool
//! that issued it (a state from one tool cannot be replayed against another) and given a
//! lifetime. Anything that does not open cleanly is a `-32602` protocol error, which is
//! what the suite's tampered-state scenario expects.

use std::{sync::Arc, time::Duration};

use aie_shared::rmcp::{
    ErrorData,
    model::{RequestStateCodec, SealOptions},
};
use serde::{Deserialize, Serialize};

/// How long a sealed state stays valid: long enough for a person to answer an elicitation.
pub const STATE_TTL: Duration = Duration::from_secs(15 * 60);

/// Where a multi-round tool call stands; the only thing ever sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for the user's confirmation.
    Confirm,
    /// Waiting for several inputs requested together.
    Gather,
    /// Waiting for the answer to round `round` (1-based) of a multi-round flow.
    Round {
        /// The round whose answer is awaited.
        round: u8,
    },
}

/// Seals and opens [`Stage`]s; cheap to clone (the key is shared).
#[derive(Clone, Debug)]
pub struct Sealer {
    codec: Arc<RequestStateCodec>,
}

impl Sealer {
    /// A sealer with a fresh random key. States do not survive a restart, which only
    /// costs a client one extra round.
    pub fn random() -> Self {
        // Two v4 UUIDs carry 244 random bits from the OS generator.
        let mut key = Vec::with_capacity(RequestStateCodec::MIN_KEY_LENGTH);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::with_key(key).expect("two UUIDs are exactly the minimum key length")
    }

    /// A sealer with `key` (at least [`RequestStateCodec::MIN_KEY_LENGTH`] bytes).
    pub fn with_key(key: Vec<u8>) -> Result<Self, String> {
        let codec = RequestStateCodec::try_new(key).map_err(|e| e.to_string())?;
        Ok(Self {
            codec: Arc::new(codec),
        })
    }

    /// Seals `stage` for the tool (or prompt) named `owner`.
    pub fn seal(&self, owner: &str, stage: Stage) -> Result<String, ErrorData> {
        let options = SealOptions::new()
            .associated_data(owner.as_bytes())
            .ttl(STATE_TTL);
        self.codec
            .seal_json_with(&stage, &options)
            .map_err(|e| ErrorData::internal_error(format!("cannot seal requestState: {e}"), None))
    }

    /// Opens a state echoed back to `owner`. Forged, altered, expired or foreign states
    /// are all the same `-32602` error: the reason is not the client's business.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Stage, ErrorData> {
        self.codec
            .open_json_with(sealed, owner.as_bytes())
            .map_err(|e| {
                tracing::debug!(owner, error = %e, "rejected requestState");
                ErrorData::invalid_params("requestState failed integrity verification", None)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aie_shared::rmcp::model::ErrorCode;

    fn sealer() -> Sealer {
        Sealer::random()
    }

    /// A sealed stage opens to itself for the tool that sealed it.
    #[test]
    fn round_trip() {
        let s = sealer();
        for stage in [Stage::Confirm, Stage::Gather, Stage::Round { round: 2 }] {
            let sealed = s.seal("tool_a", stage).expect("seals");
            assert_eq!(s.open("tool_a", &sealed).expect("opens"), stage);
        }
    }

    /// Each round gets its own token, so the multi-round scenario sees the state evolve.
    #[test]
    fn rounds_give_distinct_tokens() {
        let s = sealer();
        let one = s.seal("t", Stage::Round { round: 1 }).expect("seals");
        let two = s.seal("t", Stage::Round { round: 2 }).expect("seals");
        assert_ne!(one, two);
    }

    /// Appending, flipping a character or truncating is caught, as a -32602 error.
    #[test]
    fn tampering_is_rejected() {
        let s = sealer();
        let sealed = s.seal("t", Stage::Confirm).expect("seals");
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        for bad in [
            format!("{sealed}-TAMPERED"),
            flipped,
            sealed[..sealed.len() / 2].to_owned(),
            String::new(),
            "not a state".to_owned(),
        ] {
            let err = s.open("t", &bad).expect_err("tampered state must not open");
            assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{bad}");
        }
    }

    /// A state is bound to its tool and to this process's key.
    #[test]
    fn foreign_states_are_rejected() {
        let s = sealer();
        let sealed = s.seal("tool_a", Stage::Gather).expect("seals");
        assert!(s.open("tool_b", &sealed).is_err());
        assert!(sealer().open("tool_a", &sealed).is_err());
    }

    /// Short keys are refused rather than silently weakening the seal.
    #[test]
    fn short_keys_are_refused() {
        assert!(Sealer::with_key(vec![7; 8]).is_err());
        assert!(Sealer::with_key(vec![7; RequestStateCodec::MIN_KEY_LENGTH]).is_ok());
    }
}
