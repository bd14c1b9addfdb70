//! PSCI (Arm DEN 0022) through the conduit the device tree names: only SYSTEM_OFF for now.
//!
//! When the conduit instruction is not implemented (no EL2 for `hvc`, no EL3 for `smc`) it
//! is an undefined instruction; the trap dispatcher recognises [`HVC`]/[`SMC`], returns
//! `NOT_SUPPORTED` in x0 and skips it, so a PSCI call here always returns or powers off.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::devicetree::PsciMethod;

/// Encodings of `hvc #0` and `smc #0`.
pub const HVC: u32 = 0xd400_0002;
pub const SMC: u32 = 0xd400_0003;
/// PSCI return value for an unimplemented function.
pub const NOT_SUPPORTED: u64 = -1i64 as u64;
/// PSCI 0.2+ SYSTEM_OFF (SMC32 fast call).
const SYSTEM_OFF: u64 = 0x8400_0008;

const NONE: u8 = 0;
const BY_HVC: u8 = 1;
const BY_SMC: u8 = 2;

static CONDUIT: AtomicU8 = AtomicU8::new(NONE);

/// Record the conduit from the device tree (early init).
pub fn set_method(method: Option<PsciMethod>) {
    let conduit = match method {
        None => NONE,
        Some(PsciMethod::Hvc) => BY_HVC,
        Some(PsciMethod::Smc) => BY_SMC,
    };
    CONDUIT.store(conduit, Ordering::Relaxed);
}

/// The conduit's name for the boot log.
pub fn method_name() -> &'static str {
    match CONDUIT.load(Ordering::Relaxed) {
        BY_HVC => "hvc",
        BY_SMC => "smc",
        _ => "none",
    }
}

/// SYSTEM_OFF. Returns only if PSCI is absent or refused.
pub fn system_off() {
    call(SYSTEM_OFF);
}

/// One PSCI call with no arguments (SMCCC: function ID in w0, result in x0, x1–x17 may be
/// clobbered by SMCCC 1.0 firmware).
fn call(function: u64) -> u64 {
    let mut result = function;
    macro_rules! conduit {
        ($instruction:literal) => {
            // SAFETY: a PSCI call transfers to firmware that honours the SMC Calling
            // Convention: only x0–x17 change, which are declared clobbered.
            unsafe {
                core::arch::asm!(
                    $instruction,
                    inout("x0") result,
                    out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
                    out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
                    out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                    out("x16") _, out("x17") _,
                    options(nostack),
                )
            }
        };
    }
    match CONDUIT.load(Ordering::Relaxed) {
        BY_HVC => conduit!("hvc #0"),
        BY_SMC => conduit!("smc #0"),
        _ => return NOT_SUPPORTED,
    }
    result
}
