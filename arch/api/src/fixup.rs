//! Exception fixups, the portable half: kernel instructions that are allowed to fault, where
//! each resumes, and the cause recorded for whoever provoked the fault on purpose.
//!
//! Each architecture keeps its own table of [`Fixup`] entries (labels of its assembly: the
//! user copies, and in the test build the self-test probes). Its trap dispatcher, on a
//! kernel-mode exception, asks [`resume`] whether an entry covers the reported instruction
//! pointer; if so it resumes there instead of reporting a fatal trap.

use spin::Mutex;

use crate::TrapCause;

/// One fixup entry: an exception reported at an address in `start..end` resumes at
/// `resume`; with `record`, its cause is kept for [`RecordedCause::take`] (the probes; the
/// user copies report through their own result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixup {
    pub start: u64,
    pub end: u64,
    pub resume: u64,
    pub record: bool,
}

impl Fixup {
    /// An entry for the one instruction address `at` (the address a trap reports: the
    /// faulting instruction for a fault, the next one for a trap such as `int3`).
    pub const fn at(at: u64, resume: u64, record: bool) -> Self {
        Self {
            start: at,
            end: at.saturating_add(1),
            resume,
            record,
        }
    }

    /// Whether an exception reported at `pc` is covered.
    pub const fn covers(&self, pc: u64) -> bool {
        self.start <= pc && pc < self.end
    }
}

/// The resume address for a kernel-mode exception with `cause` reported at `pc`, if an
/// entry of `table` covers it (the first that does); records `cause` in `recorded` when
/// that entry asks for it.
pub fn resume(
    table: impl IntoIterator<Item = Fixup>,
    pc: u64,
    cause: TrapCause,
    recorded: &RecordedCause,
) -> Option<u64> {
    let fixup = table.into_iter().find(|fixup| fixup.covers(pc))?;
    if fixup.record {
        recorded.record(cause);
    }
    Some(fixup.resume)
}

/// The cause of the last exception a recording fixup recovered from.
#[derive(Debug, Default)]
pub struct RecordedCause(Mutex<Option<TrapCause>>);

impl RecordedCause {
    pub const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Keep `cause`, replacing what was kept. Dropped if the slot is busy: the trap
    /// dispatcher never waits for a lock (it could have interrupted [`RecordedCause::take`]).
    pub fn record(&self, cause: TrapCause) {
        if let Some(mut slot) = self.0.try_lock() {
            *slot = Some(cause);
        }
    }

    /// The cause kept since the last call, if any, and clear it.
    pub fn take(&self) -> Option<TrapCause> {
        self.0.lock().take()
    }

    /// Clear the slot, run `probe`, and return the cause it recorded (`None`: it did not
    /// trap, or its trap is not covered by a recording entry).
    pub fn under(&self, probe: impl FnOnce()) -> Option<TrapCause> {
        let _ = self.take();
        probe();
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access;

    const FAULT: TrapCause = TrapCause::PageFault {
        addr: 0x10,
        access: Access::Read,
        from_user: false,
    };

    fn table() -> [Fixup; 2] {
        [
            Fixup {
                start: 0x100,
                end: 0x120,
                resume: 0x200,
                record: false,
            },
            Fixup::at(0x300, 0x304, true),
        ]
    }

    #[test]
    fn ranges_cover_start_to_end_exclusive() {
        let recorded = RecordedCause::new();
        assert_eq!(resume(table(), 0x100, FAULT, &recorded), Some(0x200));
        assert_eq!(resume(table(), 0x11f, FAULT, &recorded), Some(0x200));
        assert_eq!(resume(table(), 0x120, FAULT, &recorded), None);
        assert_eq!(resume(table(), 0xff, FAULT, &recorded), None);
        assert_eq!(recorded.take(), None, "copy entries do not record");
    }

    #[test]
    fn single_address_entries_match_exactly_and_record() {
        let recorded = RecordedCause::new();
        assert_eq!(resume(table(), 0x301, FAULT, &recorded), None);
        assert_eq!(recorded.take(), None);
        assert_eq!(
            resume(table(), 0x300, TrapCause::Breakpoint, &recorded),
            Some(0x304)
        );
        assert_eq!(recorded.take(), Some(TrapCause::Breakpoint));
        assert_eq!(recorded.take(), None, "taking clears");
        assert!(!Fixup::at(u64::MAX, 0, false).covers(u64::MAX - 1));
    }

    #[test]
    fn under_clears_first_and_returns_what_the_probe_recorded() {
        let recorded = RecordedCause::new();
        recorded.record(TrapCause::Undefined);
        assert_eq!(recorded.under(|| {}), None, "a stale cause is not reported");
        let cause = recorded.under(|| {
            resume(table(), 0x300, FAULT, &recorded);
        });
        assert_eq!(cause, Some(FAULT));
    }

    #[test]
    fn record_never_waits_for_a_held_slot() {
        let recorded = RecordedCause::new();
        let held = recorded.0.lock();
        recorded.record(FAULT);
        drop(held);
        assert_eq!(recorded.take(), None);
    }
}
