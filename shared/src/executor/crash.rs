//! Crash points for the crash tests (contract invariant 7): the places in an execution where
//! a test stops the process, as a power cut or `kill -9` would, to show that what is on disk
//! afterwards never leads to a second action.
//!
//! Debug builds only; release builds ignore the variables:
//! - `AIE_TEST_CRASH=POINT` aborts the process at `POINT` (no destructor runs, nothing is
//!   flushed that was not already).
//! - `AIE_TEST_PAUSE=POINT` stops the execution at `POINT` for good and, when
//!   `AIE_TEST_PAUSE_FILE` names a file, writes `POINT` into it; the test then sends the
//!   process SIGKILL itself.
//!
//! `POINT` is a [`CrashPoint`]'s name (`before_journal`, `after_journal`, `after_effect`,
//! `before_outcome`, `after_outcome`), optionally scoped to one executor (`email:after_effect`).
//! The email server's names from before the executor moved still work: `before_send` is
//! `after_journal`, `after_send` is `after_effect`.

/// Where an execution can be stopped by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Checked and prepared; the journal not yet written: nothing happened, and the
    /// journal does not know the execution began.
    BeforeJournal,
    /// `started` is on disk; nothing handed to the service yet.
    AfterJournal,
    /// The service took the action; the journal not yet told.
    AfterEffect,
    /// The outcome is known (whatever it is); its line not yet written.
    BeforeOutcome,
    /// The outcome's line is on disk; the caller (the gateway) not yet told.
    AfterOutcome,
}

impl CrashPoint {
    /// Every point, in execution order.
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::BeforeJournal,
        CrashPoint::AfterJournal,
        CrashPoint::AfterEffect,
        CrashPoint::BeforeOutcome,
        CrashPoint::AfterOutcome,
    ];

    /// The name tests set.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::BeforeJournal => "before_journal",
            CrashPoint::AfterJournal => "after_journal",
            CrashPoint::AfterEffect => "after_effect",
            CrashPoint::BeforeOutcome => "before_outcome",
            CrashPoint::AfterOutcome => "after_outcome",
        }
    }

    /// The email server's name for it from before the executor moved, if it had one.
    fn old_name(self) -> Option<&'static str> {
        match self {
            CrashPoint::AfterJournal => Some("before_send"),
            CrashPoint::AfterEffect => Some("after_send"),
            _ => None,
        }
    }

    /// Whether the variable's value `wanted` names this point of executor `executor`.
    fn is(self, executor: &str, wanted: &str) -> bool {
        let (scope, point) = match wanted.split_once(':') {
            Some((scope, point)) => (Some(scope), point),
            None => (None, wanted),
        };
        scope.is_none_or(|s| s == executor)
            && (point == self.name() || self.old_name() == Some(point))
    }
}

/// Stops the process at `point` of executor `executor` when a test asks for it (see the
/// module doc); does nothing otherwise, and always in release builds.
pub fn crash_point(executor: &str, point: CrashPoint) {
    if !cfg!(debug_assertions) {
        return;
    }
    if let Ok(wanted) = std::env::var("AIE_TEST_CRASH")
        && point.is(executor, &wanted)
    {
        eprintln!("aie: AIE_TEST_CRASH={wanted}: aborting the process here (test hook)");
        std::process::abort();
    }
    if let Ok(wanted) = std::env::var("AIE_TEST_PAUSE")
        && point.is(executor, &wanted)
    {
        eprintln!("aie: AIE_TEST_PAUSE={wanted}: stopped here for the test to kill (test hook)");
        if let Some(file) = std::env::var_os("AIE_TEST_PAUSE_FILE") {
            let _ = std::fs::write(file, point.name());
        }
        // This execution goes no further; the test SIGKILLs the process.
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names match with or without the executor's scope, and the old email names still
    /// name the same points.
    #[test]
    fn crash_points_match_their_names() {
        assert!(CrashPoint::AfterEffect.is("email", "after_effect"));
        assert!(CrashPoint::AfterEffect.is("email", "email:after_effect"));
        assert!(!CrashPoint::AfterEffect.is("payments", "email:after_effect"));
        assert!(CrashPoint::AfterEffect.is("email", "after_send"));
        assert!(CrashPoint::AfterJournal.is("email", "before_send"));
        assert!(!CrashPoint::BeforeJournal.is("email", "before_send"));
        let names: Vec<_> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), 5);
    }
}
