//! Secondary CPUs, from the Limine MP response (DESIGN.md §4): the loader starts them and
//! parks each on its `goto_address`; the boot path sends every one to `secondary_main`,
//! which moves it onto the kernel's own page tables and a kernel stack, sets up its
//! per-CPU state through the arch (`SecondaryCpus::init_secondary`: per-CPU block with
//! its dense index and hardware id, descriptor tables or vectors, interrupt-controller
//! interface) and hands it to the idle entry the caller gave, which waits for interrupts
//! with interrupts enabled and handles IPIs until it joins the scheduler (`main.rs`).
//!
//! Dense indices follow the response's order, the boot CPU being 0; a CPU beyond
//! `arch_api::MAX_CPUS` is moved onto the kernel's tables and parked with interrupts
//! masked (a line in the boot log says so), as is one whose kernel stack cannot be had.
//!
//! Only what the protocol guarantees is relied on: the response lists every CPU the loader
//! started, the boot CPU included; a write to a secondary's `goto_address` sends it to the
//! written address with its `limine_mp_info` as the first argument, on its own stack in
//! the HHDM, in the boot CPU's entry state; `extra` is free for the kernel (it carries the
//! dense index). The x2APIC flag is not asked for (the kernel drives every local APIC in
//! xAPIC mode).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arch_api::{Bench, FrameSource, KernelStack, MAX_CPUS, SecondaryCpus};
use limine::mp::Cpu as MpInfo;
use limine::request::MpRequest;
use spin::Once;

use crate::{Cpu, println};

#[used]
#[unsafe(link_section = ".requests")]
static MP: MpRequest = MpRequest::new();

/// How long the boot path waits for arrivals before it gives up on the rest, in
/// `Bench::instruction_clock` units: 2^32 nanoseconds (about 4.3 s) on AArch64, 2^32 TSC
/// cycles (1-4 s at the usual rates) on x86_64, and under `-icount shift=0` on both 2^32
/// guest instructions of all CPUs together. A clock and not a count of polls, so the bound
/// is about the same time under every accelerator, however long one poll takes there.
/// Far more than a secondary needs (a few thousand instructions once it runs), and still
/// a bound, so a CPU that never comes cannot hang the boot.
const ARRIVAL_WAIT: u64 = 1 << 32;

/// The `extra` value of a CPU sent to be parked (no index).
const PARK: u64 = u64::MAX;

/// Secondary CPUs that left the loader's memory for good (online, or parked).
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
/// Secondary CPUs sent to `secondary_main`.
static SENT: AtomicUsize = AtomicUsize::new(0);
/// The hardware id of each dense index (the MP response's), for checks and reports.
static HARDWARE_IDS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Each secondary's kernel stack (base, top), allocated by the boot CPU.
static STACKS: [(AtomicU64, AtomicU64); MAX_CPUS] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_CPUS];
/// Where an online secondary goes: the idle entry `start_secondaries` was given.
static IDLE: Once<extern "C" fn(usize) -> !> = Once::new();

/// The CPUs the loader reported: (count including the boot CPU, the boot CPU's hardware
/// id: x86_64 local APIC ID, AArch64 MPIDR affinity). `None` without an MP response.
pub fn reported() -> Option<(usize, u64)> {
    let response = MP.get_response()?;
    Some((response.cpus().len(), arch::smp::bsp_id(response)))
}

/// The hardware id the MP response gives the CPU with dense index `index` (0 without an
/// MP response).
pub fn hardware_id_of(index: u32) -> Option<u64> {
    HARDWARE_IDS
        .get(index as usize)
        .map(|id| id.load(Ordering::Relaxed))
}

/// Send every secondary CPU of the MP response to `secondary_main`, wait (bounded) for
/// them and print how many arrived and how many are online. Each online CPU ends in
/// `idle(index)`, on a kernel stack from `allocate_stack`; `frames` serves the arch's
/// per-CPU allocations. Runs once, on the boot CPU, on the kernel's own page tables and
/// before any bootloader-reclaimable memory is reclaimed (the parked CPUs still run on
/// the loader's stacks and tables until they arrive).
pub fn start_secondaries(
    frames: &mut dyn FrameSource,
    allocate_stack: &mut dyn FnMut() -> Option<KernelStack>,
    idle: extern "C" fn(usize) -> !,
) {
    let Some(response) = MP.get_response() else {
        return;
    };
    IDLE.call_once(|| idle);
    let bsp = arch::smp::bsp_id(response);
    HARDWARE_IDS[0].store(bsp, Ordering::Relaxed);
    let count = response.cpus().len().min(MAX_CPUS) as u32;
    let prepared = match Cpu::prepare_secondaries(count, frames) {
        Ok(()) => true,
        Err(error) => {
            println!("smp: secondary CPUs left parked: {error:?}");
            false
        }
    };
    let mut sent = 0;
    let mut next_index = 1u64;
    for info in response.cpus() {
        let id = arch::smp::cpu_id(info);
        if id == bsp {
            continue;
        }
        let mut extra = PARK;
        if prepared && next_index as usize >= MAX_CPUS {
            println!("smp: cpu {id:#x} is beyond the kernel's {MAX_CPUS} CPUs; left parked");
        } else if prepared {
            match allocate_stack() {
                Some(stack) => {
                    let index = next_index as usize;
                    HARDWARE_IDS[index].store(id, Ordering::Relaxed);
                    STACKS[index].0.store(stack.base, Ordering::Relaxed);
                    STACKS[index].1.store(stack.top, Ordering::Relaxed);
                    extra = next_index;
                    next_index += 1;
                }
                None => println!("smp: no kernel stack for cpu {id:#x}; left parked"),
            }
        }
        info.extra.store(extra, Ordering::Release);
        info.goto_address.write(secondary_main);
        sent += 1;
    }
    SENT.store(sent, Ordering::Release);
    if sent > 0 {
        wait_for_arrivals(sent);
    }
    let arrived = ARRIVED.load(Ordering::Acquire);
    println!(
        "smp: {} of {} CPUs arrived",
        arrived + 1,
        response.cpus().len()
    );
    let online = (0..MAX_CPUS as u32)
        .filter(|&index| Cpu::is_online(index))
        .count();
    println!("smp: {online} CPUs online (at most {MAX_CPUS}), idle with interrupts on");
}

/// Wait until `sent` secondaries have arrived, or [`ARRIVAL_WAIT`] has passed. Each poll
/// pauses with `arch::smp::wait_pause`, which under single-threaded TCG hands the turn to
/// the next vCPU (`core::hint::spin_loop` does not on AArch64, where the boot CPU would
/// keep the whole time slice the secondary needs to run in).
fn wait_for_arrivals(sent: usize) {
    let start = Cpu::instruction_clock();
    while ARRIVED.load(Ordering::Acquire) < sent
        && Cpu::instruction_clock().wrapping_sub(start) < ARRIVAL_WAIT
    {
        arch::smp::wait_pause();
    }
}

/// Whether every secondary CPU sent to the kernel has arrived (so none still runs on the
/// loader's stacks and tables, which lie in bootloader-reclaimable memory).
pub fn all_arrived() -> bool {
    ARRIVED.load(Ordering::Acquire) >= SENT.load(Ordering::Acquire)
}

/// Where a secondary CPU goes from the loader's parking loop: onto the kernel's tables,
/// then onto its kernel stack ([`secondary_online`]), or parked for good.
unsafe extern "C" fn secondary_main(info: &MpInfo) -> ! {
    Cpu::enter_secondary();
    let index = info.extra.load(Ordering::Acquire);
    let top = STACKS
        .get(index as usize)
        .map_or(0, |stack| stack.1.load(Ordering::Relaxed));
    if index == PARK || index == 0 || top == 0 {
        ARRIVED.fetch_add(1, Ordering::AcqRel);
        Cpu::park_secondary();
    }
    // SAFETY: the boot CPU allocated this stack for this index alone (mapped, unused), and
    // `enter_secondary` ran.
    unsafe { Cpu::run_on_stack(top, secondary_online, index as usize) }
}

/// A secondary CPU on its kernel stack: its per-CPU state, then the idle entry.
extern "C" fn secondary_online(index: usize) -> ! {
    let stack = KernelStack {
        base: STACKS[index].0.load(Ordering::Relaxed),
        top: STACKS[index].1.load(Ordering::Relaxed),
    };
    Cpu::init_secondary(
        index as u32,
        HARDWARE_IDS[index].load(Ordering::Relaxed),
        stack,
    );
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    match IDLE.get() {
        Some(idle) => idle(index),
        None => Cpu::park_secondary(),
    }
}
