//! Scenario `user` (DESIGN.md §8): the `testsuite` boot module in user mode — the null
//! system call, `debug_write` with good and bad pointers, and one process per faulting
//! instruction (undefined, privileged, page fault), each killed with a report naming the
//! process while the kernel keeps running; and the IPC and capability tests (an IPC
//! client and server process: ping-pong, long messages, capability transfer, badges,
//! stale handles, rights, memory budgets, every new system call with each class of bad argument,
//! a dead server); and the process, thread, priority, IRQ and device capability tests
//! (children spawned from a boot module, killed, round robin, port and MMIO access, every
//! new call with each class of bad argument). One boot per architecture.
#![forbid(unsafe_code)]

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, options, selected,
};

const EXPECTED: &[&str] = &[
    "ok user null syscall round trip",
    "ok user debug_write good pointer",
    "ok user debug_write kernel address",
    "ok user debug_write unmapped address",
    "ok user debug_write null pointer",
    "ok user debug_write wrapping range",
    "ok user debug_write huge length",
    "ok user unknown syscall number",
    "ok user yield",
    "ok user test_sleep refuses 0 ticks",
    "ok user test_sleep refuses more than its maximum",
    "ok user register write refuses a kernel instruction pointer",
    "ok user register write refuses a non-canonical instruction pointer",
    "ok user register write refuses a kernel stack pointer",
    "ok user register write refuses privileged flags",
    "ok user register write refuses reserved FPU control bits",
    "ok user register write refuses a wrong length",
    "ok user register write refuses another thread",
    "ok user register write refuses an unmapped image",
    "ok user memory map, write and read back",
    "ok user memory map refuses an overlap",
    "ok user memory map refuses write and execute",
    "ok user memory map refuses a kernel address",
    "ok user memory map refuses page 0",
    "ok user memory map refuses a misaligned address",
    "ok user memory map beyond the per-call bound returns OutOfMemory",
    "ok user memory unmap takes effect",
    "ok user memory unmap refuses memory it did not map",
    "ok user ipc ping-pong between two processes (10000 round trips, payload checksums)",
    "ok user ipc buffer set",
    "ok user ipc long message (1 KiB through the IPC buffer, both ways)",
    "ok user ipc capability transfer (a notification sent, then signalled by the receiver)",
    "ok user ipc capability without GRANT is not transferred",
    "ok user ipc badge delivered to the server",
    "ok user ipc reply_recv through a handle deleted while serving fails with InvalidHandle and answers nobody",
    "ok user ipc send without reply, receiver first and sender first, in order",
    "ok user notification wait woken by another process's signal",
    "ok user stale handle fails after cap_delete (and after slot reuse)",
    "ok user rights never grow (copy, copy of a copy, mint)",
    "ok user cap_identify names process and memory capabilities",
    "ok user a capability table at CAP_TABLE_MAX_SLOTS returns NoSpace",
    "ok user notification signal, wait and poll",
    "ok user ipc bad argument: cap_copy invalid handle",
    "ok user ipc bad argument: cap_copy null handle",
    "ok user ipc bad argument: cap_copy reserved rights bits",
    "ok user ipc bad argument: cap_delete invalid handle",
    "ok user ipc bad argument: cap_mint invalid handle",
    "ok user ipc bad argument: cap_mint of a notification",
    "ok user ipc bad argument: cap_mint badge 0",
    "ok user ipc bad argument: cap_identify invalid handle",
    "ok user ipc bad argument: send invalid handle",
    "ok user ipc bad argument: send to a notification",
    "ok user ipc bad argument: send reserved info bits",
    "ok user ipc bad argument: send more than 512 words",
    "ok user ipc bad argument: send more than 4 capabilities",
    "ok user ipc bad argument: recv invalid handle",
    "ok user ipc bad argument: recv without READ",
    "ok user ipc bad argument: recv on a notification",
    "ok user ipc bad argument: call invalid handle",
    "ok user ipc bad argument: call bad info",
    "ok user ipc bad argument: call with an invalid capability to transfer",
    "ok user ipc bad argument: reply with no caller",
    "ok user ipc bad argument: reply bad info",
    "ok user ipc bad argument: reply_recv invalid handle",
    "ok user ipc bad argument: reply_recv without READ",
    "ok user ipc bad argument: reply_recv bad info",
    "ok user ipc bad argument: signal invalid handle",
    "ok user ipc bad argument: signal zero bits",
    "ok user ipc bad argument: signal an endpoint",
    "ok user ipc bad argument: wait invalid handle",
    "ok user ipc bad argument: wait on an endpoint",
    "ok user ipc bad argument: poll invalid handle",
    "ok user ipc bad argument: ipc_buffer_set misaligned",
    "ok user ipc bad argument: ipc_buffer_set unmapped",
    "ok user ipc bad argument: ipc_buffer_set kernel address",
    "ok user ipc bad argument: ipc_buffer_set on the program's text",
    "ok user ipc bad argument: call with 5 words and no IPC buffer",
    "ok user ipc bad argument: call with 5 words after the buffer was unmapped",
    "ok user ipc server still answers after the bad arguments",
    "ok user ipc call to a server that exits without replying fails with PeerDied",
    "ok user ipc call to an endpoint whose server is gone fails with PeerDied",
    "ok user ipc send to an endpoint whose server is gone fails with PeerDied",
    "ok user ipc server exited when told to",
    "ok user heap: Vec and Box grow across mapped chunks and hold their values",
    "ok user heap: freed memory is used again",
    "ok user heap: allocations beyond the budget or the heap's span fail and the heap still works",
    "ok user page tables: 100000 map/unmap pairs 2 MiB apart succeed and every emptied table is freed",
    "ok user dead processes held by many holders: the kernel refuses with OutOfMemory, stays up and gets every heap byte and frame back",
    "ok user budget: a child runs out of its own budget (pages, objects, threads) while the parent and another process map and make threads, and every byte and frame comes back",
    "ok user budget: a spawn beyond the caller's budget, or with too small a budget, returns OutOfMemory and the caller keeps running",
    "ok user budget: a spawn naming no budget gives the child DEFAULT_BUDGET",
    "ok user budget: a thread woken from wait holds nothing of the notification: deleting its last capability gives the charge back at once",
    "ok user budget: deleting the last capability to a notification a thread waits on wakes it with PeerDied and gives the charge back at once",
    "ok user budget: neither side of an answered call holds the endpoint: deleting its last capability gives the charge back at once",
    "ok user FPU state survives preemption",
    "ok user thread blocked in a system call and a kernel thread preempted by the timer keep their own kernel stacks",
    "ok user thread resumed at a non-canonical instruction pointer faults in user mode",
    "ok user register write resumes at the new registers",
    "ok user syscalls under an NMI storm",
    "ok user syscall with the trap flag set",
    "ok user SVE instruction",
    "ok user undefined instruction kills the process",
    "ok user page fault kills the process",
    "ok user touching memory after unmapping it kills the process",
    "ok user processes return every frame",
    "ok kernel survived user faults",
];

/// Processes, threads, priorities and IRQ lines (both architectures).
const PROC_EXPECTED: &[&str] = &[
    "ok user process spawned from a boot module: exit code 42 seen after its death notification, copied capability used by the child",
    "ok user process spawn of a malformed image returns InvalidArgument",
    "ok user process kill ends a spinning child (death notification, status killed)",
    "ok user spawn refused for lack of threads or budget returns an error and the caller keeps running",
    "ok user two spinning threads at equal priority both make progress (round robin)",
    "ok user thread kill stops a spinning thread (its counter freezes while the other advances)",
    "ok user a lower-priority thread runs only while the higher-priority one blocks",
    "ok user a killed lower-priority thread ends while the higher-priority thread that killed it spins on their one CPU",
    "ok user proc bad argument: thread_kill of an ended thread",
    "ok user proc bad argument: thread_set_priority of an ended thread",
    "ok user priority change above the caller's is refused (thread_set_priority, thread_create, process_spawn); lowering works; a blocked thread is killed",
    "ok user a signal/wait ping-pong on one CPU leaves it to an equal-priority thread queued there (a woken thread does not run ahead of the queue)",
    "ok user a thread just woken by signal, moved to CPU 1 by thread_set_affinity before it ran, runs on CPU 1 (InvalidArgument with one CPU)",
    "ok user ipc calls to a killed server fail with PeerDied (the pending call and later ones)",
    "ok user proc bad argument: irq_ack of an unbound line",
    "ok user irq delivery: a bound line signals its notification and stays masked until irq_ack",
    "ok user proc bad argument: process_spawn invalid handle",
    "ok user proc bad argument: process_spawn of a notification",
    "ok user proc bad argument: process_spawn image without READ",
    "ok user proc bad argument: process_spawn priority out of range",
    "ok user proc bad argument: process_spawn too many capabilities",
    "ok user proc bad argument: process_spawn capability list at a kernel address",
    "ok user proc bad argument: process_spawn capability list unmapped",
    "ok user proc bad argument: process_spawn listed invalid handle",
    "ok user proc bad argument: process_spawn listed capability without GRANT",
    "ok user proc bad argument: process_kill invalid handle",
    "ok user proc bad argument: process_kill of a notification",
    "ok user proc bad argument: process_kill without CONTROL",
    "ok user proc bad argument: process_bind_death invalid handle",
    "ok user proc bad argument: process_bind_death of a notification",
    "ok user proc bad argument: process_bind_death bits 0",
    "ok user proc bad argument: process_bind_death to a process handle",
    "ok user proc bad argument: process_bind_death notification without SIGNAL",
    "ok user proc bad argument: process_bind_death without CONTROL",
    "ok user proc bad argument: process_status invalid handle",
    "ok user proc bad argument: process_status of a notification",
    "ok user proc bad argument: process_status without READ",
    "ok user proc bad argument: thread_create entry at a kernel address",
    "ok user proc bad argument: thread_create stack at a kernel address",
    "ok user proc bad argument: thread_create misaligned stack",
    "ok user proc bad argument: thread_create priority out of range",
    "ok user proc bad argument: thread_kill invalid handle",
    "ok user proc bad argument: thread_kill of a notification",
    "ok user proc bad argument: thread_set_priority invalid handle",
    "ok user proc bad argument: thread_set_priority of a process",
    "ok user proc bad argument: irq_bind invalid handle",
    "ok user proc bad argument: irq_bind of a notification",
    "ok user proc bad argument: irq_bind bits 0",
    "ok user proc bad argument: irq_bind notification without SIGNAL",
    "ok user proc bad argument: irq_bind without CONTROL",
    "ok user proc bad argument: irq_ack invalid handle",
    "ok user proc bad argument: irq_ack of a notification",
    "ok user proc bad argument: irq_ack without CONTROL",
    "ok user proc bad argument: irq_test_raise of a notification",
    "ok user proc bad argument: port_in invalid handle",
    "ok user proc bad argument: port_out of a notification",
    "ok user proc bad argument: mmio_map invalid handle",
    "ok user proc bad argument: mmio_map of a notification",
];

/// Device capabilities on x86_64: COM1's I/O ports.
const PROC_X86_64: &[&str] = &[
    "ok user COM1 scratch register write and read back through the port capability",
    "ok user proc bad argument: port_in below the granted range",
    "ok user proc bad argument: port_in beyond the granted range",
    "ok user proc bad argument: port_in straddling the end of the range",
    "ok user proc bad argument: port_in width 3",
    "ok user proc bad argument: port_in port above 0xffff",
    "ok user proc bad argument: port_out outside the granted range",
    "ok user proc bad argument: port_out without WRITE",
    "ok user proc bad argument: mmio_map of an I/O-port capability",
];

/// Device capabilities on AArch64: the PL011's MMIO range.
const PROC_AARCH64: &[&str] = &[
    "ok user mmio_map of the PL011 and a read of its ID registers",
    "ok user proc bad argument: mmio_map over an existing mapping",
    "ok user proc bad argument: mmio_map at a misaligned address",
    "ok user proc bad argument: mmio_map at a kernel address",
    "ok user proc bad argument: mmio_map without MAP",
    "ok user proc bad argument: port_in on an MMIO capability",
];

fn user_suite(arch: Arch, cpus: u32) {
    if !selected(arch, &format!("user suite on {arch} with {cpus} CPUs")) {
        return;
    }
    let mut options = options(arch, &format!("user-smp{cpus}"), "test=user");
    options.qemu.smp = cpus;
    let outcome = boot(&options);
    let (_, arrived) = expect_line(&outcome, "smp: ");
    assert_eq!(
        arrived.trim_end(),
        format!("smp: {cpus} of {cpus} CPUs arrived")
    );
    expect_no_failed_test(&outcome);
    let (hello, _) = expect_line(&outcome, "testsuite: hello from user mode");
    let (good, _) = expect_line(&outcome, "ok user debug_write good pointer");
    assert!(hello < good, "the debug_write text comes before its result");
    for expected in EXPECTED {
        expect_line(&outcome, expected);
    }
    let proc_device = match arch {
        Arch::X86_64 => PROC_X86_64,
        Arch::Aarch64 => PROC_AARCH64,
    };
    for expected in PROC_EXPECTED.iter().chain(proc_device) {
        let (_, line) = expect_line(&outcome, expected);
        assert_eq!(line.trim_end(), *expected);
    }
    // AArch64 always checks the upper halves of the q registers too (x86_64 needs AVX:
    // tests/cpu_models.rs runs it with `--cpu max`).
    let (_, fpu) = expect_line(&outcome, "ok user FPU state survives preemption");
    if arch == Arch::Aarch64 {
        assert!(fpu.contains("upper vector halves too"), "{fpu:?}");
    }
    // With several CPUs: one more FPU checker than CPUs, each moved between CPUs while it
    // runs, none sees another's registers or loses its own.
    let migration = if cpus >= 2 {
        let (_, line) = expect_line(
            &outcome,
            &format!(
                "ok user FPU state stays each thread's own across CPUs: {} processes on {cpus} CPUs, moved ",
                cpus + 1
            ),
        );
        let moves: u64 = line
            .trim_end()
            .rsplit(' ')
            .nth(1)
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no move count in {line:?}"));
        assert!(moves >= u64::from(cpus), "{line:?}");
        let (_, alone) = expect_line(
            &outcome,
            "ok user FPU state stays its own on a CPU that ran only idle since it left: moved ",
        );
        assert!(!alone.contains("moved 0 times"), "{alone:?}");
        2
    } else {
        0
    };
    // Each privileged instruction is its own process.
    let privileged: &[&str] = match arch {
        Arch::X86_64 => &[
            "ok user privileged instruction hlt kills the process",
            "ok user privileged instruction cli kills the process",
        ],
        Arch::Aarch64 => &[
            "ok user privileged instruction msr daifset kills the process",
            "ok user privileged instruction msr vbar_el1 (system register write) kills the process",
        ],
    };
    for expected in privileged {
        let (_, line) = expect_line(&outcome, expected);
        assert_eq!(line.trim_end(), *expected);
    }
    let reports = |cause: &str| {
        outcome
            .lines
            .iter()
            .filter(|line| {
                line.contains("keel: user fault in process testsuite")
                    && line.contains(cause)
                    && line.contains("thread killed")
            })
            .count()
    };
    // The kernel's own hostile resume: the thread faults in user mode at the bad address.
    let hostile = match arch {
        Arch::X86_64 => "general protection",
        Arch::Aarch64 => "page fault (execute) at 0x800000000000",
    };
    assert!(
        outcome.lines.iter().any(
            |line| line.contains("keel: user fault in process testsuite")
                && line.contains(hostile)
                && line.contains("at ip 0x800000000000")
        ),
        "no user-mode fault report at the non-canonical instruction pointer"
    );
    match arch {
        // `hlt` and `cli`: two #GP reports.
        Arch::X86_64 => assert!(reports("general protection") >= 2, "hlt and cli reports"),
        // `msr daifset` traps as a system instruction; `msr vbar_el1` is undefined at EL0
        // (plus the deliberate undefined instruction).
        Arch::Aarch64 => {
            assert!(reports("general protection") >= 1, "msr daifset report");
            assert!(reports("undefined instruction") >= 2, "msr vbar_el1 report");
        }
    }
    for cause in [
        "undefined instruction",
        "general protection",
        "page fault (read) at 0x100000000000",
    ] {
        assert!(
            outcome.lines.iter().any(
                |line| line.contains("keel: user fault in process testsuite")
                    && line.contains(cause)
                    && line.contains("thread killed")
            ),
            "no fault report for {cause}"
        );
    }
    // The page touched after `memory_unmap` (testsuite's SCRATCH) is reported as a
    // page fault at that very address.
    assert!(
        outcome.lines.iter().any(
            |line| line.contains("keel: user fault in process testsuite")
                && line.contains("page fault (")
                && line.contains("at 0x200000000000 at ip")
                && line.contains("thread killed")
        ),
        "no page-fault report for the page touched after unmapping it"
    );
    let summary = tests::summary_line(&outcome);
    assert_eq!(
        summary,
        format!(
            "{} passed, 0 failed",
            EXPECTED.len() + privileged.len() + PROC_EXPECTED.len() + proc_device.len() + migration
        )
    );
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn user_suite_x86_64() {
    user_suite(Arch::X86_64, tests::default_cpus());
}

#[test]
fn user_suite_aarch64() {
    user_suite(Arch::Aarch64, tests::default_cpus());
}

#[test]
fn user_suite_x86_64_smp4() {
    user_suite(Arch::X86_64, 4);
}

#[test]
fn user_suite_aarch64_smp4() {
    user_suite(Arch::Aarch64, 4);
}
