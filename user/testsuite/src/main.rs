//! `testsuite`: the user-mode test suite, started by the kernel from the boot module of the
//! same name (scenarios `user` and `user-fault`, DESIGN.md §8).
//!
//! The kernel passes one argument that selects what runs: [`SUITE`] runs the system-call
//! tests and prints an `ok`/`not ok` line per test; the other values each execute one
//! faulting instruction, so the kernel can check that it kills just this process and
//! reports the fault. The suite's exit code carries its counts ([`abi`-style encoding in
//! [`exit_code`]): the kernel prints the one summary line for the whole scenario.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use abi::Error;
use rt::println;

mod budget;
mod ipc;
mod limits;
mod proc;
mod resources;

/// Arguments the kernel passes.
const SUITE: u64 = 0;
const UNDEFINED_INSTRUCTION: u64 = 1;
const PRIVILEGED_INSTRUCTION: u64 = 2;
const PAGE_FAULT: u64 = 3;
/// `FPU_CHECK | seed << 8`: fill the vector registers from the seed, spin and check them.
const FPU_CHECK: u64 = 4;
/// [`FPU_CHECK`]'s exit code when the CPU has no upper vector halves to check (x86_64
/// without AVX).
const NO_UPPER_HALVES: i64 = 0x7a;
/// Write this thread's registers to land in [`landed`] with [`LANDING_MAGIC`].
const REGISTER_WRITE: u64 = 5;
/// Make null system calls as fast as possible (the NMI-storm test runs this).
const SYSCALL_LOOP: u64 = 6;
/// Make a system call with TF set in RFLAGS (x86_64); exit [`SURVIVED_TRAP_FLAG`] if the
/// thread is allowed to continue, [`NO_TRAP_FLAG_TEST`] where the test does not apply.
const TRAP_FLAG_SYSCALL: u64 = 7;
const SURVIVED_TRAP_FLAG: i64 = 0x77;
const NO_TRAP_FLAG_TEST: i64 = 0x78;
/// Execute an SVE instruction (AArch64); exit [`NO_SVE_TEST`] on x86_64.
const SVE_INSTRUCTION: u64 = 8;
const NO_SVE_TEST: i64 = 0x79;
/// Map, write, read, unmap, then touch the unmapped page (must be killed).
const TOUCH_AFTER_UNMAP: u64 = 9;
/// A second privileged instruction: `cli` (x86_64), `msr vbar_el1, x0` (AArch64).
const SECOND_PRIVILEGED_INSTRUCTION: u64 = 10;
/// Block in `test_sleep` a few times; exit with the first non-zero value it returns.
const BLOCKED_SYSCALL: u64 = 11;
/// Block in `test_sleep` again and again: the kernel rewrites the saved instruction
/// pointer meanwhile, so returning at all (exit 1) is a failure.
const HOSTILE_RESUME: u64 = 12;
/// The IPC server and client (see [`ipc`]); the kernel pre-installs their
/// capabilities.
const IPC_SERVER: u64 = 13;
const IPC_CLIENT: u64 = 14;
/// Where the memory tests map (free in every testsuite process).
const SCRATCH: u64 = 0x0000_2000_0000_0000;
const LANDING_MAGIC: u64 = 0x5a5a_1234;
/// `landed`'s exit code when it got the expected argument.
const LANDED: i64 = 0x5a;

/// An address in the user half that the kernel never maps (user images live at 4 MiB,
/// the stack just below the top of the user half).
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
/// A kernel-half address (the top 2 GiB hold the kernel image).
const KERNEL_ADDRESS: u64 = 0xffff_ffff_8000_0000;

rt::entry!(main);

fn main(argument: u64) -> i64 {
    match argument {
        SUITE => suite(),
        UNDEFINED_INSTRUCTION => rt::fault::undefined_instruction(),
        PRIVILEGED_INSTRUCTION => rt::fault::privileged_instruction(),
        SECOND_PRIVILEGED_INSTRUCTION => rt::fault::second_privileged_instruction(),
        PAGE_FAULT => i64::from(rt::fault::touch_unmapped(UNMAPPED)),
        argument if argument & 0xff == FPU_CHECK => {
            // Long enough that the timer preempts it many times under emulation.
            // Then the upper halves (ymm with AVX / q): exit 0 when both were checked,
            // NO_UPPER_HALVES when the CPU has no such registers.
            let report = |what: &str, mismatch: rt::fpu::Mismatch| {
                println!(
                    "testsuite: FPU register {what}{} changed while switched out: found {:#x}, expected {:#x} ({} rounds left)",
                    mismatch.register, mismatch.found, mismatch.expected, mismatch.rounds_left
                );
            };
            if let Err(mismatch) = rt::fpu::check_registers(argument >> 8, 2000, 50_000) {
                report("", mismatch);
                return 1;
            }
            match rt::fpu::check_upper_halves(argument >> 8, 500, 50_000) {
                None => NO_UPPER_HALVES,
                Some(Ok(())) => 0,
                Some(Err(mismatch)) => {
                    report("upper half of ", mismatch);
                    2
                }
            }
        }
        REGISTER_WRITE => register_write(),
        TRAP_FLAG_SYSCALL => {
            if rt::fault::syscall_with_trap_flag() {
                SURVIVED_TRAP_FLAG
            } else {
                NO_TRAP_FLAG_TEST
            }
        }
        SVE_INSTRUCTION => {
            if rt::fault::sve_instruction() {
                0
            } else {
                NO_SVE_TEST
            }
        }
        TOUCH_AFTER_UNMAP => touch_after_unmap(),
        BLOCKED_SYSCALL => {
            for seed in 0..4 {
                match rt::test_sleep(3, seed) {
                    Ok(0) => {}
                    // why: the values are 1 and 2 (abi::Syscall::TestSleep).
                    Ok(value) => return value as i64,
                    Err(_) => return 3,
                }
            }
            0
        }
        HOSTILE_RESUME => {
            for _ in 0..200 {
                let _ = rt::test_sleep(5, 0x77);
            }
            1
        }
        IPC_SERVER => ipc::server(),
        argument
            if matches!(
                argument & 0xff,
                proc::CHILD_EXIT | proc::CHILD_SPIN | proc::CHILD_SERVER | proc::CHILD_PARK
            ) =>
        {
            proc::child(argument)
        }
        IPC_CLIENT => {
            let mut results = Results {
                passed: 0,
                failed: 0,
            };
            ipc::client(&mut results);
            exit_code(results.passed, results.failed)
        }
        SYSCALL_LOOP => {
            let wrong = (0..100_000).filter(|_| rt::null() != Ok(0)).count();
            i64::from(wrong != 0)
        }
        resources::HOARDER => resources::hoarder(),
        resources::EXIT_AT_ONCE => 0,
        budget::EATER => budget::eater(),
        budget::PROBE => budget::probe(),
        limits::LIMITS => limits::suite(),
        argument if limits::is_child(argument) => limits::child(argument),
        _ => -1,
    }
}

/// Map, write, read back, unmap, then touch the page: the kernel kills this
/// process with a page-fault report. Returns only if something went wrong before.
fn touch_after_unmap() -> i64 {
    if rt::memory_map(SCRATCH, abi::PAGE_SIZE, abi::MAP_WRITE).is_err() {
        return 1;
    }
    let word = rt::fault::user_word(SCRATCH);
    word.store(0x1234_5678, core::sync::atomic::Ordering::Relaxed);
    if word.load(core::sync::atomic::Ordering::Relaxed) != 0x1234_5678 {
        return 2;
    }
    if rt::memory_unmap(SCRATCH, abi::PAGE_SIZE).is_err() {
        return 3;
    }
    println!("testsuite: touching {SCRATCH:#x} after unmapping it");
    i64::from(rt::fault::touch_unmapped(SCRATCH))
}

/// Replace this thread's registers so it continues in [`landed`] on a fresh part of its
/// stack. Returns only if the kernel refused.
fn register_write() -> i64 {
    let marker = 0u8;
    // 8 KiB below this frame is still the 64 KiB user stack; 16-byte aligned.
    let stack = (core::ptr::from_ref(&marker) as u64 - 8192) & !15;
    let entry = landed as extern "C" fn(u64) -> ! as usize as u64;
    let mut registers = rt::registers::starting_at(entry, stack, LANDING_MAGIC);
    // A control word other than the one this thread runs with: `landed` finds it live.
    registers.fpu_control = rt::registers::ROUND_TOWARD_ZERO;
    match rt::registers::write(0, &registers) {
        Ok(_) => println!("testsuite: register write returned instead of resuming"),
        Err(_) => println!("testsuite: register write refused a valid image"),
    }
    1
}

/// Where [`register_write`] resumes.
extern "C" fn landed(argument: u64) -> ! {
    let control = rt::fpu::control();
    rt::exit(if argument != LANDING_MAGIC {
        2
    } else if control != rt::registers::ROUND_TOWARD_ZERO {
        println!(
            "testsuite: FPU control {control:#x} after the register write, expected {:#x}",
            rt::registers::ROUND_TOWARD_ZERO
        );
        3
    } else {
        LANDED
    })
}

/// Passed and failed counts in one exit code: `passed << 16 | failed`.
fn exit_code(passed: u32, failed: u32) -> i64 {
    i64::from(passed) << 16 | i64::from(failed & 0xffff)
}

struct Results {
    passed: u32,
    failed: u32,
}

impl Results {
    fn check(&mut self, name: &str, outcome: Result<(), &str>) {
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

    fn expect_error(&mut self, name: &str, got: Result<u64, Error>, wanted: Error) {
        let outcome = match got {
            Err(error) if error == wanted => Ok(()),
            Err(_) => Err("wrong error code"),
            Ok(_) => Err("the call succeeded"),
        };
        self.check(name, outcome);
    }
}

/// `thread_write_registers` must refuse every value the CPU would trust on the way back
/// to user mode, and bad images, without changing anything.
fn register_write_refusals(results: &mut Results) {
    use rt::registers::{BAD_FPU_CONTROL, PRIVILEGED_FLAGS, starting_at, write, write_raw};
    let entry = landed as extern "C" fn(u64) -> ! as usize as u64;
    let stack = 0x7fff_0000_0000;
    let good = starting_at(entry, stack, 0);
    let cases = [
        (
            "user register write refuses a kernel instruction pointer",
            {
                let mut registers = good;
                registers.instruction_pointer = KERNEL_ADDRESS;
                registers
            },
        ),
        (
            "user register write refuses a non-canonical instruction pointer",
            {
                let mut registers = good;
                registers.instruction_pointer = 0x0000_8000_0000_0000;
                registers
            },
        ),
        ("user register write refuses a kernel stack pointer", {
            let mut registers = good;
            registers.stack_pointer = 0xffff_8000_0000_0000;
            registers
        }),
        ("user register write refuses privileged flags", {
            let mut registers = good;
            registers.flags = PRIVILEGED_FLAGS;
            registers
        }),
        ("user register write refuses reserved FPU control bits", {
            let mut registers = good;
            registers.fpu_control = BAD_FPU_CONTROL;
            registers
        }),
    ];
    for (name, registers) in cases {
        results.expect_error(name, write(0, &registers), Error::InvalidArgument);
    }
    let pointer = core::ptr::from_ref(&good) as u64;
    results.expect_error(
        "user register write refuses a wrong length",
        write_raw(0, pointer, 8),
        Error::InvalidArgument,
    );
    results.expect_error(
        "user register write refuses another thread",
        write(7, &good),
        Error::InvalidArgument,
    );
    results.expect_error(
        "user register write refuses an unmapped image",
        write_raw(0, UNMAPPED, abi::UserRegisters::SIZE as u64),
        Error::BadAddress,
    );
}

/// `memory_map` / `memory_unmap`: zeroed memory that holds what is written, W^X, range
/// and overlap checks, the per-call bound, and unmapping that takes effect.
fn memory_tests(results: &mut Results) {
    use abi::{MAP_EXECUTE, MAP_WRITE, PAGE_SIZE};
    use core::sync::atomic::Ordering;
    let length = 4 * PAGE_SIZE;
    results.check(
        "user memory map, write and read back",
        match rt::memory_map(SCRATCH, length, MAP_WRITE) {
            Err(_) => Err("memory_map failed"),
            Ok(_) => {
                let mut outcome = Ok(());
                for page in 0..4 {
                    let word = rt::fault::user_word(SCRATCH + page * PAGE_SIZE + 8);
                    if word.load(Ordering::Relaxed) != 0 {
                        outcome = Err("fresh memory was not zeroed");
                    }
                    word.store(0xabcd_0000 + page, Ordering::Relaxed);
                }
                for page in 0..4 {
                    let word = rt::fault::user_word(SCRATCH + page * PAGE_SIZE + 8);
                    if word.load(Ordering::Relaxed) != 0xabcd_0000 + page {
                        outcome = Err("memory did not hold what was written");
                    }
                }
                outcome
            }
        },
    );
    results.expect_error(
        "user memory map refuses an overlap",
        rt::memory_map(SCRATCH + PAGE_SIZE, PAGE_SIZE, 0),
        Error::InvalidArgument,
    );
    results.expect_error(
        "user memory map refuses write and execute",
        rt::memory_map(SCRATCH + length, PAGE_SIZE, MAP_WRITE | MAP_EXECUTE),
        Error::InvalidArgument,
    );
    results.expect_error(
        "user memory map refuses a kernel address",
        rt::memory_map(KERNEL_ADDRESS, PAGE_SIZE, MAP_WRITE),
        Error::BadAddress,
    );
    results.expect_error(
        "user memory map refuses page 0",
        rt::memory_map(0, PAGE_SIZE, MAP_WRITE),
        Error::BadAddress,
    );
    results.expect_error(
        "user memory map refuses a misaligned address",
        rt::memory_map(SCRATCH + length + 8, PAGE_SIZE, MAP_WRITE),
        Error::InvalidArgument,
    );
    results.expect_error(
        "user memory map beyond the per-call bound returns OutOfMemory",
        rt::memory_map(SCRATCH + length, 1 << 32, MAP_WRITE),
        Error::OutOfMemory,
    );
    results.check(
        "user memory unmap takes effect",
        match rt::memory_unmap(SCRATCH, length) {
            Err(_) => Err("memory_unmap failed"),
            // The kernel reading the page for us must now fail cleanly.
            Ok(_) => match rt::debug_write_raw(SCRATCH, 8) {
                Err(Error::BadAddress) => Ok(()),
                _ => Err("the unmapped page was still readable by the kernel"),
            },
        },
    );
    results.expect_error(
        "user memory unmap refuses memory it did not map",
        rt::memory_unmap(SCRATCH, PAGE_SIZE),
        Error::InvalidArgument,
    );
}

/// The user heap (`rt::heap`): collections that grow across several mapped chunks and
/// hold what is written, freed memory used again, and refusals that leave it working.
fn heap_tests(results: &mut Results) {
    use alloc::vec::Vec;
    let before = rt::heap::stats();
    results.check(
        "user heap: Vec and Box grow across mapped chunks and hold their values",
        (|| {
            // 1 MiB of u64s: far more than one chunk, grown by doubling reallocations.
            let mut numbers: Vec<u64> = Vec::new();
            for index in 0..131_072u64 {
                numbers.push(index * 3);
            }
            let boxed = alloc::boxed::Box::new([7u64; 400]);
            // Many small blocks of different sizes, interleaved with the growth above.
            let small: [Vec<u64>; 64] = core::array::from_fn(|n| (0..n as u64 % 37).collect());
            let grown = rt::heap::stats();
            if grown.mapped < 1 << 20 || grown.mapped <= before.mapped {
                return Err("the heap did not grow by mapping memory");
            }
            if !numbers.iter().enumerate().all(|(i, &n)| n == i as u64 * 3) {
                return Err("a Vec lost its values");
            }
            if boxed.iter().any(|&word| word != 7) {
                return Err("a Box lost its value");
            }
            let intact = |(n, values): (usize, &Vec<u64>)| {
                values.len() == n % 37 && values.iter().zip(0..).all(|(&v, i)| v == i)
            };
            if !small.iter().enumerate().all(intact) {
                return Err("small blocks lost their values");
            }
            Ok(())
        })(),
    );
    let after_free = rt::heap::stats();
    results.check(
        "user heap: freed memory is used again",
        (|| {
            if after_free.allocated != before.allocated {
                return Err("dropping everything did not free it");
            }
            let mut again: Vec<u64> = Vec::with_capacity(131_072);
            again.extend(0..131_072);
            if rt::heap::stats().mapped != after_free.mapped {
                return Err("the heap mapped more instead of reusing freed memory");
            }
            if again.iter().sum::<u64>() != 131_071 * 131_072 / 2 {
                return Err("reused memory did not hold its values");
            }
            Ok(())
        })(),
    );
    results.check(
        "user heap: allocations beyond the budget or the heap's span fail and the heap still works",
        (|| {
            let mut record = [0u64; abi::sysinfo::budget::WORDS];
            let system = abi::Handle::new(abi::root_slots::SYSTEM, 1);
            rt::proc::system_info(system, abi::sysinfo::BUDGET, 0, &mut record)
                .map_err(|_| "system_info BUDGET failed")?;
            // More than the process's whole memory budget.
            let words = record[abi::sysinfo::budget::LIMIT] / 8 + 1;
            let mut beyond_budget: Vec<u64> = Vec::new();
            if beyond_budget.try_reserve_exact(words as usize).is_ok() {
                return Err("more than the budget was granted");
            }
            let mut beyond_span: Vec<u64> = Vec::new();
            if beyond_span.try_reserve_exact(usize::MAX / 16).is_ok() {
                return Err("an absurd size was granted");
            }
            let small: Vec<u64> = (0..1000).collect();
            if small.iter().sum::<u64>() != 999 * 1000 / 2 {
                return Err("a small allocation after the refusals failed");
            }
            Ok(())
        })(),
    );
}

/// A kernel built without test code (no `testing` feature) answers the test-only system
/// calls with `NotSupported`, so the suite cannot run there: report what each answered
/// (what `tests/tests/plain_kernel.rs` reads) and end.
fn plain_kernel() -> i64 {
    let sleep = rt::test_sleep(1, 0);
    let counter = rt::bench_counter(abi::BenchCounter::Ticks);
    let raise = rt::proc::irq_test_raise(abi::Handle::new(0, 0));
    println!(
        "testsuite: test-only system calls: test_sleep {sleep:?}, bench_counter {counter:?}, \
         irq_test_raise {raise:?}"
    );
    0
}

fn suite() -> i64 {
    if rt::bench_counter(abi::BenchCounter::Ticks) == Err(Error::NotSupported) {
        return plain_kernel();
    }
    let mut results = Results {
        passed: 0,
        failed: 0,
    };
    results.check(
        "user null syscall round trip",
        match rt::null() {
            Ok(0) => Ok(()),
            Ok(_) => Err("returned a value other than 0"),
            Err(_) => Err("returned an error"),
        },
    );
    let text = b"testsuite: hello from user mode";
    results.check(
        "user debug_write good pointer",
        match rt::debug_write(text) {
            Ok(written) if written == text.len() as u64 => Ok(()),
            Ok(_) => Err("wrong byte count"),
            Err(_) => Err("returned an error"),
        },
    );
    results.expect_error(
        "user debug_write kernel address",
        rt::debug_write_raw(KERNEL_ADDRESS, 16),
        Error::BadAddress,
    );
    results.expect_error(
        "user debug_write unmapped address",
        rt::debug_write_raw(UNMAPPED, 16),
        Error::BadAddress,
    );
    results.expect_error(
        "user debug_write null pointer",
        rt::debug_write_raw(0, 16),
        Error::BadAddress,
    );
    results.expect_error(
        "user debug_write wrapping range",
        rt::debug_write_raw(u64::MAX - 7, 16),
        Error::BadAddress,
    );
    results.expect_error(
        "user debug_write huge length",
        rt::debug_write_raw(text.as_ptr() as u64, 1 << 62),
        Error::BadAddress,
    );
    results.expect_error(
        "user unknown syscall number",
        rt::syscall(0xdead, [0; 6]),
        Error::InvalidArgument,
    );
    results.check(
        "user yield",
        rt::yield_now().map(|_| ()).map_err(|_| "returned an error"),
    );
    results.expect_error(
        "user test_sleep refuses 0 ticks",
        rt::test_sleep(0, 0),
        Error::InvalidArgument,
    );
    results.expect_error(
        "user test_sleep refuses more than its maximum",
        rt::test_sleep(abi::TEST_SLEEP_MAX_TICKS + 1, 0),
        Error::InvalidArgument,
    );
    register_write_refusals(&mut results);
    memory_tests(&mut results);
    proc::tests(&mut results);
    heap_tests(&mut results);
    resources::tests(&mut results);
    budget::tests(&mut results);
    exit_code(results.passed, results.failed)
}
