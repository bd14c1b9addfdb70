//! The test-only system calls: `test_sleep`, `bench_counter` and `irq_test_raise`. In a
//! kernel built without the `testing` feature each returns [`Error::NotSupported`].

#[cfg(not(feature = "testing"))]
use abi::Error;

#[cfg(feature = "testing")]
pub use enabled::*;

#[cfg(not(feature = "testing"))]
pub fn test_sleep(_ticks: u64, _seed: u64) -> Result<u64, Error> {
    Err(Error::NotSupported)
}

#[cfg(not(feature = "testing"))]
pub fn bench_counter(_which: u64) -> Result<u64, Error> {
    Err(Error::NotSupported)
}

#[cfg(not(feature = "testing"))]
pub fn irq_test_raise(_handle: u64) -> Result<u64, Error> {
    Err(Error::NotSupported)
}

#[cfg(feature = "testing")]
mod enabled {
    use core::sync::atomic::{AtomicUsize, Ordering};

    use abi::{Error, Handle, Rights, TEST_SLEEP_MAX_TICKS};

    use crate::obj::kind;
    use crate::task::sched;

    /// `bench_counter(which)`: an event counter (`crate::stats`), or a lock level's
    /// acquisitions (`abi::bench::LOCK_COUNTS`, lock-checking builds only).
    pub fn bench_counter(which: u64) -> Result<u64, Error> {
        if let Some(index) = which.checked_sub(abi::bench::LOCK_COUNTS) {
            return lock_acquisitions(index);
        }
        abi::BenchCounter::from_number(which)
            .map(crate::syscall::event_counter)
            .ok_or(Error::InvalidArgument)
    }

    #[cfg(feature = "lockcheck")]
    fn lock_acquisitions(index: u64) -> Result<u64, Error> {
        usize::try_from(index)
            .ok()
            .and_then(crate::sync::acquisitions)
            .ok_or(Error::InvalidArgument)
    }

    #[cfg(not(feature = "lockcheck"))]
    fn lock_acquisitions(_index: u64) -> Result<u64, Error> {
        Err(Error::NotSupported)
    }

    /// `irq_test_raise(irq)`: deliver the line as the interrupt would.
    pub fn irq_test_raise(handle: u64) -> Result<u64, Error> {
        let line = sched::current_process()
            .ok_or(Error::InvalidArgument)?
            .caps
            .lookup::<kind::Irq>(Handle::from_raw(handle), Rights::CONTROL)?;
        Ok(u64::from(crate::irq::deliver(line.line)))
    }

    /// The thread blocked inside `test_sleep` right now (0: none). One at a time is enough
    /// for the tests that watch it (they run one such process at a time).
    static TEST_SLEEPER: AtomicUsize = AtomicUsize::new(0);

    /// The thread blocked inside `test_sleep` right now, if any. While it is set, that
    /// thread is not running and its saved user frame sits at the top of its kernel stack.
    pub fn test_sleeper() -> Option<usize> {
        match TEST_SLEEPER.load(Ordering::Acquire) {
            0 => None,
            thread => Some(thread),
        }
    }

    /// `test_sleep(ticks, seed)`: a pattern on this thread's kernel stack across a block
    /// (see [`abi::Syscall::TestSleep`]).
    #[inline(never)]
    pub fn test_sleep(ticks: u64, seed: u64) -> Result<u64, Error> {
        if ticks == 0 || ticks > TEST_SLEEP_MAX_TICKS {
            return Err(Error::InvalidArgument);
        }
        // why: only the low byte of the seed varies the pattern.
        let pattern = |index: usize| (index as u8).wrapping_mul(37) ^ (seed as u8) ^ 0xa5;
        let mut area = [0u8; 1024];
        for (index, byte) in area.iter_mut().enumerate() {
            *byte = pattern(index);
        }
        let area = core::hint::black_box(&mut area);
        let address = area.as_ptr() as u64;
        let own = sched::current_stack().is_some_and(|stack| stack.contains(address));
        TEST_SLEEPER.store(sched::current(), Ordering::Release);
        sched::sleep(ticks);
        TEST_SLEEPER.store(0, Ordering::Release);
        let area = core::hint::black_box(area);
        let intact = area
            .iter()
            .enumerate()
            .all(|(index, &byte)| byte == pattern(index));
        Ok(match (own, intact) {
            (false, _) => 2,
            (true, false) => 1,
            (true, true) => 0,
        })
    }
}
