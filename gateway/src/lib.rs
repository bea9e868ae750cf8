//! aie's composition root: the `aie` command line and the stacks it starts.
//!
//! # Layout
//! - [`cli`]: argument parsing and the commands of the contract, each printing one clear
//!   line on a user's error.
//! - [`serve`]: hosting one server on its own listener.
//! - [`approvals_cmd`]: `aie approvals ...` and `aie audit verify`, the owner's side.
//! - [`config_cmd`]: `aie config check|schema`, the config file's validation and schema.
//! - [`demo`]: `aie demo`, the self-contained run that shows the suite working.
//! - [`gateway`]: the front door: one MCP endpoint merging the backends' tools, routing
//!   and proxying both protocol eras, behind bearer tokens and a policy hook.
//! - [`suite`]: the suite's servers, one row each (name, zones, how a stack hosts it, its
//!   executors' journals): what `aie up` hosts and where `aie approvals` finds executions in
//!   doubt.
//! - [`up`]: `aie up --zone cloud|local`, one zone's whole stack in one process.
//! - [`vault_cmd`]: `aie vault ...`, vault maintenance.

pub mod approvals_cmd;
pub mod cli;
pub mod config_cmd;
pub mod demo;
pub mod gateway;
pub mod serve;
pub mod suite;
pub mod up;
pub mod vault_cmd;
