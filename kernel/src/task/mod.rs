//! Threads and their scheduling: the [`thread`] record, the [`sched`]uler, and the start
//! trampoline every thread begins in.

pub mod sched;
pub mod thread;

use crate::obj;

/// Bring up the scheduler, run `body(argument)` in a kernel thread named `name`, start the
/// timer, and leave the boot stack for good.
pub fn run_first(name: &'static str, body: fn(usize), argument: usize) -> ! {
    obj::process::init();
    sched::init();
    sched::gather_secondaries();
    if let Err(error) = sched::spawn_kernel(name, sched::NORMAL, body, argument) {
        panic!("cannot start the {name} thread: {error:?}");
    }
    crate::time::start_timer();
    sched::start()
}
