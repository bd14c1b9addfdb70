//! The MP feature: the CPUs the firmware describes (`efi_loader::mp`), what each parked
//! CPU needs (its `limine_mp_info`, its stack), prepared before ExitBootServices; after
//! it, once the page tables exist, the arch starts the CPUs one by one (x86_64:
//! INIT-SIPI-SIPI through the local APIC; AArch64: PSCI `CPU_ON`) and the response lists
//! the boot CPU and those that reached their parking loop within a bounded wait. Nothing
//! after the exit allocates.

use alloc::vec::Vec;

use efi_loader::mp::{self, Cpu};
use efi_loader::protocol::revision;

use super::arch;
use super::memory::{Arena, Owner, Pages};

#[cfg(target_arch = "aarch64")]
pub type MpInfo = mp::MpInfoAarch64;
#[cfg(target_arch = "x86_64")]
pub type MpInfo = mp::MpInfoX86_64;
#[cfg(target_arch = "aarch64")]
type MpResponse = mp::MpResponseAarch64;
#[cfg(target_arch = "x86_64")]
type MpResponse = mp::MpResponseX86_64;

/// Everything the start of the CPUs needs after ExitBootServices.
pub struct Plan {
    pub cpus: Vec<Cpu>,
    /// The boot CPU's hardware id (local APIC ID / MPIDR affinity).
    pub bsp: u64,
    /// Physical addresses, in the arena: the response, the pointer array, the first info.
    response: u64,
    pointers: u64,
    pub infos: u64,
    /// Per-CPU boot data the start code reads (physical, one slot per CPU).
    #[cfg(target_arch = "aarch64")]
    pub blocks: u64,
    pub arch: arch::MpExtra,
}

/// Arena bytes the MP response needs for `count` CPUs.
pub fn arena_bytes(count: usize) -> u64 {
    (size_of::<MpResponse>() + count * (size_of::<MpInfo>() + 8)) as u64 + 64
}

/// Reserve the response, the infos and the stacks, and write each CPU's info (its stack
/// top in the `reserved` slot the parking code reads). Returns the plan and the physical
/// address of the response to point the request at.
pub fn prepare(
    cpus: Vec<Cpu>,
    bsp: u64,
    arch: arch::MpExtra,
    arena: &mut Arena,
    stack_size: u64,
) -> Result<(Plan, u64), alloc::string::String> {
    let count = cpus.len();
    let response = arena.put(MpResponse::default());
    let pointers = arena.reserve(8 * count as u64, 8);
    let infos = arena.reserve(
        (count * size_of::<MpInfo>()) as u64,
        align_of::<MpInfo>() as u64,
    );
    let stacks = Pages::allocate(
        stack_size * count as u64,
        Owner::Bootloader,
        "the secondary CPUs' stacks",
    )?;
    #[cfg(target_arch = "aarch64")]
    let blocks = Pages::allocate(
        (count * arch::MP_BLOCK_BYTES) as u64,
        Owner::Bootloader,
        "the secondary CPUs' start data",
    )?;
    for (index, cpu) in cpus.iter().enumerate() {
        let stack_top = arena.virtual_of(stacks.physical + stack_size * (index as u64 + 1));
        arena.write(info_at(infos, index), info(cpu, stack_top));
    }
    let plan = Plan {
        cpus,
        bsp,
        response,
        pointers,
        infos,
        #[cfg(target_arch = "aarch64")]
        blocks: blocks.physical,
        arch,
    };
    Ok((plan, response))
}

#[cfg(target_arch = "aarch64")]
fn info(cpu: &Cpu, stack_top: u64) -> MpInfo {
    MpInfo {
        processor_id: cpu.processor_id,
        reserved1: 0,
        mpidr: cpu.hardware_id,
        reserved: stack_top,
        goto_address: 0,
        extra_argument: 0,
    }
}

#[cfg(target_arch = "x86_64")]
fn info(cpu: &Cpu, stack_top: u64) -> MpInfo {
    MpInfo {
        processor_id: cpu.processor_id,
        lapic_id: cpu.hardware_id as u32,
        reserved: stack_top,
        goto_address: 0,
        extra_argument: 0,
    }
}

/// Physical address of the info of CPU `index`.
pub fn info_at(infos: u64, index: usize) -> u64 {
    infos + (index * size_of::<MpInfo>()) as u64
}

/// After ExitBootServices, with the page tables built: start every CPU but the boot CPU
/// through `start` (which returns whether the CPU reached its parking loop in time), then
/// write the response listing the boot CPU and the CPUs that did.
pub fn start_all(plan: &Plan, arena: &mut Arena, mut start: impl FnMut(usize) -> bool) {
    let mut started = [false; MAX_CPUS];
    for (index, cpu) in plan.cpus.iter().enumerate().take(MAX_CPUS) {
        if cpu.hardware_id != plan.bsp {
            started[index] = start(index);
        }
    }
    let listed = mp::listed(&plan.cpus, plan.bsp, |index| {
        started.get(index).copied().unwrap_or(false)
    });
    let mut count = 0;
    for index in listed {
        let pointer = arena.virtual_of(info_at(plan.infos, index));
        arena.write(plan.pointers + 8 * count, pointer);
        count += 1;
    }
    let response = response(plan, count, arena.virtual_of(plan.pointers));
    arena.write(plan.response, response);
}

/// CPUs beyond this many are not started (the response still fits them: they are left
/// out of it).
pub const MAX_CPUS: usize = 256;

#[cfg(target_arch = "aarch64")]
fn response(plan: &Plan, count: u64, cpus: u64) -> MpResponse {
    MpResponse {
        revision: revision::DEFAULT,
        flags: 0,
        bsp_mpidr: plan.bsp,
        cpu_count: count,
        cpus,
    }
}

#[cfg(target_arch = "x86_64")]
fn response(plan: &Plan, count: u64, cpus: u64) -> MpResponse {
    MpResponse {
        revision: revision::DEFAULT,
        flags: 0,
        bsp_lapic_id: plan.bsp as u32,
        cpu_count: count,
        cpus,
    }
}
