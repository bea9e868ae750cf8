//! What a server supplies to the executor: its [`Effect`], the one thing it does in the
//! outside world, and nothing of the at-most-once machinery around it.

use std::future::Future;

use super::{Action, JournalEntry, JournalSpec};

/// What [`Effect::prepare`] makes of an approved payload: the exact request to send, and the
/// id the effect will carry, derived from the approval (a Message-ID, a
/// `customerTransactionId`), so the journal holds it before anything is sent and a read-back
/// can find it.
#[derive(Debug, Clone)]
pub struct Prepared<R> {
    /// The effect's id.
    pub effect_id: String,
    /// What `perform` sends.
    pub request: R,
}

/// What the service answered when it took the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Performed {
    /// The id the service gave the result, when it gives one (a `wamid`, a transfer id, a
    /// post id); `None` when the effect's own id names it (a Message-ID).
    pub receipt: Option<String>,
    /// The service's answer, for the journal and the result.
    pub detail: String,
}

/// Why an effect did not happen, or may have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    /// Nothing happened, and the effect knows it: the service refused, or could not be
    /// reached before the request was handed over. The approval may run again.
    #[error("{0}")]
    NotExecuted(String),
    /// It may have happened: the connection failed while the request was on its way, the
    /// service answered 5xx, or it did not answer in time.
    #[error("{0}")]
    InDoubt(String),
}

/// What reading back from the service found about one execution in doubt (contract
/// invariant 9: an outcome that may have happened is settled only this way, never by
/// trying again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookUp {
    /// The service has it.
    Happened {
        /// Its id at the service, if it has one.
        receipt: Option<String>,
        /// What the read-back showed.
        detail: String,
    },
    /// The service can tell, and it never happened.
    DidNotHappen {
        /// What the read-back showed.
        detail: String,
    },
    /// The service cannot tell (SMTP), or could not be asked now; it stays in doubt.
    CannotTell,
}

/// One server's action in the outside world. The executor calls `prepare` before it
/// writes anything, `perform` between the journal's `started` line and the outcome's, and
/// `look_up` only to settle an execution in doubt.
///
/// A WhatsApp send fits as: `prepare` builds the Graph API body with the approval id in
/// `biz_opaque_callback_data` (its effect id), `perform` POSTs it (the `wamid` is the
/// receipt; 131047 or a rate limit is `NotExecuted`, a 5xx or a lost answer `InDoubt`), and
/// no `look_up`: its status webhook calls [`Executor::read_back`](super::Executor::read_back).
/// A Wise transfer: the effect id is the `customerTransactionId` derived from the approval
/// id, and `look_up` GETs the transfer by it. A social post: `look_up` lists the recent posts
/// and finds the one carrying the approval's marker.
pub trait Effect: Send + Sync + 'static {
    /// The request `prepare` builds and `perform` sends.
    type Request: Send + Sync;

    /// The executor's name, journal and words (a `static` of the server).
    fn spec(&self) -> &'static JournalSpec;

    /// Where it acts, as the journal and results name it (`smtp://host:port`, `outbox`).
    fn target(&self) -> String;

    /// Checks the approved payload and builds the exact request, deriving the effect's id
    /// from the approval. Nothing leaves; an error means nothing happened.
    fn prepare(&self, action: &Action) -> Result<Prepared<Self::Request>, String>;

    /// Acts, once. The executor never calls it twice for one approval.
    fn perform(
        &self,
        action: &Action,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Performed, EffectError>> + Send;

    /// Whether the service can be asked if an execution happened (`look_up` says more than
    /// [`LookUp::CannotTell`]).
    fn can_look_up(&self) -> bool {
        false
    }

    /// Reads back from the service whether the execution `entry` describes happened, by its
    /// effect id. By default the service cannot tell.
    fn look_up(&self, entry: &JournalEntry) -> impl Future<Output = LookUp> + Send {
        let _ = entry;
        std::future::ready(LookUp::CannotTell)
    }
}
