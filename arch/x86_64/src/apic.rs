//! The local APIC: mapped uncached into the device window, its timer calibrated against
//! the PIT, EOI, IPIs through the ICR.
//!
//! xAPIC (MMIO) mode only, on every CPU: if the firmware left an APIC in x2APIC mode, it is
//! switched back through the disabled state (SDM Vol. 3A §11.12.5 allows x2APIC →
//! disabled → xAPIC). Every CPU's APIC sits at the same physical address (the boot CPU's
//! mapping serves all: each CPU reaches its own APIC there); xAPIC destinations are 8-bit
//! APIC IDs, enough for [`arch_api::MAX_CPUS`] CPUs on any machine whose IDs fit.
//! Weak spot: the calibration trusts one 10 ms PIT interval; under emulation it is as good
//! as the emulator's clocks, which is all the tests need (no test depends on wall-clock
//! speed, DESIGN.md §8).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arch_api::{EarlyError, FrameSource};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

use crate::paging;
use crate::trap::vector;

/// `IA32_APIC_BASE`.
const APIC_BASE_MSR: u32 = 0x1B;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// Register offsets (SDM Vol. 3A, Table 11-1).
mod register {
    pub const ID: usize = 0x020;
    pub const VERSION: usize = 0x030;
    pub const TASK_PRIORITY: usize = 0x080;
    pub const END_OF_INTERRUPT: usize = 0x0B0;
    pub const SPURIOUS: usize = 0x0F0;
    /// In-service register: eight 32-bit words, 16 bytes apart.
    pub const IN_SERVICE: usize = 0x100;
    pub const ERROR_STATUS: usize = 0x280;
    pub const INTERRUPT_COMMAND_LOW: usize = 0x300;
    pub const INTERRUPT_COMMAND_HIGH: usize = 0x310;
    pub const LVT_TIMER: usize = 0x320;
    pub const LVT_LINT0: usize = 0x350;
    pub const LVT_ERROR: usize = 0x370;
    pub const TIMER_INITIAL_COUNT: usize = 0x380;
    pub const TIMER_CURRENT_COUNT: usize = 0x390;
    pub const TIMER_DIVIDE: usize = 0x3E0;
}

const SPURIOUS_APIC_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Timer divide configuration value for ÷16.
const TIMER_DIVIDE_BY_16: u32 = 0b0011;

/// Virtual address of the APIC's registers in the device window (0 = not mapped yet).
static REGISTERS: AtomicU64 = AtomicU64::new(0);
/// Physical address of the boot CPU's APIC registers (every CPU's must match).
static PHYSICAL: AtomicU64 = AtomicU64::new(0);
/// Timer counts (at ÷16) per PIT calibration interval, once measured.
static COUNTS_PER_INTERVAL: AtomicU32 = AtomicU32::new(0);

fn read(offset: usize) -> u32 {
    let base = REGISTERS.load(Ordering::Relaxed);
    debug_assert!(base != 0, "local APIC used before it was mapped");
    // SAFETY: `base` maps the APIC's 4 KiB register page uncached (see `init`); `offset` is
    // one of the 16-byte-aligned registers of `register`.
    unsafe { core::ptr::read_volatile((base as usize + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    let base = REGISTERS.load(Ordering::Relaxed);
    debug_assert!(base != 0, "local APIC used before it was mapped");
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((base as usize + offset) as *mut u32, value) };
}

/// What `init` found, for the boot summary.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub physical: u64,
    pub virtual_address: u64,
    pub id: u32,
    pub version: u32,
    pub was_x2apic: bool,
}

/// Put this CPU's local APIC in xAPIC mode, enabled. Returns the IA32_APIC_BASE value
/// read before the change and whether the APIC was in x2APIC mode.
fn enable_xapic_mode() -> (u64, bool) {
    let mut msr = Msr::new(APIC_BASE_MSR);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU (CPUID.1:EDX.APIC is architectural
    // for long mode); reading it has no side effect.
    let base = unsafe { msr.read() };
    let was_x2apic = base & APIC_BASE_X2APIC != 0;
    // SAFETY: only the enable and mode bits change; the base address stays. Interrupts are
    // masked and no APIC interrupt is configured yet, so resetting its state loses nothing.
    unsafe {
        if was_x2apic {
            msr.write(base & !(APIC_BASE_X2APIC | APIC_BASE_ENABLE));
        }
        msr.write((base & !APIC_BASE_X2APIC) | APIC_BASE_ENABLE);
    }
    (base, was_x2apic)
}

/// Enable the boot CPU's local APIC in xAPIC mode, map its registers, and mask everything
/// but its error interrupt.
pub fn init(frames: &mut dyn FrameSource) -> Result<Found, EarlyError> {
    let (base, was_x2apic) = enable_xapic_mode();
    let physical = base & APIC_BASE_ADDRESS;
    if base & APIC_BASE_BSP == 0 {
        return Err(EarlyError::Unsupported(
            "early init is not running on the bootstrap CPU",
        ));
    }
    let virtual_address = paging::map_device(frames, physical, 4096)?;
    PHYSICAL.store(physical, Ordering::Relaxed);
    REGISTERS.store(virtual_address, Ordering::Release);
    program_local();
    Ok(Found {
        physical,
        virtual_address,
        id: read(register::ID) >> 24,
        version: read(register::VERSION) & 0xFF,
        was_x2apic,
    })
}

/// Enable a secondary CPU's local APIC as [`init`] did the boot CPU's (the registers are
/// mapped already). Fails when this APIC's registers are not where the boot CPU's are.
pub fn init_secondary() -> Result<(), &'static str> {
    let (base, _) = enable_xapic_mode();
    if REGISTERS.load(Ordering::Relaxed) == 0 || base & APIC_BASE_BSP != 0 {
        return Err("the boot CPU's local APIC is not set up");
    }
    if base & APIC_BASE_ADDRESS != PHYSICAL.load(Ordering::Relaxed) {
        return Err("this CPU's local APIC is not at the boot CPU's address");
    }
    program_local();
    Ok(())
}

/// Program this CPU's APIC: accept every priority, timer and LINT0 masked, the error
/// interrupt on, software-enabled with the spurious vector.
fn program_local() {
    write(register::TASK_PRIORITY, 0);
    write(register::LVT_TIMER, LVT_MASKED | vector::LAPIC_TIMER as u32);
    write(register::LVT_LINT0, LVT_MASKED);
    write(register::LVT_ERROR, vector::LAPIC_ERROR as u32);
    // The error status register latches on write: write, then read, to clear it.
    write(register::ERROR_STATUS, 0);
    write(register::ERROR_STATUS, 0);
    write(
        register::SPURIOUS,
        SPURIOUS_APIC_ENABLE | vector::LAPIC_SPURIOUS as u32,
    );
}

/// This CPU's local APIC id (xAPIC: bits 24–31 of the ID register).
pub fn id() -> u8 {
    (read(register::ID) >> 24) as u8
}

/// Signal end of interrupt for the vector in service.
pub fn end_of_interrupt() {
    write(register::END_OF_INTERRUPT, 0);
}

/// Whether `vector` is in service (its ISR bit is set), i.e. owes an EOI.
pub fn in_service(vector: u64) -> bool {
    let vector = (vector & 0xFF) as usize;
    read(register::IN_SERVICE + 0x10 * (vector / 32)) & (1 << (vector % 32)) != 0
}

/// ICR: delivery mode NMI (fixed is 0), delivery status (a previous IPI still being
/// sent), level "assert", and the destination shorthand "self" (SDM Vol. 3A §11.6.1);
/// physical destination mode, edge-triggered and no shorthand are 0.
const ICR_NMI: u32 = 0b100 << 8;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_SELF: u32 = 0b01 << 18;

/// Wait (bounded: a stuck delivery status must not hang the kernel) until the previous
/// IPI of this CPU has been sent.
fn wait_for_icr() {
    for _ in 0..1_000_000 {
        if read(register::INTERRUPT_COMMAND_LOW) & ICR_DELIVERY_PENDING == 0 {
            break;
        }
        core::hint::spin_loop();
    }
}

/// Send this CPU a fixed interrupt on `vector` (taken once interrupts are enabled).
pub fn send_self(vector: u64) {
    wait_for_icr();
    write(
        register::INTERRUPT_COMMAND_LOW,
        ICR_SELF | ICR_ASSERT | (vector & 0xFF) as u32,
    );
}

/// Send the CPU whose local APIC ID is `apic_id` a fixed interrupt on `vector`, or an NMI.
/// Interrupts are masked (the kernel's invariant), so no handler on this CPU writes the
/// ICR between its two halves.
pub fn send_ipi(apic_id: u8, vector: Option<u8>) {
    wait_for_icr();
    write(register::INTERRUPT_COMMAND_HIGH, u32::from(apic_id) << 24);
    let low = match vector {
        Some(vector) => ICR_ASSERT | u32::from(vector),
        None => ICR_ASSERT | ICR_NMI,
    };
    write(register::INTERRUPT_COMMAND_LOW, low);
}

/// The error status register's latched errors (and clear them).
pub fn read_error_status() -> u32 {
    write(register::ERROR_STATUS, 0);
    read(register::ERROR_STATUS)
}

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
/// How long the calibration measures.
const CALIBRATION_MS: u64 = 10;

/// Measure the APIC timer's rate (at ÷16) over one PIT channel 2 one-shot of
/// [`CALIBRATION_MS`]: channel 2's gate is software-controlled through port 0x61 and its
/// output readable there, so no PIT interrupt is needed.
fn calibrate() -> Result<u32, EarlyError> {
    const CONTROL: u16 = 0x43;
    const CHANNEL2: u16 = 0x42;
    const SPEAKER: u16 = 0x61;
    const GATE2: u8 = 1 << 0;
    const SPEAKER_ENABLE: u8 = 1 << 1;
    const OUT2: u8 = 1 << 5;
    /// Channel 2, low byte then high byte, mode 0 (interrupt on terminal count), binary.
    const CHANNEL2_ONE_SHOT: u8 = 0b1011_0000;
    let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;

    let mut speaker = Port::<u8>::new(SPEAKER);
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT's channel 2 and its gate on every
    // PC-compatible machine; channel 2 drives only the speaker, which stays disabled.
    unsafe {
        let idle = speaker.read() & !(GATE2 | SPEAKER_ENABLE);
        speaker.write(idle);
        Port::<u8>::new(CONTROL).write(CHANNEL2_ONE_SHOT);
        Port::<u8>::new(CHANNEL2).write(count as u8);
        Port::<u8>::new(CHANNEL2).write((count >> 8) as u8);
        write(register::TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
        write(register::LVT_TIMER, LVT_MASKED | vector::LAPIC_TIMER as u32);
        write(register::TIMER_INITIAL_COUNT, u32::MAX);
        speaker.write(idle | GATE2);
        // OUT2 rises when the count reaches zero; if the APIC count runs out first, there
        // is no working PIT.
        while speaker.read() & OUT2 == 0 {
            if read(register::TIMER_CURRENT_COUNT) == 0 {
                speaker.write(idle);
                return Err(EarlyError::MissingDevice(
                    "the PIT (to calibrate the APIC timer)",
                ));
            }
            core::hint::spin_loop();
        }
        let remaining = read(register::TIMER_CURRENT_COUNT);
        write(register::TIMER_INITIAL_COUNT, 0);
        speaker.write(idle);
        Ok(u32::MAX - remaining)
    }
}

/// Measure the APIC timer's rate once (the PIT is the boot CPU's: only it calibrates).
/// The count per tick is the same on every CPU, so the secondaries reuse this.
pub fn calibrate_once() -> Result<u32, EarlyError> {
    let mut per_interval = COUNTS_PER_INTERVAL.load(Ordering::Relaxed);
    if per_interval == 0 {
        per_interval = calibrate()?;
        COUNTS_PER_INTERVAL.store(per_interval, Ordering::Relaxed);
    }
    Ok(per_interval)
}

/// Timer counts (at ÷16) per tick at `hz`, from a calibration of `per_interval`.
fn counts_per_tick(per_interval: u32, hz: u32) -> Result<u32, EarlyError> {
    let per_second = u64::from(per_interval) * 1000 / CALIBRATION_MS;
    let per_tick = per_second.checked_div(u64::from(hz)).unwrap_or(0);
    u32::try_from(per_tick)
        .ok()
        .filter(|&count| count > 0)
        .ok_or(EarlyError::Unsupported(
            "timer frequency out of the APIC timer's range",
        ))
}

/// Program this CPU's APIC timer periodic on `timer_vector`, `per_tick` counts at ÷16.
fn start_periodic(timer_vector: u64, per_tick: u32) {
    write(register::TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    write(
        register::LVT_TIMER,
        LVT_TIMER_PERIODIC | timer_vector as u32,
    );
    write(register::TIMER_INITIAL_COUNT, per_tick);
}

/// Start the APIC timer, periodic at `hz` (calibrating once). Returns the counts per tick.
pub fn start_timer(hz: u32) -> Result<u32, EarlyError> {
    let per_tick = counts_per_tick(calibrate_once()?, hz)?;
    start_periodic(vector::LAPIC_TIMER, per_tick);
    Ok(per_tick)
}

/// Start a secondary CPU's APIC timer, periodic at `hz` on
/// [`vector::LAPIC_TIMER_SECONDARY`], with the boot CPU's calibration (which must have
/// been made: [`calibrate_once`]).
pub fn start_secondary_timer(hz: u32) -> Result<(), EarlyError> {
    let per_interval = COUNTS_PER_INTERVAL.load(Ordering::Relaxed);
    if per_interval == 0 {
        return Err(EarlyError::Unsupported(
            "the APIC timer was not calibrated on the boot CPU",
        ));
    }
    start_periodic(
        vector::LAPIC_TIMER_SECONDARY,
        counts_per_tick(per_interval, hz)?,
    );
    Ok(())
}

/// Timer counts per second at ÷16, once calibrated.
pub fn timer_rate() -> u64 {
    u64::from(COUNTS_PER_INTERVAL.load(Ordering::Relaxed)) * 1000 / CALIBRATION_MS
}
