//! Scenarios selected by `test=<name>` on the command line (DESIGN.md §8), and the idle
//! loop that runs without one.

use arch_api::{ExitCode, Platform};

use crate::boot::BootInfo;
use crate::{Cpu, println, upcall};

/// Timer frequency for the idle loop and the boot check.
const TIMER_HZ: u32 = 100;

/// Scenarios this kernel knows. Others in DESIGN.md §8 arrive with their issues.
const KNOWN: &[&str] = &["boot"];

pub fn run(boot: &BootInfo) -> ! {
    match boot.cmdline.scenario() {
        None => idle(),
        Some("boot") => boot_scenario(),
        Some(other) => {
            println!("not ok scenario {other}: unknown scenario (this kernel knows: {KNOWN:?})");
            println!("0 passed, 1 failed");
            Cpu::power_off(ExitCode::TestFailed)
        }
    }
}

fn start_timer() {
    if let Err(error) = Cpu::start_timer(TIMER_HZ) {
        panic!("cannot start the timer: {error:?}");
    }
}

/// The banner is out; show that interrupts arrive, then power off with success.
fn boot_scenario() -> ! {
    start_timer();
    const WANTED: u64 = 3;
    while upcall::ticks() < WANTED {
        Cpu::wait_for_interrupt();
    }
    println!("ok timer ticks ({WANTED} at {TIMER_HZ} Hz)");
    println!("1 passed, 0 failed");
    Cpu::power_off(ExitCode::Success)
}

/// No scenario: keep the timer ticking and idle until the user quits QEMU.
fn idle() -> ! {
    start_timer();
    println!("keel: no test scenario; idling with the timer at {TIMER_HZ} Hz");
    let mut next_report = u64::from(TIMER_HZ) * 60;
    loop {
        Cpu::wait_for_interrupt();
        let ticks = upcall::ticks();
        if ticks >= next_report {
            println!("keel: uptime {} s, idle", ticks / u64::from(TIMER_HZ));
            next_report += u64::from(TIMER_HZ) * 60;
        }
    }
}
