//! The hand-off from the gateway's guard to the executors it hosts in the same process: the
//! exact [`Authorized`] payload the ledger check let through, never a second read of the
//! approval file (a sync could land between the check and the action and change it).
//!
//! Why a shared table and not the request: a call reaches a hosted server three ways (a
//! direct call, the in-process `/mcp` router, a legacy session over an in-memory pipe), and
//! only the first carries Rust values; `_meta` would carry it on all three, but it is also
//! what a client sends, so the server could not tell the guard's from a forgery. The table
//! is built by the composition root and given only to the guard and to the servers it hosts:
//! nothing that arrives over the network can write to it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::{approvals::Authorized, vault::ApprovalId};

/// Authorizations the guard granted and an in-process executor has not yet taken, by
/// approval. The ledger authorizes one use of an approval at a time, so there is at most one
/// per approval. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedActions {
    granted: Arc<Mutex<HashMap<ApprovalId, Authorized>>>,
}

impl AuthorizedActions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<ApprovalId, Authorized>> {
        self.granted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `authorized` to whichever hosted executor the call reaches (the guard, after
    /// the ledger marked the approval used and before the call is forwarded).
    pub fn grant(&self, authorized: Authorized) {
        self.table()
            .insert(authorized.approval_id.clone(), authorized);
    }

    /// Takes the authorization for `id`, once: the executor acts on it.
    pub fn take(&self, id: &ApprovalId) -> Option<Authorized> {
        self.table().remove(id)
    }

    /// Drops the authorization of the use `use_seq` of `id` if no executor took it (the
    /// guard, once the call is over: an upstream served it, or the arguments never parsed).
    /// Returns whether it was still there.
    pub fn withdraw(&self, id: &ApprovalId, use_seq: u64) -> bool {
        let mut table = self.table();
        if table.get(id).is_some_and(|a| a.use_seq == use_seq) {
            table.remove(id);
            return true;
        }
        false
    }

    /// How many authorizations wait.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
