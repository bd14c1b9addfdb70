//! The in-kernel test suite (scenario `kernel`, DESIGN.md §8): traps provoked in kernel
//! mode, timer interrupts while idle, kernel threads with separate stacks across blocking
//! and preemption, the frame allocator, kernel stacks and the heap. Runs in a kernel
//! thread; prints `ok`/`not ok` lines and the summary, then powers off.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arch_api::{
    Access, MapError, PAGE_SIZE, PageFlags, Paging, Platform, ProvokedTrap, SelfTest, TrapCause,
};

use crate::mm::frames::KernelFrames;
use crate::mm::{frames, heap, stacks};
use crate::obj::process::USER_STACK_TOP;
use crate::task::sched;
use crate::{Cpu, println, time};

/// Counts results and prints one line per test.
pub struct Suite {
    passed: u32,
    failed: u32,
}

impl Suite {
    pub const fn new() -> Self {
        Self {
            passed: 0,
            failed: 0,
        }
    }

    pub fn check(&mut self, name: &str, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("not ok {name}: {why}");
            }
        }
    }

    /// Add counts from elsewhere (a user suite's exit code).
    pub fn add(&mut self, passed: u32, failed: u32) {
        self.passed += passed;
        self.failed += failed;
    }

    /// Print the summary and power off: success iff nothing failed.
    pub fn finish(&self) -> ! {
        println!("{} passed, {} failed", self.passed, self.failed);
        crate::trace::power_off(if self.failed == 0 {
            arch_api::ExitCode::Success
        } else {
            arch_api::ExitCode::TestFailed
        })
    }
}

/// The suite's thread body.
/// The suite; `cpus` is the CPU count the command line says the machine has (0: not
/// given, not checked).
pub fn run(cpus: usize) {
    let mut suite = Suite::new();
    cpus_found(&mut suite, cpus);
    traps(&mut suite);
    suite.check("timer interrupts counted while idle", timer_while_idle());
    crate::testing::ktest_irq::run(&mut suite);
    suite.check("frame allocator counts return exactly", frame_allocator());
    suite.check(
        "memory above 4 GiB is allocated and holds data",
        memory_above_4g(),
    );
    suite.check("kernel stack freed and reused", kernel_stack_reuse());
    suite.check("heap allocations freed", heap_round_trip());
    suite.check(
        "two kernel threads keep separate stacks across block and preemption",
        separate_stacks(),
    );
    suite.check(
        "dead thread's kernel stack reused",
        dead_thread_stack_reused(),
    );
    suite.check(
        "user mappings refuse W+X, page 0 and kernel addresses",
        user_mapping_checks(),
    );
    suite.check(
        "1000 user address spaces created, populated and destroyed",
        address_spaces(),
    );
    match space_tags_apart() {
        Ok(how) => suite.check(&alloc::format!("address-space tags: {how}"), Ok(())),
        Err(why) => suite.check("address-space tags kept apart", Err(why)),
    }
    suite.check(
        "user page protected read-only: copy_to_user refused, W+X refused, lookup agrees",
        protect_user_page(),
    );
    user_access_protection(&mut suite);
    suite.check("malformed user images are refused", malformed_images());
    suite.check(
        "process budget is charged for its record, page tables and pages and refuses beyond its limit; executable pages synced for instruction fetch; teardown frees every frame and byte",
        process_memory(),
    );
    suite.check(
        "capability table grows from 16 slots charged to the budget (64 bytes a slot), refuses a growth the budget cannot pay with OutOfMemory, keeps every handle, shrinks back as capabilities go, and teardown refunds the rest",
        capability_table_growth(),
    );
    kernel_tables(&mut suite);
    suite.check(
        "bootloader-reclaimable memory returned to the frame allocator",
        reclaimed_memory(),
    );
    suite.check(
        "device memory mapped uncached into a user space; RAM, overlaps, kernel and wrapping ranges refused",
        device_mapping(),
    );
    suite.finish()
}

fn traps(suite: &mut Suite) {
    let expect = |trap, wanted: fn(TrapCause) -> bool| match Cpu::provoke(trap) {
        Some(cause) if wanted(cause) => Ok(()),
        Some(_) => Err("the dispatcher recorded a different cause"),
        None => Err("no trap was taken"),
    };
    suite.check(
        "trap breakpoint",
        expect(ProvokedTrap::Breakpoint, |cause| {
            cause == TrapCause::Breakpoint
        }),
    );
    suite.check(
        "trap undefined instruction",
        expect(ProvokedTrap::Undefined, |cause| {
            cause == TrapCause::Undefined
        }),
    );
    match Cpu::provoke(ProvokedTrap::DivideError) {
        None if Cpu::NAME == "aarch64" => {
            suite.check(
                "trap divide error (not applicable: aarch64 has no divide trap)",
                Ok(()),
            );
        }
        Some(TrapCause::Arithmetic) => suite.check("trap divide error", Ok(())),
        Some(_) => suite.check("trap divide error", Err("wrong cause recorded")),
        None => suite.check("trap divide error", Err("no trap was taken")),
    }
    suite.check(
        "trap kernel page fault recovered",
        expect(ProvokedTrap::KernelPageFault, |cause| {
            matches!(
                cause,
                TrapCause::PageFault {
                    access: Access::Read,
                    from_user: false,
                    ..
                }
            )
        }),
    );
}

fn timer_while_idle() -> Result<(), &'static str> {
    let before = time::ticks();
    // Sleeping blocks this thread; only the idle thread (halting) runs meanwhile.
    sched::sleep(5);
    let after = time::ticks();
    if after >= before + 5 {
        Ok(())
    } else {
        Err("fewer ticks than slept")
    }
}

fn frame_allocator() -> Result<(), &'static str> {
    let before = crate::mm::free_frames();
    let mut taken = Vec::new();
    for _ in 0..100 {
        taken.push(frames::allocate_zeroed().ok_or("allocation failed")?);
    }
    let run = frames::allocate_run(4).ok_or("run allocation failed")?;
    if run % (16 * 4096) != 0 {
        return Err("a run of 16 frames is not naturally aligned");
    }
    if crate::mm::free_frames() != before - 116 {
        return Err("free count after allocating is wrong");
    }
    for &frame in &taken {
        frames::free(frame).map_err(|_| "free refused")?;
    }
    frames::free_run(run, 4).map_err(|_| "free_run refused")?;
    if frames::free(taken[0]).is_ok() {
        return Err("a double free was accepted");
    }
    if crate::mm::free_frames() != before {
        return Err("free count did not return to its start");
    }
    Ok(())
}

/// Memory above 4 GiB is used. Take 2 MiB runs until the allocator has none left
/// (bounded), write a pattern to every page of each run above 4 GiB through the HHDM and
/// read it back, then free everything; reports how much memory above 4 GiB it used (0 on a
/// machine without any: the `--mem 4G` tests assert it is not 0).
fn memory_above_4g() -> Result<(), &'static str> {
    const RUN_ORDER: u32 = 9;
    const RUN_BYTES: u64 = 4096 << RUN_ORDER;
    const FOUR_GIB: u64 = 1 << 32;
    let before = crate::mm::free_frames();
    let mut runs = Vec::new();
    // Bounded: 64 GiB of runs at most.
    while runs.len() < 32 * 1024 {
        match frames::allocate_run(RUN_ORDER) {
            Some(run) => runs.push(run),
            None => break,
        }
    }
    let mut above = 0u64;
    let mut intact = true;
    for &run in runs.iter().filter(|&&run| run >= FOUR_GIB) {
        above += RUN_BYTES;
        for page in (run..run + RUN_BYTES).step_by(4096) {
            let word = frames::virtual_address(page) as *mut u64;
            // SAFETY: `page` lies in a run this test allocated and holds, so nothing else
            // uses it; the HHDM maps all usable memory read-write.
            unsafe {
                word.write_volatile(page ^ 0x5a5a_5a5a_5a5a_5a5a);
                intact &= word.read_volatile() == page ^ 0x5a5a_5a5a_5a5a_5a5a;
            }
        }
    }
    let highest = runs.iter().copied().max().unwrap_or(0);
    for &run in &runs {
        frames::free_run(run, RUN_ORDER).map_err(|_| "free_run refused")?;
    }
    println!(
        "mm: above 4 GiB: {} MiB allocated and checked (highest 2 MiB run at {highest:#x})",
        above >> 20
    );
    if !intact {
        return Err("a page above 4 GiB did not hold what was written");
    }
    if crate::mm::free_frames() != before {
        return Err("free count did not return to its start");
    }
    Ok(())
}

fn kernel_stack_reuse() -> Result<(), &'static str> {
    let first = stacks::allocate().map_err(|_| "first allocation failed")?;
    let free_while_allocated = crate::mm::free_frames();
    stacks::free(first);
    if crate::mm::free_frames() != free_while_allocated + 4 {
        return Err("freeing did not return its 4 frames");
    }
    let second = stacks::allocate().map_err(|_| "second allocation failed")?;
    let reused = second == first;
    let exact = crate::mm::free_frames() == free_while_allocated;
    stacks::free(second);
    match (reused, exact) {
        (true, true) => Ok(()),
        (false, _) => Err("the freed slot was not reused"),
        (true, false) => Err("free count differs between two uses of one slot"),
    }
}

fn heap_round_trip() -> Result<(), &'static str> {
    let before = heap::allocated_bytes();
    {
        let mut numbers: Vec<u64> = Vec::with_capacity(1000);
        numbers.extend(0..1000);
        if numbers.iter().sum::<u64>() != 999 * 1000 / 2 {
            return Err("heap memory did not hold its contents");
        }
    }
    if heap::allocated_bytes() == before {
        Ok(())
    } else {
        Err("heap bytes allocated did not return to their start")
    }
}

/// Results of the two stack-checking threads: 0 running, 1 passed, 2+ failed (reason).
static STACK_RESULTS: [AtomicU8; 2] = [AtomicU8::new(0), AtomicU8::new(0)];
/// Stack addresses the threads saw, to check they differ.
static STACK_ADDRESSES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

const PASSED: u8 = 1;
const NOT_ON_OWN_STACK: u8 = 2;
const CORRUPTED: u8 = 3;
const NOT_PREEMPTED: u8 = 4;

/// Fill 2 KiB of this thread's stack with a pattern, give up the CPU (thread 0: spin in
/// `wait_for_interrupt` until the timer preempts it; thread 1: block in `sleep`, then
/// yield), and check the pattern afterwards.
fn stack_checker(which: usize) {
    let pattern = |index: usize| (index as u8).wrapping_mul(31) ^ (0x5a + which as u8 * 0x33);
    let mut area = [0u8; 2048];
    for (index, byte) in area.iter_mut().enumerate() {
        *byte = pattern(index);
    }
    let area = core::hint::black_box(&mut area);
    let address = area.as_ptr() as u64;
    STACK_ADDRESSES[which].store(address, Ordering::Relaxed);
    let own = sched::current_stack().is_some_and(|stack| stack.contains(address));
    let mut outcome = if own { PASSED } else { NOT_ON_OWN_STACK };
    if which == 0 {
        let before = sched::preemptions();
        let deadline = time::ticks() + 200;
        while sched::preemptions() < before + 2 && time::ticks() < deadline {
            Cpu::wait_for_interrupt();
        }
        if sched::preemptions() < before + 2 {
            outcome = NOT_PREEMPTED;
        }
    } else {
        sched::sleep(3);
        sched::yield_now();
        sched::sleep(2);
    }
    let area = core::hint::black_box(area);
    if outcome == PASSED
        && area
            .iter()
            .enumerate()
            .any(|(index, &byte)| byte != pattern(index))
    {
        outcome = CORRUPTED;
    }
    STACK_RESULTS[which].store(outcome, Ordering::Release);
}

fn separate_stacks() -> Result<(), &'static str> {
    for which in 0..2 {
        sched::spawn_kernel("stack-check", sched::NORMAL, stack_checker, which)
            .map_err(|_| "cannot spawn a test thread")?;
    }
    let deadline = time::ticks() + 1000;
    while STACK_RESULTS
        .iter()
        .any(|result| result.load(Ordering::Acquire) == 0)
    {
        if time::ticks() > deadline {
            return Err("the test threads did not finish");
        }
        sched::sleep(1);
    }
    let addresses = [0, 1].map(|which| STACK_ADDRESSES[which].load(Ordering::Relaxed));
    if addresses[0] == addresses[1] {
        return Err("both threads ran on the same stack addresses");
    }
    for result in &STACK_RESULTS {
        match result.load(Ordering::Acquire) {
            PASSED => {}
            NOT_ON_OWN_STACK => return Err("a thread's locals were not on its own kernel stack"),
            CORRUPTED => return Err("a thread's stack contents changed while it was switched out"),
            NOT_PREEMPTED => return Err("the spinning thread was never preempted by the timer"),
            _ => return Err("unexpected result"),
        }
    }
    Ok(())
}

fn dead_thread_stack_reused() -> Result<(), &'static str> {
    fn nothing(_: usize) {}
    let id = sched::spawn_kernel("short-lived", sched::NORMAL, nothing, 0)
        .map_err(|_| "cannot spawn")?;
    while sched::is_alive(id) {
        sched::sleep(1);
    }
    // The thread's stack went back to the slot list: the next stack takes it without
    // changing the free-frame count (the region's page tables exist already).
    let before = crate::mm::free_frames();
    let stack = stacks::allocate().map_err(|_| "allocation failed")?;
    let after = crate::mm::free_frames();
    stacks::free(stack);
    if before - after == 4 && crate::mm::free_frames() == before {
        Ok(())
    } else {
        Err("a dead thread's stack was not freed and reused")
    }
}

const USER_DATA: PageFlags = PageFlags {
    writable: true,
    executable: false,
    user: true,
    device: false,
};

fn user_mapping_checks() -> Result<(), &'static str> {
    let before = crate::mm::free_frames();
    let mut space = Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
    let frame = frames::allocate_zeroed().ok_or("no frame")?;
    let write_execute = PageFlags {
        executable: true,
        ..USER_DATA
    };
    let refusals = [
        (0x40_0000, write_execute, MapError::WriteAndExecute),
        (0, USER_DATA, MapError::BadAddress),
        (0xffff_ffff_8000_0000, USER_DATA, MapError::BadAddress),
        (0x40_0800, USER_DATA, MapError::BadAddress),
    ];
    let mut outcome = Ok(());
    for (address, flags, wanted) in refusals {
        match Cpu::map_user(&mut space, address, frame, flags, &mut KernelFrames) {
            Err(error) if error == wanted => {}
            Err(_) => outcome = Err("refused with the wrong error"),
            Ok(()) => {
                outcome = Err("a forbidden mapping was made");
                let _ = Cpu::unmap_user(&mut space, address, &mut KernelFrames);
            }
        }
    }
    if Cpu::unmap_user(&mut space, 0x40_0000, &mut KernelFrames) != Err(MapError::NotMapped) {
        outcome = Err("unmapping an unmapped page did not fail with NotMapped");
    }
    Cpu::destroy(space, &mut |table| {
        let _ = frames::free(table);
    });
    let _ = frames::free(frame);
    if outcome.is_ok() && crate::mm::free_frames() != before {
        return Err("frames leaked");
    }
    outcome
}

/// `protect` changes a mapped user page's permissions in place — after making it
/// read-only, `copy_to_user` fails while `copy_from_user` still reads it; W+X is refused.
fn protect_user_page() -> Result<(), &'static str> {
    let before = crate::mm::free_frames();
    let mut space = Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
    let frame = frames::allocate_zeroed().ok_or("no frame")?;
    let page = 0x40_0000;
    let read_only = PageFlags {
        writable: false,
        ..USER_DATA
    };
    let write_execute = PageFlags {
        executable: true,
        ..USER_DATA
    };
    let outcome = (|| {
        Cpu::map_user(&mut space, page, frame, USER_DATA, &mut KernelFrames)
            .map_err(|_| "map_user failed")?;
        Cpu::activate(&space);
        Cpu::copy_to_user(page, &[7; 8]).map_err(|_| "copy_to_user of a writable page failed")?;
        if Cpu::protect_user(&mut space, page, write_execute) != Err(MapError::WriteAndExecute) {
            return Err("protect accepted W+X");
        }
        Cpu::protect_user(&mut space, page, read_only).map_err(|_| "protect failed")?;
        let found = Cpu::lookup_user(&space, page).ok_or("the page is gone")?;
        if found.flags.writable || found.physical != frame {
            return Err("lookup does not show a read-only page on the same frame");
        }
        if Cpu::copy_to_user(page, &[9; 8]).is_ok() {
            return Err("copy_to_user wrote a read-only page");
        }
        let mut read = [0u8; 8];
        Cpu::copy_from_user(&mut read, page).map_err(|_| "copy_from_user failed")?;
        if read != [7; 8] {
            return Err("the page's contents changed");
        }
        if Cpu::protect_user(&mut space, page + PAGE_SIZE, read_only) != Err(MapError::NotMapped) {
            return Err("protecting an unmapped page did not fail with NotMapped");
        }
        Ok(())
    })();
    crate::obj::process::activate_kernel_only();
    let _ = Cpu::unmap_user(&mut space, page, &mut KernelFrames);
    let _ = frames::free(frame);
    Cpu::destroy(space, &mut |table| {
        let _ = frames::free(table);
    });
    if outcome.is_ok() && crate::mm::free_frames() != before {
        return Err("frames leaked");
    }
    outcome
}

/// Creating, populating and destroying 1,000 user address spaces returns the
/// free-frame count to its starting value exactly.
fn address_spaces() -> Result<(), &'static str> {
    let before = crate::mm::free_frames();
    let pages = [0x40_0000, 0x7f00_0000_0000, USER_STACK_TOP - PAGE_SIZE];
    for _ in 0..1000 {
        let mut space =
            Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
        for page in pages {
            let frame = frames::allocate_zeroed().ok_or("no frame")?;
            if Cpu::map_user(&mut space, page, frame, USER_DATA, &mut KernelFrames).is_err() {
                let _ = frames::free(frame);
                return Err("map_user failed");
            }
        }
        for page in pages {
            let frame = Cpu::unmap_user(&mut space, page, &mut KernelFrames)
                .map_err(|_| "unmap_user failed")?;
            frames::free(frame).map_err(|_| "unmapped frame could not be freed")?;
        }
        Cpu::destroy(space, &mut |table| {
            let _ = frames::free(table);
        });
    }
    if crate::mm::free_frames() == before {
        Ok(())
    } else {
        Err("the free-frame count did not return to its start")
    }
}

/// Spaces made and destroyed one after another while one stays alive, more of them than
/// there are tags (x86_64: 4,094 PCIDs, handed out even where the CPU has none), never get
/// the live one's tag, and every tag goes back. AArch64 ASIDs are checked by generation
/// instead (the `tlb` scenario rolls them over).
fn space_tags_apart() -> Result<&'static str, &'static str> {
    const SPACES: usize = 5000;
    if !Cpu::force_space_tags(true) {
        return Ok("not applicable (ASIDs: checked by generation in the tlb scenario)");
    }
    let outcome = (|| {
        let kept = Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
        let kept_tag = Cpu::space_tag(&kept).unwrap_or(0);
        let mut result = if kept_tag == 0 {
            Err("the live space got no tag")
        } else {
            Ok("5000 spaces made and destroyed while one stayed alive never got its tag")
        };
        for _ in 0..SPACES {
            if result.is_err() {
                break;
            }
            let Ok(space) = Cpu::new_address_space(&mut KernelFrames) else {
                result = Err("no address space");
                break;
            };
            if Cpu::space_tag(&space) == Some(kept_tag) {
                result = Err("a space got the tag of a live one");
            }
            Cpu::destroy(space, &mut |table| {
                let _ = frames::free(table);
            });
        }
        Cpu::destroy(kept, &mut |table| {
            let _ = frames::free(table);
        });
        result
    })();
    Cpu::force_space_tags(false);
    outcome
}

/// With PAN (AArch64) / SMAP (x86_64) on, an ordinary kernel load from mapped user memory
/// faults; only `copy_from_user` may read it.
fn user_access_protection(suite: &mut Suite) {
    if !Cpu::user_access_protected() {
        suite.check(
            "kernel access to user memory faults (not applicable: no PAN/SMAP on this CPU)",
            Ok(()),
        );
        return;
    }
    let name = "kernel access to user memory faults outside copy_from_user";
    let outcome = (|| {
        let mut space =
            Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
        let frame = frames::allocate_zeroed().ok_or("no frame")?;
        let page = 0x40_0000;
        let mut result = Cpu::map_user(&mut space, page, frame, USER_DATA, &mut KernelFrames)
            .map_err(|_| "map_user failed");
        if result.is_ok() {
            Cpu::activate(&space);
            let mut copied = [0u8; 8];
            let copy = Cpu::copy_from_user(&mut copied, page);
            let fault = Cpu::provoke_user_access(page);
            crate::obj::process::activate_kernel_only();
            result = match (copy, fault) {
                (Err(_), _) => Err("copy_from_user of a mapped user page failed"),
                (
                    Ok(()),
                    Some(TrapCause::PageFault {
                        from_user: false, ..
                    }),
                ) => Ok(()),
                (Ok(()), Some(_)) => Err("the load faulted with another cause"),
                (Ok(()), None) => Err("the kernel read user memory with PAN/SMAP on"),
            };
            let _ = Cpu::unmap_user(&mut space, page, &mut KernelFrames);
        }
        let _ = frames::free(frame);
        Cpu::destroy(space, &mut |table| {
            let _ = frames::free(table);
        });
        result
    })();
    suite.check(name, outcome);
}

/// Corrupted and truncated copies of the `testsuite` module must be refused by the loader
/// with an error — never a crash — and leave no frame behind. The frames the heap holds
/// count as in use: the copies below may make it grow, and it keeps what it grew by.
fn malformed_images() -> Result<(), &'static str> {
    use crate::proc::{LoadError, spawn_from_image};
    let original = crate::boot::module("testsuite").ok_or("no testsuite module")?;
    let frames = || crate::mm::free_frames() + crate::mm::heap::frames_held();
    let before = frames();
    let mut refused = 0;
    // Truncations inside the header and the program-header table.
    for length in [0, 4, 63, 64, 100, 120, 200] {
        match spawn_from_image(
            "malformed",
            &original[..length.min(original.len())],
            0,
            crate::proc::root_budget(),
        ) {
            Err(LoadError::Elf(_)) => refused += 1,
            Err(_) => return Err("a truncated image failed for another reason"),
            Ok(_) => return Err("a truncated image was loaded"),
        }
    }
    // Corrupt single header fields: class, machine, entry, program-header size, and the
    // first segment's file size and virtual address.
    let corruptions: [(usize, &[u8]); 6] = [
        (4, &[1]),
        (18, &[0xff, 0xff]),
        (24, &[0xff; 8]),
        (54, &[55, 0]),
        (64 + 32, &[0xff; 8]),
        (64 + 16, &[0, 0, 0, 0, 0, 0x80, 0xff, 0xff]),
    ];
    for (offset, bytes) in corruptions {
        let mut copy = original.to_vec();
        copy[offset..offset + bytes.len()].copy_from_slice(bytes);
        match spawn_from_image("malformed", &copy, 0, crate::proc::root_budget()) {
            Err(LoadError::Elf(_)) => refused += 1,
            Err(_) => return Err("a corrupted image failed for another reason"),
            Ok(_) => return Err("a corrupted image was loaded"),
        }
    }
    if refused != 13 {
        return Err("not every malformed image was refused");
    }
    if frames() != before {
        return Err("refusing images leaked frames");
    }
    Ok(())
}

/// A capability table doubles when full, each slot past the first 16 charged to the
/// process's budget; a growth the budget cannot pay for is `OutOfMemory` and changes
/// nothing; handles survive growth and shrinking; deletes halve the table again (refunds);
/// teardown refunds what is left.
fn capability_table_growth() -> Result<(), &'static str> {
    use crate::obj::budget::PROCESS_BYTES;
    use crate::obj::capspace::SLOT_BYTES;
    use crate::obj::{Budget, Object, Process};
    use abi::{CAP_TABLE_INITIAL_SLOTS, Error, Rights};
    let initial = CAP_TABLE_INITIAL_SLOTS as u64;
    // The record, its root table, and growth to 4 × 16 slots: 16 + 32 slots' worth.
    let base = PROCESS_BYTES + PAGE_SIZE;
    let budget = Budget::root(base + 3 * initial * SLOT_BYTES);
    let process = Process::new("caps-test", budget.clone()).map_err(|_| "no process")?;
    let result = (|| {
        let mut handles = alloc::vec::Vec::new();
        for _ in 0..4 * initial {
            let handle = process
                .caps
                .insert(Object::System, Rights::READ)
                .map_err(|_| "an insert the budget pays for failed")?;
            handles.push(handle);
        }
        if process.caps.capacity() as u64 != 4 * initial
            || budget.used() != base + 3 * initial * SLOT_BYTES
        {
            return Err("the growths were not charged 64 bytes a slot");
        }
        if process.caps.insert(Object::System, Rights::READ) != Err(Error::OutOfMemory)
            || process.caps.reserve(1) != Err(Error::OutOfMemory)
            || process.caps.capacity() as u64 != 4 * initial
            || budget.used() != base + 3 * initial * SLOT_BYTES
        {
            return Err("a growth beyond the budget was not refused, or changed something");
        }
        if handles
            .iter()
            .any(|handle| process.caps.check(*handle, Rights::READ).is_err())
        {
            return Err("a handle did not survive the growths");
        }
        // Down to 2: the table halves as each quarter mark passes, back to 16 slots.
        for handle in handles.drain(2..) {
            process.caps.delete(handle).map_err(|_| "a delete failed")?;
        }
        if process.caps.capacity() as u64 != initial || budget.used() != base {
            return Err("the table did not shrink back to its first size, refunded");
        }
        if handles
            .iter()
            .any(|handle| process.caps.check(*handle, Rights::READ).is_err())
        {
            return Err("a handle did not survive the shrinking");
        }
        Ok(())
    })();
    process.release_unstarted();
    if result.is_ok() && (budget.used() != PROCESS_BYTES || process.caps.len() != 0) {
        return Err("teardown left capabilities or charges behind");
    }
    drop(process);
    if result.is_ok() && budget.used() != 0 {
        return Err("the record's charge did not come back");
    }
    result
}

/// A process's memory use counts its page tables (root included) with its pages, each
/// charged a page to its budget after its record; a map the budget cannot pay for is
/// refused and changes nothing; a page mapped executable is handed to
/// `Paging::sync_instructions` by its direct-map address (whole), a data page is not;
/// tearing the process down returns every frame and every byte of the budget.
fn process_memory() -> Result<(), &'static str> {
    use crate::obj::budget::PROCESS_BYTES;
    use crate::obj::{Budget, Process};
    let before = crate::mm::free_frames();
    // Room for the record and 12 pages.
    let budget = Budget::root(PROCESS_BYTES + 12 * PAGE_SIZE);
    let process = Process::new("memory-test", budget.clone()).map_err(|_| "no process")?;
    let charged = |pages: u64| budget.used() == PROCESS_BYTES + pages * PAGE_SIZE;
    let code = PageFlags {
        writable: false,
        executable: true,
        user: true,
        device: false,
    };
    let result = (|| {
        if process.pages() != 1 || !charged(1) {
            return Err("a new process does not count its root table");
        }
        frames::LAST_INSTRUCTION_SYNC[1].store(0, Ordering::Relaxed);
        process
            .map_anonymous(0x40_0000, 1, USER_DATA)
            .map_err(|_| "data map failed")?;
        if frames::LAST_INSTRUCTION_SYNC[1].load(Ordering::Relaxed) != 0 {
            return Err("a data page was synced for instruction fetch");
        }
        // Root, PDPT, PD, PT and the page.
        if process.pages() != 5 || !charged(5) {
            return Err("page tables are not counted with the pages");
        }
        process
            .map_anonymous(0x40_1000, 2, code)
            .map_err(|_| "code map failed")?;
        let last = process.anonymous_frame(0x40_2000).ok_or("no frame")?;
        let synced = [
            frames::LAST_INSTRUCTION_SYNC[0].load(Ordering::Relaxed),
            frames::LAST_INSTRUCTION_SYNC[1].load(Ordering::Relaxed),
        ];
        if synced != [frames::virtual_address(last), PAGE_SIZE] {
            return Err("an executable page was not synced over its direct-map range");
        }
        // A new 2 MiB region needs one more table; unmapping it keeps that table.
        process
            .map_anonymous(0x60_0000, 1, USER_DATA)
            .map_err(|_| "second region map failed")?;
        if process.pages() != 9 || !charged(9) {
            return Err("a new last-level table was not counted");
        }
        // 3 pages are left: 4 more are refused, whole.
        if process.map_anonymous(0x80_0000, 4, USER_DATA) != Err(abi::Error::OutOfMemory)
            || process.pages() != 9
            || !charged(9)
        {
            return Err("a map beyond the budget was not refused, or left something behind");
        }
        process
            .unmap_anonymous(0x60_0000, 1)
            .map_err(|_| "unmap failed")?;
        process
            .unmap_anonymous(0x40_0000, 3)
            .map_err(|_| "unmap failed")?;
        // The emptied table at 0x40_0000 is kept; the one at 0x60_0000 was pruned.
        if process.pages() != 4 || !charged(4) {
            return Err("an emptied table was not given back to the budget");
        }
        Ok(())
    })();
    process.release_unstarted();
    drop(process);
    if result.is_ok() && crate::mm::free_frames() != before {
        return Err("frames leaked");
    }
    if result.is_ok() && budget.used() != 0 {
        return Err("the budget did not get every byte back");
    }
    result
}

/// A word the linker places in `.rodata` (an immutable static without interior
/// mutability), for the write-protection test.
static RODATA_PROBE: u64 = 0x6b65_656c_726f_6461;
/// A word in `.data`/`.bss`.
static DATA_PROBE: AtomicU64 = AtomicU64::new(1);

/// The kernel runs on its own page tables, built with per-section permissions.
fn kernel_tables(suite: &mut Suite) {
    use crate::mm::kernel_tables;
    use arch_api::KernelTables;
    let Some(report) = kernel_tables::report() else {
        suite.check(
            "kernel runs on its own page tables",
            Err("no switch happened"),
        );
        return;
    };
    suite.check(
        "kernel runs on its own page tables, not the loader's",
        if report.kernel_root == report.loader_root {
            Err("the kernel root is the loader's")
        } else if Cpu::active_kernel_root() == report.loader_root {
            Err("the loader's root is active")
        } else {
            Ok(())
        },
    );
    let layout = kernel_tables::layout(0);
    let text = kernel_tables as fn(&mut Suite) as usize as u64;
    let rodata = &raw const RODATA_PROBE as u64;
    let data = DATA_PROBE.as_ptr() as u64;
    let permissions = (|| {
        if !layout.text.contains(&text)
            || !layout.rodata.contains(&rodata)
            || !layout.data.contains(&data)
        {
            return Err("a probe is not in the section it should be in");
        }
        let flags = |address: u64| {
            Cpu::lookup_kernel(address)
                .map(|translation| translation.flags)
                .ok_or("a kernel address is not mapped")
        };
        let (text, rodata, data) = (flags(text)?, flags(rodata)?, flags(data)?);
        if text.writable || !text.executable {
            return Err(".text is not read + execute");
        }
        if rodata.writable || rodata.executable {
            return Err(".rodata is not read-only and no-execute");
        }
        if !data.writable || data.executable {
            return Err(".data is not read + write and no-execute");
        }
        if text.user || rodata.user || data.user {
            return Err("the kernel image is user-accessible");
        }
        let frame = frames::allocate_zeroed().ok_or("no frame")?;
        let direct = flags(frames::virtual_address(frame));
        let _ = frames::free(frame);
        let direct = direct?;
        if !direct.writable || direct.executable {
            return Err("the HHDM is not read + write and no-execute");
        }
        Ok(())
    })();
    suite.check(
        "kernel image mapped per section: text RX, rodata R+NX, data RW+NX; HHDM RW+NX",
        permissions,
    );
    let write_faults = |address: u64| match Cpu::provoke_kernel_write(address) {
        Some(TrapCause::PageFault {
            access: Access::Write,
            from_user: false,
            addr,
        }) if addr & !(PAGE_SIZE - 1) == address & !(PAGE_SIZE - 1) => Ok(()),
        Some(_) => Err("the write faulted with another cause"),
        None => Err("the write went through"),
    };
    suite.check(
        "writing kernel .rodata faults (recovered through the fixup table)",
        write_faults(rodata),
    );
    suite.check(
        "writing kernel .text faults (recovered through the fixup table)",
        write_faults(text),
    );
    suite.check(
        "writing kernel .data goes through",
        match Cpu::provoke_kernel_write(data) {
            None if DATA_PROBE.load(Ordering::Relaxed) == 1 => Ok(()),
            None => Err("the probe changed the word"),
            Some(_) => Err("writing .data faulted"),
        },
    );
}

/// Every whole frame of the bootloader-reclaimable entries went to the frame
/// allocator once the kernel left the loader's memory — the loader's page tables included.
fn reclaimed_memory() -> Result<(), &'static str> {
    use kcore::frames::FrameState;
    use kcore::memory::RegionKind;
    let expected: u64 = crate::boot::memory_regions()
        .ok_or("no memory map")?
        .filter(|region| region.kind == RegionKind::BootloaderReclaimable)
        .map(|region| {
            let start = region.base.next_multiple_of(PAGE_SIZE);
            let end = (region.base + region.length) & !(PAGE_SIZE - 1);
            end.saturating_sub(start) / PAGE_SIZE
        })
        .sum();
    let reclaimed = crate::mm::reclaimed_frames();
    if expected == 0 {
        return Err("the memory map has no bootloader-reclaimable memory to test with");
    }
    if reclaimed != expected {
        return Err("the reclaimed frame count differs from the reclaimable entries' frames");
    }
    let loader_root = crate::mm::kernel_tables::report()
        .ok_or("no page-table switch")?
        .loader_root;
    if frames::state(loader_root) == FrameState::Unmanaged {
        return Err("the loader's root table was not reclaimed");
    }
    Ok(())
}

/// `Process::map_device` maps MMIO uncached and user-only-by-data, refuses RAM,
/// overlaps and bad ranges, and a torn-down process frees every table and no device page.
fn device_mapping() -> Result<(), &'static str> {
    use abi::Error;
    use arch_api::USER_END;
    // A physical range no memory-map entry claims: above the highest entry (nothing there
    // is touched; the mapping is only looked up).
    let top = crate::boot::memory_regions()
        .ok_or("no memory map")?
        .map(|region| region.base.saturating_add(region.length))
        .max()
        .ok_or("empty memory map")?;
    let device = top.next_multiple_of(1 << 21);
    let before = crate::mm::free_frames();
    let process = crate::obj::Process::new("device-test", crate::proc::root_budget())
        .map_err(|_| "cannot create a process")?;
    let outcome = (|| {
        let base = 0x40_0000;
        process
            .map_device(base, device, 2, true)
            .map_err(|_| "mapping two device pages failed")?;
        {
            let space = process.space.lock();
            let space = space.as_ref().ok_or("no address space")?;
            for page in 0..2 {
                let found = Cpu::lookup_user(space, base + page * PAGE_SIZE)
                    .ok_or("a device page is not mapped")?;
                if found.physical != device + page * PAGE_SIZE {
                    return Err("a device page maps the wrong physical address");
                }
                let flags = found.flags;
                if !flags.device || !flags.user || !flags.writable || flags.executable {
                    return Err("a device page is not uncached, user, writable and no-execute");
                }
            }
        }
        let ram = frames::allocate_zeroed().ok_or("no frame")?;
        let over_ram = process.map_device(0x50_0000, ram, 1, true);
        let _ = frames::free(ram);
        if over_ram != Err(Error::PermissionDenied) {
            return Err("a RAM frame was not refused with PermissionDenied");
        }
        let cases = [
            (base + PAGE_SIZE, 1, Error::InvalidArgument, "an overlap"),
            (
                0xffff_8000_0000_0000,
                1,
                Error::BadAddress,
                "a kernel address",
            ),
            (
                USER_END - PAGE_SIZE,
                2,
                Error::BadAddress,
                "a range past the user half",
            ),
            (0x60_0000, u64::MAX, Error::BadAddress, "a wrapping length"),
            (0x60_0800, 1, Error::InvalidArgument, "a misaligned address"),
        ];
        for (address, pages, wanted, _) in cases {
            if process.map_device(address, device + 0x10_0000, pages, true) != Err(wanted) {
                return Err("a bad device mapping was not refused with the right error");
            }
        }
        Ok(())
    })();
    process.release_unstarted();
    drop(process);
    if outcome.is_ok() && crate::mm::free_frames() != before {
        return Err("tearing the process down did not return every frame");
    }
    outcome
}

/// The CPUs the MP response lists (the boot CPU included) against the count the command
/// line gives, and every secondary CPU sent to the kernel arrived.
fn cpus_found(suite: &mut Suite, expected: usize) {
    let found = crate::boot::smp::reported().map_or(1, |(count, _)| count);
    let name = alloc::format!("cpus: {found} found, every one arrived");
    let outcome = if expected != 0 && found != expected {
        Err("not the number of CPUs the machine was given (cpus= on the command line)")
    } else if !crate::boot::smp::all_arrived() {
        Err("a secondary CPU did not arrive")
    } else {
        Ok(())
    };
    suite.check(&name, outcome);
}
