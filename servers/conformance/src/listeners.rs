//! 2026-07-28 `subscriptions/listen` streams and the list-change triggers that feed them.
//!
//! rmcp acknowledges each stream and enforces its filter; this module only keeps the open
//! streams' sinks so a trigger tool can reach every listener, whichever request opened it.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use aie_shared::rmcp::service::{SubscriptionContext, SubscriptionSendError, SubscriptionSink};

/// The open listen streams, shared by every session.
#[derive(Debug, Default)]
pub struct Listeners {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, SubscriptionSink>>,
}

impl Listeners {
    /// Serves one listen stream until the client closes it.
    pub async fn run(&self, context: SubscriptionContext) {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, context.sink().clone());
        // Removed on every exit path, cancellation included.
        let _registered = Registered {
            listeners: self,
            key,
        };
        context.cancelled().await;
    }

    /// Sends `notifications/tools/list_changed` to every listener that asked for it.
    pub async fn tools_changed(&self) {
        for sink in self.sinks() {
            report(sink.notify_tool_list_changed().await);
        }
    }

    /// Sends `notifications/prompts/list_changed` to every listener that asked for it.
    pub async fn prompts_changed(&self) {
        for sink in self.sinks() {
            report(sink.notify_prompt_list_changed().await);
        }
    }

    /// A snapshot of the sinks, so no lock is held across a send.
    fn sinks(&self) -> Vec<SubscriptionSink> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SubscriptionSink>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unregisters a listener when its stream ends.
struct Registered<'a> {
    listeners: &'a Listeners,
    key: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.listeners.lock().remove(&self.key);
    }
}

/// A listener that filtered the notification out, or went away, is expected; only
/// transport failures are worth a log line.
fn report(sent: Result<(), SubscriptionSendError>) {
    match sent {
        Ok(())
        | Err(
            SubscriptionSendError::NotificationNotAccepted(_)
            | SubscriptionSendError::SubscriptionClosed,
        ) => {}
        Err(e) => tracing::debug!(error = %e, "list-change notification not delivered"),
    }
}
