//! The vault-claim server: the vault's git sync, claims that hold across replicas, and the
//! `vault_*` MCP tools.
//!
//! # Layout
//! - [`sync`]: the replica: commit (leaving secrets out), fetch, a semantic three-way merge
//!   of tasks by id, push as the compare-and-swap that decides claims.
//! - [`transport`]: git over ssh and https without OpenSSL.
//! - [`server`]: the `vault_*` tools.

pub mod server;
pub mod sync;
pub mod transport;
