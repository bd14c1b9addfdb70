//! Secondary CPUs, from the Limine MP response (DESIGN.md §4): the loader starts them and
//! parks each on its `goto_address`; the boot path sends every one to [`secondary_main`],
//! which moves it onto the kernel's own page tables, counts its arrival and parks it with
//! interrupts masked. The scheduler stays on the boot CPU for now.
//!
//! Only what the protocol guarantees is relied on: the response lists every CPU the loader
//! started, the boot CPU included; a write to a secondary's `goto_address` sends it to the
//! written address with its `limine_mp_info` as the first argument, on its own stack in
//! the HHDM, in the boot CPU's entry state. The x2APIC flag is not asked for (the kernel
//! drives the local APIC in xAPIC mode).

use core::sync::atomic::{AtomicUsize, Ordering};

use arch_api::SecondaryCpus;
use limine::mp::Cpu as MpInfo;
use limine::request::MpRequest;

use crate::{Cpu, println};

#[used]
#[unsafe(link_section = ".requests")]
static MP: MpRequest = MpRequest::new();

/// How many times the boot path polls for arrivals before it gives up on the rest: far
/// more than a secondary needs (a few hundred instructions) on any machine or emulator,
/// and still a bound, so a CPU that never comes cannot hang the boot.
const ARRIVAL_POLLS: u64 = 1 << 30;

/// Secondary CPUs that reached [`secondary_main`].
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
/// Secondary CPUs sent to [`secondary_main`].
static SENT: AtomicUsize = AtomicUsize::new(0);

/// The CPUs the loader reported: (count including the boot CPU, the boot CPU's hardware
/// id: x86_64 local APIC ID, AArch64 MPIDR affinity). `None` without an MP response.
pub fn reported() -> Option<(usize, u64)> {
    let response = MP.get_response()?;
    Some((response.cpus().len(), arch::smp::bsp_id(response)))
}

/// Send every secondary CPU of the MP response to [`secondary_main`], wait (bounded) for
/// them and print how many arrived. Runs once, on the boot CPU, on the kernel's own page
/// tables and before any bootloader-reclaimable memory is reclaimed (the parked CPUs
/// still run on the loader's stacks and tables until they arrive).
pub fn start_secondaries() {
    let Some(response) = MP.get_response() else {
        return;
    };
    let bsp = arch::smp::bsp_id(response);
    Cpu::prepare_secondaries();
    let mut sent = 0;
    for info in response.cpus() {
        if arch::smp::cpu_id(info) != bsp {
            info.goto_address.write(secondary_main);
            sent += 1;
        }
    }
    SENT.store(sent, Ordering::Release);
    let mut polls = 0;
    while ARRIVED.load(Ordering::Acquire) < sent && polls < ARRIVAL_POLLS {
        core::hint::spin_loop();
        polls += 1;
    }
    let arrived = ARRIVED.load(Ordering::Acquire);
    println!(
        "smp: {} of {} CPUs arrived",
        arrived + 1,
        response.cpus().len()
    );
}

/// Whether every secondary CPU sent to the kernel has arrived (so none still runs on the
/// loader's stacks and tables, which lie in bootloader-reclaimable memory).
pub fn all_arrived() -> bool {
    ARRIVED.load(Ordering::Acquire) >= SENT.load(Ordering::Acquire)
}

/// Where a secondary CPU goes from the loader's parking loop: onto the kernel's tables,
/// counted, parked for good.
unsafe extern "C" fn secondary_main(_info: &MpInfo) -> ! {
    Cpu::enter_secondary();
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    Cpu::park_secondary()
}
