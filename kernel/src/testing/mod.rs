//! Scenarios selected by `test=<name>` on the command line (DESIGN.md §8): the test build
//! only (the `testing` feature). The boot path without a scenario is `main.rs`'s.

use core::sync::atomic::{AtomicU8, Ordering};

use arch_api::{Bench, ExitCode, Platform, SelfTest, TrapCause, TrapFrame as _};

use crate::boot::BootInfo;
use crate::obj::process::Ending;
use crate::proc;
use crate::task::sched;
use crate::testing::ktest::Suite;
use crate::time::{self, TIMER_HZ};
use crate::{Cpu, println};

pub mod fuzz;
pub mod kcheck;
pub mod ktest;
pub mod ktest_irq;
pub mod root;
pub mod scale;
pub mod smp;
pub mod smp_user;
pub mod tlb;

/// Scenarios this kernel knows. Others in DESIGN.md §8 arrive with their issues.
const KNOWN: &[&str] = &[
    "bench",
    "boot",
    "containment",
    "echo-input",
    "fuzz",
    "fuzz-leak",
    "kernel",
    "limits",
    "lock-order",
    "panic",
    "scale",
    "smp",
    "smp-overflow",
    "smp-panic",
    "smp-user",
    "stack-overflow",
    "tlb",
    "user",
    "user-fault",
];

pub fn run(boot: &BootInfo, scenario: &str) -> ! {
    match scenario {
        "bench" => {
            let iterations = boot
                .cmdline
                .get("iterations")
                .and_then(|text| text.parse::<usize>().ok())
                .unwrap_or(BENCH_ITERATIONS)
                .min(BENCH_ITERATIONS_MAX);
            let only = match boot.cmdline.get("only") {
                None => 0,
                Some(name) => match abi::bench::selector(name) {
                    Some(selector) => selector,
                    None => {
                        println!("not ok bench: no benchmark named {name:?}");
                        crate::trace::power_off(ExitCode::TestFailed)
                    }
                },
            };
            BENCH_ONLY.store(only, core::sync::atomic::Ordering::Relaxed);
            match boot.cmdline.get("profile") {
                None | Some("off") => {}
                Some("on") => BENCH_PROFILE.store(true, core::sync::atomic::Ordering::Relaxed),
                Some(other) => {
                    println!("not ok bench: profile={other:?} is neither on nor off");
                    crate::trace::power_off(ExitCode::TestFailed)
                }
            }
            for (key, limit, value) in [
                ("others", abi::bench::OTHERS_MAX, &BENCH_OTHERS),
                ("procs", BENCH_PROCS_MAX, &BENCH_PROCS),
            ] {
                let Some(text) = boot.cmdline.get(key) else {
                    continue;
                };
                match text.parse::<u64>() {
                    Ok(count) if count <= limit => {
                        value.store(count, core::sync::atomic::Ordering::Relaxed)
                    }
                    _ => {
                        println!("not ok bench: {key}={text:?} is not a count up to {limit}");
                        crate::trace::power_off(ExitCode::TestFailed)
                    }
                }
            }
            in_thread("bench", bench, iterations)
        }
        "boot" => boot_scenario(),
        // The whole system under the containment manifest (`user/init`): `crashtest`
        // reports and powers off.
        "containment" => in_thread("boot", proc::init::run, abi::INIT_CONTAINMENT as usize),
        "echo-input" => echo_input(),
        "fuzz" => {
            let leak = fuzz::configure(boot, false);
            in_thread("fuzz", fuzz::run, leak)
        }
        "fuzz-leak" => {
            let leak = fuzz::configure(boot, true);
            in_thread("fuzz", fuzz::run, leak)
        }
        "kernel" => {
            // `cpus=N`: the CPUs QEMU was given, which the suite checks it found.
            let cpus = boot
                .cmdline
                .get("cpus")
                .and_then(|text| text.parse::<usize>().ok())
                .unwrap_or(0);
            in_thread("kernel-suite", ktest::run, cpus)
        }
        "limits" => in_thread("limits", limits, 0),
        "lock-order" => in_thread("lock-order", lock_order, 0),
        "panic" => in_thread("panic-test", deliberate_panic, 0),
        "scale" => in_thread("scale", scale::run, 0),
        "smp" => in_thread("smp", smp::scenario, 0),
        "smp-overflow" => smp::fatal_scenario(smp::Fatal::Overflow),
        "smp-panic" => smp::fatal_scenario(smp::Fatal::Panic),
        "smp-user" => {
            let argument = smp_user::configure(boot);
            in_thread("smp-user", smp_user::run, argument)
        }
        "stack-overflow" => in_thread("overflow-test", overflow, 0),
        "tlb" => in_thread("tlb", tlb::scenario, 0),
        "user" => in_thread("user-suite", user_suite, 0),
        "user-fault" => in_thread("user-fault", user_fault, 0),
        other => {
            println!("not ok scenario {other}: unknown scenario (this kernel knows: {KNOWN:?})");
            println!("0 passed, 1 failed");
            crate::trace::power_off(ExitCode::TestFailed)
        }
    }
}

fn start_timer() {
    time::start_timer();
}

fn in_thread(name: &'static str, body: fn(usize), argument: usize) -> ! {
    crate::task::run_first(name, body, argument)
}

/// `lock-order`: take two locks against their order. With the lock-order checker on (every
/// QEMU test run), the second `lock` panics with a report naming both; reaching the end
/// means the checker is off or broken.
fn lock_order(_: usize) {
    use crate::sync::{Lock, level};
    static OUTER: Lock<u32> = Lock::new(level::TEST_OUTER, 0);
    static INNER: Lock<u32> = Lock::new(level::TEST_INNER, 0);
    println!("lock-order: taking \"test inner\", then \"test outer\"");
    let inner = INNER.lock();
    let outer = OUTER.lock();
    println!(
        "not ok lock-order: both locks taken against the order ({} {}); the checker is off",
        *inner, *outer
    );
    println!("0 passed, 1 failed");
    crate::trace::power_off(ExitCode::TestFailed)
}

/// The banner is out; show that interrupts arrive, then power off with success.
fn boot_scenario() -> ! {
    start_timer();
    const WANTED: u64 = 3;
    while time::ticks() < WANTED {
        Cpu::wait_for_interrupt();
    }
    println!("ok timer ticks ({WANTED} at {TIMER_HZ} Hz)");
    println!("1 passed, 0 failed");
    crate::trace::power_off(ExitCode::Success)
}

/// `stack-overflow`: recurse without bound in this thread (named `overflow-test`). The arch
/// crate catches the guard-page hit, reports `kernel stack overflow in thread
/// overflow-test` and powers off with code 2; reaching the end is a failure.
fn overflow(_: usize) {
    println!("overflow-test: recursing until the guard page");
    let depth = recurse(0);
    println!("not ok stack overflow caught: recursion returned at depth {depth}");
    println!("0 passed, 1 failed");
    crate::trace::power_off(ExitCode::TestFailed)
}

/// `panic`: a deliberate `panic!` in kernel code, in the thread `panic-test`. The panic
/// handler reports the message, the thread and a backtrace, and powers off with code 2.
fn deliberate_panic(_: usize) {
    println!("panic-test: panicking on purpose");
    panic_here(core::hint::black_box(7));
}

/// A separate, not inlined frame so the backtrace has a caller chain to walk.
#[inline(never)]
fn panic_here(value: u64) {
    if core::hint::black_box(value) == 7 {
        panic!("deliberate panic (scenario panic), value {value}");
    }
}

/// Recurses without bound: the array (through `black_box`) keeps each frame alive and the
/// addition after the call defeats tail-call optimization.
#[inline(never)]
pub(crate) fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[(depth % 256) as usize] = depth as u8;
    let frame = core::hint::black_box(frame);
    if core::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[(depth % 256) as usize]))
}

/// The argument values `testsuite` understands (see user/testsuite).
const SUITE: u64 = 0;
const UNDEFINED_INSTRUCTION: u64 = 1;
const PRIVILEGED_INSTRUCTION: u64 = 2;
const PAGE_FAULT: u64 = 3;
const FPU_CHECK: u64 = 4;
const REGISTER_WRITE: u64 = 5;
const SYSCALL_LOOP: u64 = 6;
const TRAP_FLAG_SYSCALL: u64 = 7;
const SVE_INSTRUCTION: u64 = 8;
const TOUCH_AFTER_UNMAP: u64 = 9;
const SECOND_PRIVILEGED_INSTRUCTION: u64 = 10;
const BLOCKED_SYSCALL: u64 = 11;
const HOSTILE_RESUME: u64 = 12;
const IPC_SERVER: u64 = 13;
const IPC_CLIENT: u64 = 14;
const LIMITS: u64 = 30;
/// `testsuite`'s exit code for [`FPU_CHECK`] on a CPU without upper vector halves.
const NO_UPPER_HALVES: i64 = 0x7a;
/// `testsuite`'s exit code where [`SVE_INSTRUCTION`] does not apply.
const NO_SVE_TEST: i64 = 0x79;
/// `testsuite`'s exit codes for [`TRAP_FLAG_SYSCALL`].
const SURVIVED_TRAP_FLAG: i64 = 0x77;
const NO_TRAP_FLAG_TEST: i64 = 0x78;
/// `testsuite`'s exit code after landing where its register write pointed.
const LANDED: i64 = 0x5a;

/// Run `testsuite` with `argument` and wait (at most ~30 s of ticks) for its ending.
fn run_testsuite(argument: u64) -> Result<Ending, &'static str> {
    let process = proc::spawn_from_module("testsuite", argument, proc::root_budget())
        .map_err(|_| "cannot load testsuite")?;
    let deadline = time::ticks() + 30 * u64::from(TIMER_HZ);
    loop {
        match process.ending() {
            Ending::Running if time::ticks() > deadline => return Err("timed out"),
            Ending::Running => sched::sleep(1),
            ending => return Ok(ending),
        }
    }
}

/// `testsuite`'s syscall suite as the root process of the scenario: with the boot
/// capabilities of `abi::root_slots` (its image, the console's IRQ line and device range,
/// a malformed image), installed before its thread first runs. Waits like
/// [`run_testsuite`].
fn run_root_suite() -> Result<Ending, &'static str> {
    run_root_testsuite(SUITE, 60)
}

/// `testsuite` with `argument` as the root process (the capabilities of
/// [`run_root_suite`]), waited for at most `seconds` of ticks.
fn run_root_testsuite(argument: u64, seconds: u64) -> Result<Ending, &'static str> {
    let (process, thread) =
        proc::spawn_module_unstarted("testsuite", argument, proc::root_budget())
            .map_err(|_| "cannot load testsuite")?;
    // The new thread has not started, so these fill slots 0.. of an empty table.
    let installed = install_root_caps(&process);
    sched::start_thread(thread);
    if installed.is_err() {
        proc::kill(&process);
        return Err("cannot install the root capabilities");
    }
    let deadline = time::ticks() + seconds * u64::from(TIMER_HZ);
    loop {
        match process.ending() {
            Ending::Running if time::ticks() > deadline => return Err("timed out"),
            Ending::Running => sched::sleep(1),
            ending => return Ok(ending),
        }
    }
}

/// `limits` (booted with 2 GiB): no fixed per-process limit — `testsuite`'s `limits`
/// tests as the root process (a process maps and touches 1 GiB; a capability table grows
/// to 5000 capabilities and back; growth and `thread_create` refused by small budgets; 40
/// threads in one process; a recursive spawner does not keep another process from making
/// a thread: user/testsuite/src/limits.rs), then every frame is back.
fn limits(_: usize) {
    let mut suite = Suite::new();
    // Frames the heap grows by stay with it: they count as returned.
    let free_at_start = crate::mm::free_frames() + crate::mm::heap::frames_held();
    match run_root_testsuite(LIMITS, 600) {
        Ok(Ending::Exited(code)) if code >= 0 => {
            // why: the suite encodes `passed << 16 | failed` (user/testsuite).
            suite.add((code >> 16) as u32, (code & 0xffff) as u32);
        }
        Ok(_) => suite.check(
            "limits suite ran to its end",
            Err("it died or exited badly"),
        ),
        Err(why) => suite.check("limits suite ran to its end", Err(why)),
    }
    let back = || crate::mm::free_frames() + crate::mm::heap::frames_held() == free_at_start;
    for _ in 0..100 {
        if back() {
            break;
        }
        sched::sleep(1);
    }
    suite.check(
        "limits: every frame is back once the processes ended",
        if back() {
            Ok(())
        } else {
            Err("the free-frame count differs from before the first process")
        },
    );
    suite.finish()
}

/// `testsuite` as IPC server and as client, one process each, sharing an
/// endpoint the kernel creates. Capabilities pre-installed (user/testsuite/src/ipc.rs has
/// the table): slot 0 of both, the endpoint (server `READ WRITE GRANT`, client
/// `WRITE CALL GRANT`); client slot 1 the server's process (`CONTROL`), slot 2 the
/// `testsuite` boot module (`READ MAP`). The client prints one line per test and exits
/// with the counts; the server exits when told to (leaving the client's last call
/// unanswered: `PeerDied`).
fn ipc_suite(suite: &mut Suite) {
    use crate::obj::{Endpoint, EndpointCap, MemoryRegion, Object};
    use abi::Rights;
    let endpoint = Endpoint::new(None);
    let Ok((server, server_thread)) =
        proc::spawn_module_unstarted("testsuite", IPC_SERVER, proc::root_budget())
    else {
        suite.check(
            "user ipc suite ran to its end",
            Err("cannot load testsuite"),
        );
        return;
    };
    // The new threads have not started (each starts once its table is filled), so these
    // are the first capabilities in each table: slots 0, 1, 2.
    let installed = server.caps.insert(
        Object::Endpoint(EndpointCap::new(endpoint.clone(), 0)),
        Rights::READ | Rights::WRITE | Rights::GRANT,
    );
    sched::start_thread(server_thread);
    let Ok((client, client_thread)) =
        proc::spawn_module_unstarted("testsuite", IPC_CLIENT, proc::root_budget())
    else {
        proc::kill(&server);
        suite.check(
            "user ipc suite ran to its end",
            Err("cannot load testsuite"),
        );
        return;
    };
    let installed = installed.and_then(|_| {
        client.caps.insert(
            Object::Endpoint(EndpointCap::new(endpoint, 0)),
            Rights::WRITE | Rights::CALL | Rights::GRANT,
        )?;
        client
            .caps
            .insert(Object::Process(server.clone()), Rights::CONTROL)?;
        let module = MemoryRegion::boot_module("testsuite").ok_or(abi::Error::InvalidArgument)?;
        client
            .caps
            .insert(Object::Memory(module), Rights::READ | Rights::MAP)
    });
    sched::start_thread(client_thread);
    if installed.is_err() {
        suite.check("user ipc capabilities installed", Err("an insert failed"));
    }
    let deadline = time::ticks() + 120 * u64::from(TIMER_HZ);
    while client.ending() == Ending::Running && time::ticks() < deadline {
        sched::sleep(1);
    }
    match client.ending() {
        // why: the client encodes `passed << 16 | failed` like the suite.
        Ending::Exited(code) if code >= 0 => suite.add((code >> 16) as u32, (code & 0xffff) as u32),
        Ending::Running => suite.check("user ipc suite ran to its end", Err("timed out")),
        _ => suite.check("user ipc suite ran to its end", Err("the client died")),
    }
    let ending = server.ending();
    if ending != Ending::Exited(0) {
        // The server's exit codes say which of its calls failed (user/testsuite/src/ipc.rs).
        println!("user ipc server ended: {ending:?}");
    }
    suite.check(
        "user ipc server exited when told to",
        match ending {
            Ending::Exited(0) => Ok(()),
            Ending::Running => Err("still running"),
            _ => Err("it died or exited badly"),
        },
    );
}

/// A faulting `testsuite` run: its test name, argument, and the causes that count.
type FaultCase = (&'static str, u64, fn(TrapCause) -> bool);

/// `user`: the user suite's syscall tests, then one process per faulting instruction.
fn user_suite(_: usize) {
    let mut suite = Suite::new();
    // Frames the heap grows by stay with it: they count as returned.
    let free_at_start = crate::mm::free_frames() + crate::mm::heap::frames_held();
    match run_root_suite() {
        Ok(Ending::Exited(code)) if code >= 0 => {
            // why: the suite encodes `passed << 16 | failed` (user/testsuite).
            suite.add((code >> 16) as u32, (code & 0xffff) as u32);
        }
        Ok(_) => suite.check("user suite ran to its end", Err("it died or exited badly")),
        Err(why) => suite.check("user suite ran to its end", Err(why)),
    }
    ipc_suite(&mut suite);
    match fpu_survives_preemption() {
        Ok(true) => suite.check(
            "user FPU state survives preemption (upper vector halves too: ymm / q)",
            Ok(()),
        ),
        Ok(false) => suite.check(
            "user FPU state survives preemption (xmm only: this CPU has no AVX)",
            Ok(()),
        ),
        Err(why) => suite.check("user FPU state survives preemption", Err(why)),
    }
    let cpus = online_cpus();
    if cpus >= 2 {
        let name = "user FPU state stays each thread's own across CPUs";
        match fpu_survives_migration(cpus) {
            Ok(migrations) => suite.check(
                &alloc::format!(
                    "{name}: {} processes on {cpus} CPUs, moved {migrations} times",
                    cpus + 1
                ),
                Ok(()),
            ),
            Err(why) => suite.check(name, Err(why)),
        }
        // Alone, the checker leaves each CPU idle behind it, so it comes back to a CPU
        // whose registers still hold an older state of its own: it must be loaded anew.
        let name = "user FPU state stays its own on a CPU that ran only idle since it left";
        match migrating_checkers(cpus, 1) {
            Ok(migrations) => {
                suite.check(&alloc::format!("{name}: moved {migrations} times"), Ok(()))
            }
            Err(why) => suite.check(name, Err(why)),
        }
    }
    suite.check(
        "user thread blocked in a system call and a kernel thread preempted by the timer keep their own kernel stacks",
        blocked_syscall_and_preempted_stacks(),
    );
    hostile_resume(&mut suite);
    suite.check(
        "user register write resumes at the new registers",
        match run_testsuite(REGISTER_WRITE) {
            Ok(Ending::Exited(LANDED)) => Ok(()),
            Ok(Ending::Exited(3)) => Err("the written FPU control word was not live on landing"),
            Ok(Ending::Exited(_)) => Err("the thread did not land with the written registers"),
            Ok(_) => Err("the thread was killed"),
            Err(why) => Err(why),
        },
    );
    nmi_storm(&mut suite);
    // AArch64's written policy: SVE stays trapping and ends the thread ("SVE not
    // supported", then FPU-unavailable); without SVE the instruction is undefined.
    let sve = "user SVE instruction ends the thread";
    match run_testsuite(SVE_INSTRUCTION) {
        Ok(Ending::Exited(NO_SVE_TEST)) => suite.check(
            "user SVE instruction (not applicable on this architecture)",
            Ok(()),
        ),
        Ok(Ending::Faulted(TrapCause::FpuUnavailable)) => suite.check(
            "user SVE instruction ends the thread (SVE not supported)",
            Ok(()),
        ),
        Ok(Ending::Faulted(TrapCause::Undefined)) => suite.check(
            "user SVE instruction ends the thread (undefined: this CPU has no SVE)",
            Ok(()),
        ),
        Ok(_) => suite.check(sve, Err("the thread was not ended by an SVE trap")),
        Err(why) => suite.check(sve, Err(why)),
    }
    // Either ending is fine (killed by the single-step trap in user mode, or allowed to
    // continue): what matters is that the kernel survives the trap pending across entry.
    match run_testsuite(TRAP_FLAG_SYSCALL) {
        Ok(Ending::Exited(NO_TRAP_FLAG_TEST)) => suite.check(
            "user syscall with the trap flag set (not applicable on this architecture)",
            Ok(()),
        ),
        Ok(Ending::Exited(SURVIVED_TRAP_FLAG) | Ending::Faulted(_)) => suite.check(
            "user syscall with the trap flag set; kernel survived",
            Ok(()),
        ),
        Ok(_) => suite.check(
            "user syscall with the trap flag set; kernel survived",
            Err("the process ended in an unexpected way"),
        ),
        Err(why) => suite.check(
            "user syscall with the trap flag set; kernel survived",
            Err(why),
        ),
    }
    // The privileged instructions, each its own process: `hlt` and `cli` (x86_64, #GP in
    // ring 3); `msr daifset, #2` (trapped MSR at EL0) and `msr vbar_el1, x0` (a system
    // register write: undefined at EL0) on AArch64.
    let (first_privileged, second_privileged) = if Cpu::NAME == "x86_64" {
        (
            "user privileged instruction hlt kills the process",
            "user privileged instruction cli kills the process",
        )
    } else {
        (
            "user privileged instruction msr daifset kills the process",
            "user privileged instruction msr vbar_el1 (system register write) kills the process",
        )
    };
    let privileged = |cause: TrapCause| {
        matches!(
            cause,
            TrapCause::GeneralProtection | TrapCause::Undefined | TrapCause::Other(_)
        )
    };
    let cases: [FaultCase; 5] = [
        (
            "user undefined instruction kills the process",
            UNDEFINED_INSTRUCTION,
            |cause| cause == TrapCause::Undefined,
        ),
        (first_privileged, PRIVILEGED_INSTRUCTION, privileged),
        (second_privileged, SECOND_PRIVILEGED_INSTRUCTION, privileged),
        ("user page fault kills the process", PAGE_FAULT, |cause| {
            matches!(
                cause,
                TrapCause::PageFault {
                    from_user: true,
                    ..
                }
            )
        }),
        (
            "user touching memory after unmapping it kills the process",
            TOUCH_AFTER_UNMAP,
            |cause| {
                matches!(
                    cause,
                    TrapCause::PageFault {
                        from_user: true,
                        ..
                    }
                )
            },
        ),
    ];
    for (name, argument, expected) in cases {
        let outcome = match run_testsuite(argument) {
            Ok(Ending::Faulted(cause)) if expected(cause) => Ok(()),
            Ok(Ending::Faulted(_)) => Err("killed for a different cause"),
            Ok(_) => Err("the process was not killed"),
            Err(why) => Err(why),
        };
        suite.check(name, outcome);
    }
    // Let the scheduler reap the last dead threads (on whichever CPUs they ran: each is
    // freed by the next thread there), then every frame must be back.
    let back = || crate::mm::free_frames() + crate::mm::heap::frames_held() == free_at_start;
    for _ in 0..100 {
        if back() {
            break;
        }
        sched::sleep(1);
    }
    if !back() {
        crate::println!(
            "user frames: {} free + {} cached stack + {} heap now, {free_at_start} at the start",
            crate::mm::frames::free_frames(),
            crate::mm::stacks::cached_frames(),
            crate::mm::heap::frames_held()
        );
    }
    suite.check(
        "user processes return every frame",
        if back() {
            Ok(())
        } else {
            Err("the free-frame count differs from before the first process")
        },
    );
    suite.check("kernel survived user faults", Ok(()));
    suite.finish()
}

/// Two processes fill the FPU/SIMD registers with different values and spin while the
/// timer switches between them; each checks its registers after every round, then the
/// upper halves of a vector register (x86_64 with AVX: ymm; AArch64: q). `Ok(true)` when
/// the upper halves were checked too.
fn fpu_survives_preemption() -> Result<bool, &'static str> {
    let preemptions = sched::preemptions();
    let spawn = |seed: u64| {
        proc::spawn_from_module("testsuite", FPU_CHECK | seed << 8, proc::root_budget())
            .map_err(|_| "cannot load testsuite")
    };
    let processes = [spawn(0x1111_0000_1111_0000)?, spawn(0x2222_0000_2222_0000)?];
    let deadline = time::ticks() + 120 * u64::from(TIMER_HZ);
    while processes
        .iter()
        .any(|process| process.ending() == Ending::Running)
    {
        if time::ticks() > deadline {
            return Err("timed out");
        }
        sched::sleep(5);
    }
    let mut upper_halves = true;
    for process in &processes {
        match process.ending() {
            Ending::Exited(0) => {}
            Ending::Exited(NO_UPPER_HALVES) => upper_halves = false,
            Ending::Exited(2) => {
                return Err("a process saw foreign or lost upper vector halves");
            }
            Ending::Exited(_) => return Err("a process saw foreign or lost register values"),
            _ => return Err("a process was killed (FP/SIMD not enabled for user mode?)"),
        }
    }
    if sched::preemptions() < preemptions + 4 {
        return Err("the processes were hardly preempted; the test proves nothing");
    }
    Ok(upper_halves)
}

/// FP/SIMD isolation on several CPUs: one more [`FPU_CHECK`] process than there are CPUs
/// (so CPUs are shared and threads preempted), each with its own seed, while this thread
/// moves every one of them to another CPU every other tick. A process that finds a
/// register changed (another thread's value, or its own lost on a move) fails. Returns the
/// moves seen (a thread's last CPU changed between two looks).
fn fpu_survives_migration(cpus: u32) -> Result<u64, &'static str> {
    migrating_checkers(cpus, u64::from(cpus) + 1)
}

/// `count` FPU checkers (`FPU_CHECK`) moved round the `cpus` CPUs every two ticks until
/// each has ended; how many times they changed CPU.
fn migrating_checkers(cpus: u32, count: u64) -> Result<u64, &'static str> {
    let file = crate::boot::module("testsuite").ok_or("no testsuite module")?;
    let mut checkers = alloc::vec::Vec::new();
    for index in 0..count {
        let seed = 0x0033_0000_0033_0000 ^ ((index + 1) * 0x0001_0101_0001_0101);
        let (process, thread) = proc::spawn_at(
            "testsuite",
            file,
            FPU_CHECK | seed << 8,
            sched::NORMAL,
            proc::root_budget(),
        )
        .map_err(|_| "cannot load testsuite")?;
        sched::start_thread(thread);
        checkers.push((process, thread, u32::MAX));
    }
    let deadline = time::ticks() + 300 * u64::from(TIMER_HZ);
    let mut moves = 0;
    let mut round = 0u32;
    while checkers
        .iter()
        .any(|(process, ..)| process.ending() == Ending::Running)
    {
        if time::ticks() > deadline {
            return Err("timed out");
        }
        for (index, (process, thread, last_cpu)) in checkers.iter_mut().enumerate() {
            if process.ending() != Ending::Running {
                continue;
            }
            if let Some(activity) = sched::activity(*thread) {
                if *last_cpu != u32::MAX && activity.last_cpu != *last_cpu {
                    moves += 1;
                }
                *last_cpu = activity.last_cpu;
            }
            // why: index < cpus + 1, a small count.
            let target = (index as u32 + round) % cpus;
            if let Some(serial) = sched::serial_of(*thread) {
                let _ = sched::set_affinity(*thread, serial, 1 << target);
            }
        }
        round = round.wrapping_add(1);
        sched::sleep(2);
    }
    for (process, ..) in &checkers {
        match process.ending() {
            Ending::Exited(0 | NO_UPPER_HALVES) => {}
            Ending::Exited(_) => return Err("a process saw foreign or lost register values"),
            _ => return Err("a process was killed"),
        }
    }
    if moves < u64::from(cpus) {
        return Err("the processes hardly moved between CPUs; the test proves nothing");
    }
    Ok(moves)
}

/// Result of [`preempted_checker`]: 0 running, 1 passed, else the failure.
static PREEMPTED_RESULT: AtomicU8 = AtomicU8::new(0);
const CHECK_PASSED: u8 = 1;
const CHECK_NOT_OWN_STACK: u8 = 2;
const CHECK_CORRUPTED: u8 = 3;
const CHECK_NOT_PREEMPTED: u8 = 4;
const CHECK_NO_SLEEPER: u8 = 5;

/// Two threads in the kernel at once. A user thread blocks inside the
/// `test_sleep` system call with a pattern on its kernel stack, while this kernel thread
/// keeps its own pattern and is preempted by the timer (in `wait_for_interrupt`, in kernel
/// mode) at least twice, at least once while the user thread was blocked. Each checks its
/// pattern after resuming.
fn preempted_checker(_: usize) {
    let pattern = |index: usize| (index as u8).wrapping_mul(29) ^ 0x3c;
    let mut area = [0u8; 2048];
    for (index, byte) in area.iter_mut().enumerate() {
        *byte = pattern(index);
    }
    let area = core::hint::black_box(&mut area);
    let address = area.as_ptr() as u64;
    let own = sched::current_stack().is_some_and(|stack| stack.contains(address));
    let before = sched::preemptions();
    let deadline = time::ticks() + 30 * u64::from(TIMER_HZ);
    let mut saw_sleeper = false;
    while !(saw_sleeper && sched::preemptions() >= before + 2) && time::ticks() < deadline {
        Cpu::wait_for_interrupt();
        saw_sleeper |= crate::syscall::testing::test_sleeper().is_some();
    }
    let area = core::hint::black_box(area);
    let intact = area
        .iter()
        .enumerate()
        .all(|(index, &byte)| byte == pattern(index));
    let outcome = if !own {
        CHECK_NOT_OWN_STACK
    } else if !intact {
        CHECK_CORRUPTED
    } else if sched::preemptions() < before + 2 {
        CHECK_NOT_PREEMPTED
    } else if !saw_sleeper {
        CHECK_NO_SLEEPER
    } else {
        CHECK_PASSED
    };
    PREEMPTED_RESULT.store(outcome, Ordering::Release);
}

fn blocked_syscall_and_preempted_stacks() -> Result<(), &'static str> {
    PREEMPTED_RESULT.store(0, Ordering::Release);
    sched::spawn_kernel("preempted-check", sched::NORMAL, preempted_checker, 0)
        .map_err(|_| "cannot spawn the kernel thread")?;
    let ending = run_testsuite(BLOCKED_SYSCALL);
    let deadline = time::ticks() + 30 * u64::from(TIMER_HZ);
    while PREEMPTED_RESULT.load(Ordering::Acquire) == 0 {
        if time::ticks() > deadline {
            return Err("the kernel thread did not finish");
        }
        sched::sleep(1);
    }
    match ending? {
        Ending::Exited(0) => {}
        Ending::Exited(1) => {
            return Err("the user thread's kernel stack changed while it was blocked");
        }
        Ending::Exited(2) => {
            return Err("the system call's locals were not on the user thread's kernel stack");
        }
        Ending::Exited(_) => return Err("test_sleep failed"),
        _ => return Err("the user process was killed"),
    }
    match PREEMPTED_RESULT.load(Ordering::Acquire) {
        CHECK_PASSED => Ok(()),
        CHECK_NOT_OWN_STACK => Err("the kernel thread's locals were not on its own stack"),
        CHECK_CORRUPTED => Err("the kernel thread's stack changed while it was preempted"),
        CHECK_NOT_PREEMPTED => Err("the kernel thread was not preempted twice by the timer"),
        CHECK_NO_SLEEPER => Err("no user thread was blocked in a system call meanwhile"),
        _ => Err("unexpected result"),
    }
}

/// An instruction pointer no user code may run at: non-canonical on x86_64 (bit 47 set,
/// upper bits clear), outside the user half on AArch64.
const HOSTILE_INSTRUCTION_POINTER: u64 = 0x0000_8000_0000_0000;

/// The hostile resume, done by the kernel itself: while a user thread is blocked in a
/// system call, write a non-canonical instruction pointer into its saved user frame (the
/// register-write call refuses such a value; this is the kernel's own path) and let it
/// return. The thread must fault in user mode — x86_64: a user #GP, never a #GP in ring
/// 0; AArch64: an instruction abort at EL0 — and only it dies.
fn hostile_resume(suite: &mut Suite) {
    let name = "user thread resumed at a non-canonical instruction pointer faults in user mode";
    let outcome = (|| {
        let process = proc::spawn_from_module("testsuite", HOSTILE_RESUME, proc::root_budget())
            .map_err(|_| "cannot load testsuite")?;
        let deadline = time::ticks() + 30 * u64::from(TIMER_HZ);
        loop {
            if time::ticks() > deadline {
                return Err("timed out waiting for the thread to block");
            }
            if process.ending() != Ending::Running {
                return Err("the process ended before the kernel rewrote its frame");
            }
            let written = crate::syscall::testing::test_sleeper().and_then(|thread| {
                sched::with_saved_user_frame(thread, |frame| {
                    frame.set_instruction_pointer(HOSTILE_INSTRUCTION_POINTER);
                })
            });
            if written.is_some() {
                break;
            }
            sched::sleep(1);
        }
        while process.ending() == Ending::Running {
            if time::ticks() > deadline {
                return Err("timed out waiting for the thread to fault");
            }
            sched::sleep(1);
        }
        match process.ending() {
            Ending::Faulted(TrapCause::GeneralProtection) if Cpu::NAME == "x86_64" => Ok(()),
            Ending::Faulted(TrapCause::PageFault {
                addr: HOSTILE_INSTRUCTION_POINTER,
                access: arch_api::Access::Execute,
                from_user: true,
            }) if Cpu::NAME == "aarch64" => Ok(()),
            Ending::Faulted(_) => Err("the thread died of another cause"),
            _ => Err("the thread returned from its system call unharmed"),
        }
    })();
    suite.check(name, outcome);
}

/// The hostile-entry test: NMIs arrive while user processes make system calls as
/// fast as they can (so some land between `SYSCALL` and `SWAPGS`); every NMI must find the
/// kernel's per-CPU base, and nothing may break.
fn nmi_storm(suite: &mut Suite) {
    const WANTED: u64 = 10_000;
    if !Cpu::nmi_storm(true) {
        suite.check(
            "user syscalls under an NMI storm (not applicable on this architecture)",
            Ok(()),
        );
        return;
    }
    let (start, _) = Cpu::nmi_counts();
    let deadline = time::ticks() + 120 * u64::from(TIMER_HZ);
    let mut outcome = Ok(());
    while Cpu::nmi_counts().0 - start < WANTED && time::ticks() < deadline {
        match run_testsuite(SYSCALL_LOOP) {
            Ok(Ending::Exited(0)) => {}
            Ok(_) => {
                outcome = Err("a system call failed or the process died during the storm");
                break;
            }
            Err(why) => {
                outcome = Err(why);
                break;
            }
        }
    }
    Cpu::nmi_storm(false);
    let (end, wrong_base) = Cpu::nmi_counts();
    if outcome.is_ok() && end - start < WANTED {
        outcome = Err("fewer than 10000 NMIs arrived before the deadline");
    }
    if wrong_base != 0 {
        outcome = Err("an NMI ran with a per-CPU base that was not the kernel's");
    }
    println!(
        "user-suite: {} NMIs during the storm, {wrong_base} with a wrong base",
        end - start
    );
    suite.check(
        "user syscalls under an NMI storm (10000 NMIs, kernel GS base in each)",
        outcome,
    );
}

/// Samples per benchmark when the command line has no `iterations=N`.
const BENCH_ITERATIONS: usize = 200;
/// The most samples per benchmark (the iteration count travels in 23 bits of the bench
/// program's argument, `abi::bench::iterations`).
const BENCH_ITERATIONS_MAX: usize = 1 << 20;
const _: () = assert!((BENCH_ITERATIONS_MAX as u64) << 8 < abi::bench::PROFILE);
/// `only=<name>`: the one benchmark to run (`abi::bench` selector; 0: all).
static BENCH_ONLY: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// `profile=on`: the bench program's profile mode (`abi::bench::PROFILE`).
static BENCH_PROFILE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// `others=N`: the `scale` group, with N other threads made by the bench program.
static BENCH_OTHERS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// `procs=N`: the `scale` group, with N other processes alive ([`BENCH_BALLAST`]).
static BENCH_PROCS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The most other processes `procs=N` asks for.
const BENCH_PROCS_MAX: u64 = 4096;
/// `bench`'s argument: the mode in the low byte, the iteration count above.
const BENCH_RUN: u64 = 0;
const BENCH_YIELD_PARTNER: u64 = 1;
const BENCH_SPAWN_EXIT: u64 = 2;
const BENCH_FAULT: u64 = 3;
const BENCH_IPC_SERVER: u64 = 4;
const BENCH_NOTIFY_PARTNER: u64 = 5;
const BENCH_BALLAST: u64 = 6;
/// How often the bench thread checks whether the runner has ended.
const BENCH_POLL_TICKS: u64 = 16;

/// Online CPUs: one past the highest online index (at most 255, what the bench program's
/// argument carries).
fn online_cpus() -> u32 {
    use arch_api::SecondaryCpus;
    (0..arch_api::MAX_CPUS.min(255) as u32)
        .rev()
        .find(|&index| Cpu::is_online(index))
        .map_or(1, |index| index + 1)
}

/// With more than one CPU, let thread `id` run on `cpu` only (with one, nothing changes:
/// the single-CPU numbers stay those of a kernel without this call).
fn pin(id: usize, cpu: u32, cpus: u32) {
    if cpus < 2 {
        return;
    }
    let pinned = sched::serial_of(id)
        .is_some_and(|serial| sched::set_affinity(id, serial, 1 << cpu).is_ok());
    if !pinned {
        println!("not ok bench: cannot pin thread {id} to cpu {cpu}");
        crate::trace::power_off(ExitCode::TestFailed)
    }
}

/// `proc::spawn_from_module("bench", argument)` with its thread [`pin`]ned to `cpu`
/// before it starts.
fn spawn_pinned(
    argument: u64,
    cpu: u32,
    cpus: u32,
    budget: alloc::sync::Arc<crate::obj::Budget>,
) -> Result<alloc::sync::Arc<crate::obj::Process>, proc::LoadError> {
    if cpus < 2 {
        return proc::spawn_from_module("bench", argument, budget);
    }
    let file = crate::boot::module("bench").ok_or(proc::LoadError::NoModule)?;
    let (process, thread) = proc::spawn_at("bench", file, argument, sched::NORMAL, budget)?;
    pin(thread, cpu, cpus);
    sched::start_thread(thread);
    Ok(process)
}

/// `bench`: enable the user instruction counter, start the yield partner and
/// the benchmarks (user/bench, which prints one `bench …` line per benchmark), add the
/// boot-to-user span measured here, and power off. Run under QEMU `-icount shift=0`
/// (`cargo xtask bench`), or the numbers are not instructions.
fn bench(iterations: usize) {
    // With more than one CPU every bench thread runs on this one (the instruction counter
    // is per CPU: it is programmed here), except the cross-CPU server, which gets another.
    let cpus = online_cpus();
    let home = sched::current_cpu();
    pin(sched::current(), home, cpus);
    if !Cpu::enable_user_instruction_counter() {
        println!("not ok bench: no instruction counter readable from user mode");
        crate::trace::power_off(ExitCode::TestFailed)
    }
    let only = BENCH_ONLY.load(core::sync::atomic::Ordering::Relaxed);
    let others = BENCH_OTHERS.load(core::sync::atomic::Ordering::Relaxed);
    let procs = BENCH_PROCS.load(core::sync::atomic::Ordering::Relaxed);
    // The `scale` group: other threads and processes alive, `spawn` (no `page_fault`) here.
    let scale = others != 0 || procs != 0;
    let profile = if BENCH_PROFILE.load(core::sync::atomic::Ordering::Relaxed) {
        abi::bench::PROFILE
    } else {
        0
    };
    let argument = |mode: u64| {
        mode | (iterations as u64) << 8
            | profile
            | others << abi::bench::OTHERS_SHIFT
            | u64::from(cpus) << abi::bench::CPUS_SHIFT
            | only << abi::bench::SELECTOR_SHIFT
    };
    let _ballast = other_processes(procs as usize, argument(BENCH_BALLAST), home, cpus);
    if abi::bench::selected(only, "spawn") || (!scale && abi::bench::selected(only, "page_fault")) {
        spawn_benchmarks(iterations, home, cpus, !scale);
    }
    // The partner only yields, forever: `yield` measures the round trip through it. It
    // starts first, so the benchmarks always find it in the run queue; it waits for the
    // runner's start signal first, so it is not in the queue during the IPC benchmarks.
    // The capabilities of every bench process (user/bench `slots`) go in right after each
    // spawn, before any of them runs (this thread does not yield until its sleep).
    use crate::obj::{Endpoint, EndpointCap, Notification, NotificationCap, Object};
    use abi::Rights;
    let endpoint = Endpoint::new(None);
    let [start, ping, pong] = [(); 3].map(|()| Notification::new(None));
    let notification = |object: &alloc::sync::Arc<Notification>| {
        Object::Notification(NotificationCap::new(object.clone()))
    };
    let spawn_on = |cpu: u32, mode: u64, caps: &[(Object, Rights)]| {
        let Ok(process) = spawn_pinned(argument(mode), cpu, cpus, proc::root_budget()) else {
            println!("not ok bench: cannot load the bench module");
            crate::trace::power_off(ExitCode::TestFailed)
        };
        for (object, rights) in caps {
            if process.caps.insert(object.clone(), *rights).is_err() {
                println!("not ok bench: cannot install a capability");
                crate::trace::power_off(ExitCode::TestFailed)
            }
        }
        process
    };
    let spawn_with = |mode: u64, caps: &[(Object, Rights)]| spawn_on(home, mode, caps);
    let endpoint_cap = || Object::Endpoint(EndpointCap::new(endpoint.clone(), 0));
    spawn_with(BENCH_YIELD_PARTNER, &[(notification(&start), Rights::WAIT)]);
    spawn_with(
        BENCH_IPC_SERVER,
        &[(endpoint_cap(), Rights::READ | Rights::WRITE | Rights::GRANT)],
    );
    spawn_with(
        BENCH_NOTIFY_PARTNER,
        &[
            (notification(&ping), Rights::WAIT),
            (notification(&pong), Rights::SIGNAL),
        ],
    );
    // The server of `ipc_call_reply_cross_cpu` on another CPU, with an endpoint of its own.
    let cross = Endpoint::new(None);
    let cross_cap = || Object::Endpoint(EndpointCap::new(cross.clone(), 0));
    if cpus >= 2 {
        spawn_on(
            (home + 1) % cpus,
            BENCH_IPC_SERVER,
            &[(cross_cap(), Rights::READ | Rights::WRITE | Rights::GRANT)],
        );
    }
    let runner = spawn_with(
        BENCH_RUN,
        &[
            (endpoint_cap(), Rights::WRITE | Rights::CALL | Rights::GRANT),
            (notification(&start), Rights::SIGNAL),
            (notification(&ping), Rights::SIGNAL),
            (notification(&pong), Rights::WAIT),
            (cross_cap(), Rights::WRITE | Rights::CALL),
        ],
    );
    drop((endpoint, start, ping, pong, cross));
    // Checked every few ticks, not at each: a wake-up here is part of the tick that
    // `timer_tick` measures, and should be rare in its samples.
    while runner.ending() == Ending::Running {
        sched::sleep(BENCH_POLL_TICKS);
    }
    match crate::stats::boot_to_user() {
        Some(span) => {
            println!("bench boot_to_user min={span} median={span} max={span} samples=1 discarded=0")
        }
        None => println!("bench: boot_to_user not recorded"),
    }
    match runner.ending() {
        Ending::Exited(0) => {
            println!("bench done");
            crate::trace::power_off(ExitCode::Success)
        }
        _ => {
            println!("not ok bench: the bench process failed");
            crate::trace::power_off(ExitCode::TestFailed)
        }
    }
}

/// The `scale` group's other processes: `count` bench processes that sleep for good
/// ([`BENCH_BALLAST`]), returned once each has run and gone to sleep.
fn other_processes(
    count: usize,
    argument: u64,
    home: u32,
    cpus: u32,
) -> alloc::vec::Vec<alloc::sync::Arc<crate::obj::Process>> {
    let mut processes = alloc::vec::Vec::with_capacity(count);
    let mut threads = alloc::vec::Vec::with_capacity(count);
    let Some(file) = crate::boot::module("bench") else {
        println!("not ok bench: no bench module");
        crate::trace::power_off(ExitCode::TestFailed)
    };
    for _ in 0..count {
        match proc::spawn_at("bench", file, argument, sched::NORMAL, proc::root_budget()) {
            Ok((process, thread)) => {
                pin(thread, home, cpus);
                sched::start_thread(thread);
                processes.push(process);
                threads.push(thread);
            }
            Err(error) => {
                println!(
                    "not ok bench: other process {} not made: {error:?}",
                    processes.len()
                );
                crate::trace::power_off(ExitCode::TestFailed)
            }
        }
    }
    let asleep = |thread: &usize| {
        matches!(
            sched::describe(*thread),
            Some((_, crate::task::thread::State::Blocked, ..))
        )
    };
    let deadline = time::ticks() + 120 * u64::from(TIMER_HZ);
    while !threads.iter().all(asleep) {
        if time::ticks() > deadline {
            println!("not ok bench: the other processes did not all go to sleep");
            crate::trace::power_off(ExitCode::TestFailed)
        }
        sched::sleep(1);
    }
    if count != 0 {
        println!("bench: {count} other processes made, each ran and went to sleep");
    }
    processes
}

/// Samples of `spawn` and `page_fault` at most (each loads a whole process).
const SPAWN_MAX_SAMPLES: usize = 50;

/// Processes started from the kernel, measured with the user instruction counter (read
/// by the kernel): `spawn` and, `with_fault`, the fault path. Run before any other thread
/// but the `scale` group's sleeping processes exists, so the new thread is the next to run.
///
/// - `spawn`: from `spawn_from_module("bench")` to the new thread's first return to user
///   mode (the counter read just before it); the kernel thread yields to it at once.
/// - `page_fault`: Keel resolves no user fault (a fault kills the thread), so this is the
///   cheapest fault path there is: from that first return to user mode, through the few
///   instructions of `bench`'s start-up and a load from an unmapped page, to the core's
///   fault handler (`process::kill_current`): trap entry and decode, not the kill.
fn spawn_benchmarks(iterations: usize, home: u32, cpus: u32, with_fault: bool) {
    let mut spawn = Samples::new();
    let mut fault = Samples::new();
    let runs = if with_fault { 2 } else { 1 };
    for (mode, samples) in [(BENCH_SPAWN_EXIT, &mut spawn), (BENCH_FAULT, &mut fault)]
        .into_iter()
        .take(runs)
    {
        let wanted = iterations.clamp(1, SPAWN_MAX_SAMPLES);
        let mut attempts = 0;
        while samples.kept < wanted && attempts < 4 * wanted + 10 {
            attempts += 1;
            let budget = proc::root_budget();
            let ticks = time::ticks();
            let start = crate::stats::arm_marks();
            let Ok(process) = spawn_pinned(mode, home, cpus, budget) else {
                println!("not ok bench: cannot load the bench module");
                crate::trace::power_off(ExitCode::TestFailed)
            };
            sched::yield_now();
            let entry = crate::stats::spawn_mark();
            let fault_at = crate::stats::fault_mark();
            let clean = time::ticks() == ticks;
            while process.ending() == Ending::Running {
                sched::yield_now();
            }
            // Let the dead thread be reaped (its process torn down) before the next one.
            sched::sleep(1);
            let sample = match (mode, entry, fault_at) {
                (BENCH_SPAWN_EXIT, Some(entry), _) => Some(entry - start),
                (BENCH_FAULT, Some(entry), Some(fault_at)) => Some(fault_at - entry),
                _ => None,
            };
            samples.add(sample.filter(|_| clean));
        }
    }
    spawn.report("spawn");
    if with_fault {
        fault.report("page_fault");
    }
}

/// Kept samples of one kernel-measured benchmark.
struct Samples {
    values: [u64; SPAWN_MAX_SAMPLES],
    kept: usize,
    discarded: usize,
}

impl Samples {
    fn new() -> Self {
        Self {
            values: [0; SPAWN_MAX_SAMPLES],
            kept: 0,
            discarded: 0,
        }
    }

    fn add(&mut self, sample: Option<u64>) {
        match sample {
            Some(value) if self.kept < SPAWN_MAX_SAMPLES => {
                self.values[self.kept] = value;
                self.kept += 1;
            }
            _ => self.discarded += 1,
        }
    }

    fn report(&mut self, name: &str) {
        let (kept, discarded) = (self.kept, self.discarded);
        let values = &mut self.values[..kept];
        values.sort_unstable();
        match (values.first(), values.last()) {
            (Some(min), Some(max)) => println!(
                "bench {name} min={min} median={} max={max} samples={kept} discarded={discarded}",
                values[kept / 2]
            ),
            _ => println!("bench {name}: every sample discarded ({discarded})"),
        }
    }
}

/// `user-fault`: a user program reads an unmapped address; the kernel reports the fault
/// naming the process and keeps running.
fn user_fault(_: usize) {
    match run_testsuite(PAGE_FAULT) {
        Ok(Ending::Faulted(TrapCause::PageFault { .. })) => {
            println!("ok kernel survived");
            crate::trace::power_off(ExitCode::Success)
        }
        Ok(_) => println!("not ok kernel survived: the process was not killed by a page fault"),
        Err(why) => println!("not ok kernel survived: {why}"),
    }
    crate::trace::power_off(ExitCode::TestFailed)
}

/// The longest line `echo-input` keeps; longer lines are reported and dropped.
const ECHO_LINE_MAX: usize = 64;

/// `echo-input`: read lines from the serial console by polling, and print each back, until
/// the line `quit`. It proves that the test harness reaches the guest's serial input on
/// both architectures (tests/tests/echo_input.rs); the console server owns the receive
/// path once it exists. A line ends at CR or LF; empty lines (the LF of a CR LF) are
/// skipped; a line longer than [`ECHO_LINE_MAX`] is reported as too long, not echoed.
fn echo_input() -> ! {
    start_timer();
    let mut line = [0u8; ECHO_LINE_MAX];
    let mut echoed = 0u64;
    loop {
        crate::log::print(format_args!("echo> "));
        let mut length = 0usize;
        let mut dropped = 0usize;
        loop {
            let Some(byte) = Cpu::console_read() else {
                // Nothing waiting: sleep until the next tick rather than spin.
                Cpu::wait_for_interrupt();
                continue;
            };
            match byte {
                b'\r' | b'\n' if length == 0 && dropped == 0 => {}
                b'\r' | b'\n' => break,
                _ if length < line.len() => {
                    line[length] = byte;
                    length += 1;
                }
                _ => dropped += 1,
            }
        }
        let text = &line[..length];
        if dropped > 0 {
            println!(
                "echo-input: line too long ({} bytes, at most {ECHO_LINE_MAX}), dropped",
                length + dropped
            );
        } else if text == b"quit" {
            println!("ok echo-input ({echoed} lines echoed)");
            println!("1 passed, 0 failed");
            crate::trace::power_off(ExitCode::Success)
        } else {
            echoed += 1;
            println!(
                "echo-input: got \"{}\" ({length} bytes)",
                text.escape_ascii()
            );
        }
    }
}

/// The capabilities of the `user` scenario's root process (`abi::root_slots`), inserted
/// in slot order into its empty table.
fn install_root_caps(root: &crate::obj::Process) -> Result<(), abi::Error> {
    use crate::obj::{IrqLine, MemoryRegion, MmioRange, Object, PortRange};
    use abi::{Error, Rights};
    use arch_api::Devices;
    let image = MemoryRegion::boot_module("testsuite").ok_or(Error::InvalidArgument)?;
    root.caps.insert(
        Object::Memory(image),
        Rights::READ | Rights::MAP | Rights::GRANT,
    )?;
    let device = Cpu::console_device().unwrap_or_default();
    let line = device
        .irq
        .and_then(IrqLine::new)
        .ok_or(Error::InvalidArgument)?;
    root.caps.insert(Object::Irq(line), Rights::CONTROL)?;
    match (device.ports, device.mmio) {
        (Some((first, count)), _) => root.caps.insert(
            Object::IoPorts(PortRange { first, count }),
            Rights::READ | Rights::WRITE,
        )?,
        (None, Some((base, length))) => root.caps.insert(
            Object::Mmio(MmioRange { base, length }),
            Rights::READ | Rights::WRITE | Rights::MAP,
        )?,
        (None, None) => return Err(Error::InvalidArgument),
    };
    let malformed =
        MemoryRegion::boot_module_prefix("testsuite", 256).ok_or(Error::InvalidArgument)?;
    root.caps
        .insert(Object::Memory(malformed), Rights::READ | Rights::GRANT)?;
    root.caps.insert(Object::System, Rights::READ)?;
    Ok(())
}
