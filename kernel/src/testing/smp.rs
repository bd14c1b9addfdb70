//! Scenarios `smp`, `smp-panic` and `smp-overflow` (DESIGN.md §8): the secondary CPUs'
//! per-CPU state and the IPIs between CPUs, and the stop of every other CPU when one
//! panics or overflows its kernel stack, on a machine started with several CPUs
//! (`--smp 4`).
//!
//! The boot CPU asks a secondary for something by writing its request slot and sending it
//! a reschedule IPI: the secondary wakes from its idle wait, and its idle loop
//! (`secondary_idle` in `main.rs`) calls [`on_wake`], which answers in its answer slot
//! (after letting the `tlb` scenario answer its own requests).

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arch_api::{
    ExitCode, Ipi, IpiTarget, KernelTables, MAX_CPUS, PAGE_SIZE, PageFlags, Paging, Platform,
    SecondaryCpus,
};

use crate::boot;
use crate::mm::frames::{self, KernelFrames};
use crate::mm::stacks;
use crate::testing::ktest::Suite;
use crate::time::{self, TIMER_HZ};
use crate::{Cpu, println};

const NOTHING: u8 = 0;
/// Report the index and hardware id read through the per-CPU block and the hardware.
const REPORT: u8 = 1;
/// Read the word at [`READ_ADDRESS`].
const READ: u8 = 2;
/// Panic on purpose.
const PANIC: u8 = 3;
/// Recurse into the guard page of this CPU's idle stack.
const OVERFLOW: u8 = 4;

static REQUEST: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(NOTHING) }; MAX_CPUS];
/// Set by the secondary once it has answered its request.
static ANSWERED: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
/// The secondary's answer: its index and hardware id, or the word read.
static ANSWER: [(AtomicU64, AtomicU64); MAX_CPUS] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_CPUS];
static READ_ADDRESS: AtomicU64 = AtomicU64::new(0);

/// How many polls the boot CPU waits for an answer: far more than an IPI and a few
/// hundred instructions take, and still a bound.
const ANSWER_POLLS: u64 = 1 << 28;

/// On a secondary CPU after each wake-up: answer the boot CPU's request, if any.
pub fn on_wake(index: usize) {
    if crate::testing::tlb::on_wake(index) {
        return;
    }
    let Some(request) = REQUEST.get(index) else {
        return;
    };
    match request.swap(NOTHING, Ordering::AcqRel) {
        REPORT => {
            let seen = Cpu::cpu_index();
            let hardware = Cpu::hardware_id();
            println!("smp: cpu {seen} awake (hardware id {hardware:#x})");
            ANSWER[index].0.store(u64::from(seen), Ordering::Relaxed);
            ANSWER[index].1.store(hardware, Ordering::Relaxed);
        }
        READ => {
            let address = READ_ADDRESS.load(Ordering::Acquire);
            // SAFETY: the boot CPU mapped `address` (a kernel page it owns for the test)
            // before the request and keeps it mapped until the answer.
            let word = unsafe { (address as *const u64).read_volatile() };
            ANSWER[index].0.store(word, Ordering::Relaxed);
        }
        PANIC => panic!(
            "deliberate panic on cpu {} (scenario smp-panic)",
            Cpu::cpu_index()
        ),
        OVERFLOW => {
            let depth = crate::testing::recurse(0);
            println!("not ok smp-overflow: the recursion returned at depth {depth}");
        }
        _ => return,
    }
    ANSWERED[index].store(1, Ordering::Release);
}

/// Ask secondary `index` for `request` (with a reschedule IPI) and wait for its answer.
fn ask(index: u32, request: u8) -> Result<(), &'static str> {
    let slot = index as usize;
    ANSWERED[slot].store(0, Ordering::Relaxed);
    REQUEST[slot].store(request, Ordering::Release);
    Cpu::send_ipi(IpiTarget::Cpu(index), Ipi::Reschedule);
    for _ in 0..ANSWER_POLLS {
        if ANSWERED[slot].load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err("no answer")
}

fn secondaries() -> Vec<u32> {
    (1..MAX_CPUS as u32)
        .filter(|&index| Cpu::is_online(index))
        .collect()
}

/// `smp`: every secondary is woken by a reschedule IPI (counted in its per-CPU block),
/// reports the index its per-CPU block holds and its hardware id, and flushes its TLB on
/// a shootdown: after the boot CPU remapped a page the secondary had read, it reads the
/// new frame; its local timer ticks while it idles.
pub fn scenario(_: usize) {
    let mut suite = Suite::new();
    let cpus = secondaries();
    suite.check(
        &format!("smp {} secondary CPUs online", cpus.len()),
        if cpus.is_empty() {
            Err("none (boot with --smp 2 or more)")
        } else {
            Ok(())
        },
    );
    suite.check(
        "smp boot cpu index 0 through its per-CPU block",
        match (Cpu::cpu_index(), boot::smp::hardware_id_of(0)) {
            (0, Some(id)) if id == Cpu::hardware_id() => Ok(()),
            (0, _) => Err("hardware id differs from the MP response's"),
            _ => Err("index is not 0"),
        },
    );
    for &index in &cpus {
        let reschedules = || Cpu::ipi_counts(index).map_or(0, |counts| counts.reschedules);
        let before = reschedules();
        let answered = ask(index, REPORT);
        // The secondary may have answered on another wake-up (its own timer's tick) before
        // the IPI reached it: the count is then bumped a little later, so it is polled for
        // as long as an answer is.
        let counted = (0..ANSWER_POLLS).any(|_| {
            let advanced = reschedules() > before;
            core::hint::spin_loop();
            advanced
        });
        suite.check(
            &format!("smp reschedule ipi to cpu {index} counted in its per-CPU block"),
            answered.and(if counted { Ok(()) } else { Err("not counted") }),
        );
        let seen = ANSWER[index as usize].0.load(Ordering::Relaxed);
        let hardware = ANSWER[index as usize].1.load(Ordering::Relaxed);
        let expected = boot::smp::hardware_id_of(index);
        suite.check(
            &format!(
                "smp cpu {index} reads index {seen} through its per-CPU block, hardware id \
                 {hardware:#x}"
            ),
            if answered.is_err() {
                Err("no answer")
            } else if seen != u64::from(index) {
                Err("wrong index")
            } else if expected != Some(hardware) {
                Err("hardware id differs from the MP response's")
            } else {
                Ok(())
            },
        );
        suite.check(
            &format!("smp tlb shootdown to cpu {index} acknowledged"),
            match Cpu::tlb_shootdown(IpiTarget::Cpu(index)) {
                0 => Ok(()),
                _ => Err("no acknowledgement"),
            },
        );
        suite.check(
            &format!("smp cpu {index} reads a remapped page after a tlb shootdown"),
            remap_seen(index),
        );
    }
    for &index in &cpus {
        suite.check(
            &format!("smp cpu {index} timer ticks advance while it idles"),
            secondary_ticks_advance(index),
        );
    }
    let all = Cpu::tlb_shootdown(IpiTarget::AllOthers);
    suite.check(
        &format!(
            "smp tlb shootdown to all {} other CPUs acknowledged",
            cpus.len()
        ),
        if all == 0 {
            Ok(())
        } else {
            Err("some did not acknowledge")
        },
    );
    suite.finish()
}

/// Secondary `index`'s local timer runs while it idles: its tick count (per-CPU block,
/// reported by `time::cpu_ticks`) grows by at least 2 while the boot CPU waits, up to 10 s
/// of the boot CPU's ticks (its timer runs: the scenario's thread started it), which are
/// counted apart.
fn secondary_ticks_advance(index: u32) -> Result<(), &'static str> {
    let before = time::cpu_ticks(index).ok_or("cpu not online")?;
    let deadline = time::ticks() + 10 * u64::from(TIMER_HZ);
    while time::ticks() < deadline {
        Cpu::wait_for_interrupt();
        let now = time::cpu_ticks(index).ok_or("cpu went offline")?;
        if now >= before + 2 {
            println!("smp: cpu {index} timer ticks {before} -> {now}");
            return Ok(());
        }
    }
    Err("its tick count did not advance (its local timer does not run)")
}

/// Secondary `index` reads a kernel page (so its TLB caches the translation), the boot
/// CPU maps another frame there, shoots the TLB down, and the secondary must read the new
/// frame's word. Without the flush the secondary may still read the old frame.
fn remap_seen(index: u32) -> Result<(), &'static str> {
    const OLD: u64 = 0x01d0_01d0_01d0_01d0;
    const NEW: u64 = 0x0e11_0e11_0e11_0e11;
    let page = stacks::allocate().map_err(|_| "no kernel page")?;
    let address = page.base;
    let old = Cpu::lookup_kernel(address)
        .ok_or("page not mapped")?
        .physical
        & !(PAGE_SIZE - 1);
    let new = frames::allocate_zeroed().ok_or("no frame")?;
    // SAFETY: `address` is the first page of a kernel stack this test owns; `new` a frame
    // it owns, written through the HHDM.
    unsafe {
        (address as *mut u64).write_volatile(OLD);
        (frames::virtual_address(new) as *mut u64).write_volatile(NEW);
    }
    READ_ADDRESS.store(address, Ordering::Release);
    let mut outcome =
        ask(index, READ).and_then(
            |()| match ANSWER[index as usize].0.load(Ordering::Relaxed) {
                OLD => Ok(()),
                _ => Err("the first read saw the wrong word"),
            },
        );
    let flags = PageFlags {
        writable: true,
        ..PageFlags::default()
    };
    let swap = |from: u64, to: u64| -> Result<(), &'static str> {
        match Cpu::unmap_kernel(address) {
            Ok(frame) if frame == from => {}
            _ => return Err("cannot unmap the page"),
        }
        Cpu::map_kernel(address, to, flags, &mut KernelFrames).map_err(|_| "cannot map the page")
    };
    outcome = outcome.and_then(|()| swap(old, new));
    if outcome.is_ok() {
        outcome = match Cpu::tlb_shootdown(IpiTarget::Cpu(index)) {
            0 => ask(index, READ),
            _ => Err("no acknowledgement"),
        }
        .and_then(
            |()| match ANSWER[index as usize].0.load(Ordering::Relaxed) {
                NEW => Ok(()),
                OLD => Err("read the old frame: stale TLB entry"),
                _ => Err("read neither word"),
            },
        );
        let restored =
            swap(new, old).and_then(|()| match Cpu::tlb_shootdown(IpiTarget::AllOthers) {
                0 => Ok(()),
                _ => Err("no acknowledgement"),
            });
        outcome = outcome.and(restored);
    }
    let _ = frames::free(new);
    stacks::free(page);
    outcome
}

/// What the secondaries of [`fatal_scenario`] do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// `smp-panic`: two secondaries panic at once.
    Panic,
    /// `smp-overflow`: one secondary overflows its idle stack (a fatal trap, reported by
    /// the arch crate on that CPU's own IST / overflow stack).
    Overflow,
}

/// `smp-panic` / `smp-overflow`: one report (the first CPU to claim it), then silence:
/// the reporting CPU stops every other one, a second panicking CPU stops without a word,
/// and the boot CPU, which prints a line on every tick, is stopped too. The machine
/// powers off with the fatal exit code.
pub fn fatal_scenario(kind: Fatal) -> ! {
    let cpus = secondaries();
    if cpus.is_empty() {
        println!("not ok smp-panic: no secondary CPU online (boot with --smp 2 or more)");
        println!("0 passed, 1 failed");
        crate::trace::power_off(ExitCode::TestFailed);
    }
    time::start_timer();
    let (request, panicking) = match kind {
        Fatal::Panic => (PANIC, &cpus[..cpus.len().min(2)]),
        Fatal::Overflow => (OVERFLOW, &cpus[..1]),
    };
    match kind {
        Fatal::Panic => println!("smp-panic: cpus {panicking:?} panic at once"),
        Fatal::Overflow => println!("smp-panic: cpu {} overflows its stack", panicking[0]),
    }
    for &index in panicking {
        REQUEST[index as usize].store(request, Ordering::Release);
    }
    for &index in panicking {
        Cpu::send_ipi(IpiTarget::Cpu(index), Ipi::Reschedule);
    }
    let deadline = 10 * u64::from(TIMER_HZ);
    let mut last = time::ticks();
    while time::ticks() < deadline {
        Cpu::wait_for_interrupt();
        let now = time::ticks();
        if now != last {
            println!("smp-panic: cpu 0 still running (tick {now})");
            last = now;
        }
    }
    println!("not ok smp-panic: no panic report stopped cpu 0");
    println!("0 passed, 1 failed");
    crate::trace::power_off(ExitCode::TestFailed)
}
