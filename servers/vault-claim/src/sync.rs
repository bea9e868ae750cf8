//! Git sync for the vault, and claims that hold across replicas.
//!
//! Every replica (the cloud zone's, the owner's machine) is a git clone of one remote, on
//! branch `main`. A claim moves the task file locally (never replacing, see
//! `aie_shared::vault::claim`), commits and pushes; the push is a compare-and-swap on the
//! remote's `main`, so of two replicas claiming one task, the one whose commit reaches the
//! remote first holds it. The other's push is refused; it fetches, and the merge by task id
//! gives the task to the winner and tells the loser. Secrets never enter a commit: every file
//! is checked by name and content before it is staged. `specs/sync.md` is the prose version.
//!
//! # Layout
//! - [`replica`]: [`Replica`]: open (clone, init, adopt), `sync`, `claim`, `release_stale`,
//!   `status`, `refresh_dashboard`; and [`spawn_sync_loop`].
//! - [`report`]: what those answer: [`SyncReport`], [`ClaimOutcome`], [`ReplicaStatus`], ...
//! - [`secrets`]: which file names and contents count as secrets.
//! - [`hand_moves`]: which files in `Approved/` the owner moved there by hand, from the
//!   vault's git state ([`is_hand_move`], [`hand_moves()`], [`GitHandMoves`]).
//! - `error`: [`SyncError`], one variant per thing that can go wrong.
//! - `repo` (private): git plumbing: the remote, fetch, the compare-and-swap push, trees as
//!   flat maps.
//! - `stage` (private): staging the working tree file by file, leaving secrets out.
//! - `merge` (private): the semantic three-way merge, by task id.
//! - `paths` (private): which vault paths are task or approval files, and their state.
//! - `dashboard` (private): `Dashboard.md`, rebuilt by the local zone.

mod dashboard;
mod error;
pub use error::SyncError;

pub mod hand_moves;
pub use hand_moves::{GitHandMoves, hand_moves, is_hand_move};

mod incoming;
pub use incoming::refused_on_remote;
mod merge;
mod paths;

pub mod replica;
pub use replica::{Replica, spawn_sync_loop};

mod repo;

pub mod report;
pub use report::{
    Blocked, ClaimOutcome, FolderCounts, LostClaim, Refused, Released, ReplicaStatus, SyncReport,
    Zone,
};

pub mod secrets;
pub use secrets::{secret_content_reason, secret_name_reason};

mod stage;
mod writers;
