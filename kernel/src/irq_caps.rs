//! Interrupt-line capabilities (issue 8): `irq_bind(irq, notification, bits)` and
//! `irq_ack(irq)`.
//!
//! When a bound line fires, [`deliver`] masks it and signals the bound notification; the
//! driver acknowledges with `irq_ack`, which unmasks it. A line fires into user space at
//! most once per acknowledgement, so a level-triggered device cannot storm the kernel.
//!
//! # The interface to the interrupt controller
//! The arch side (I/O APIC / GIC SPI routing and the upcall for a device line) is built
//! separately: it calls [`deliver`] with the line, and this module calls [`arch_mask`] /
//! [`arch_unmask`]. Today the only caller of [`deliver`] besides `keel_trap`'s
//! `TrapCause::Irq` is the test-only system call `irq_test_raise`, and [`arch_mask`] /
//! [`arch_unmask`] only record the state here: they are the two places to wire to the
//! controller.
//!
//! Weak spots: a binding outlives the capabilities that made it (it holds the notification
//! until the line is bound again); lines at or above [`MAX_LINES`] cannot be bound.

use alloc::sync::Arc;

use abi::Error;
use spin::Mutex;

use crate::object::Notification;

/// Lines this table covers (GIC INTIDs below 1020, ISA/IO APIC lines far below).
pub const MAX_LINES: usize = 1024;

/// What an interrupt-line capability names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqLine {
    pub line: u32,
}

impl IrqLine {
    /// A capability object for `line`, if the table covers it.
    pub fn new(line: u32) -> Option<Self> {
        ((line as usize) < MAX_LINES).then_some(Self { line })
    }
}

struct Binding {
    target: Option<(Arc<Notification>, u64)>,
    /// Masked by the kernel after a delivery, until `irq_ack`.
    masked: bool,
}

impl Binding {
    const EMPTY: Self = Self {
        target: None,
        masked: true,
    };
}

static LINES: Mutex<[Binding; MAX_LINES]> = Mutex::new([const { Binding::EMPTY }; MAX_LINES]);

/// Mask `line` at the interrupt controller (to be wired to the arch's controller).
fn arch_mask(_line: u32) {}

/// Unmask `line` at the interrupt controller (to be wired to the arch's controller).
fn arch_unmask(_line: u32) {}

/// `irq_bind`: deliveries of `line` signal `bits` on `notification`; the line is unmasked.
pub fn bind(line: IrqLine, notification: Arc<Notification>, bits: u64) -> Result<(), Error> {
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    let old = {
        let mut lines = LINES.lock();
        let binding = &mut lines[line.line as usize];
        binding.masked = false;
        binding.target.replace((notification, bits))
    };
    arch_unmask(line.line);
    // The old notification is dropped outside the lock.
    drop(old);
    Ok(())
}

/// `irq_ack`: unmask a bound line.
pub fn ack(line: IrqLine) -> Result<(), Error> {
    {
        let mut lines = LINES.lock();
        let binding = &mut lines[line.line as usize];
        if binding.target.is_none() {
            return Err(Error::InvalidArgument);
        }
        binding.masked = false;
    }
    arch_unmask(line.line);
    Ok(())
}

/// Interrupt `line` fired (interrupts masked): if it is bound and not masked, mask it and
/// signal its notification. Returns whether it signalled. No allocation.
pub fn deliver(line: u32) -> bool {
    let target = {
        let Some(mut lines) = LINES.try_lock() else {
            return false;
        };
        let Some(binding) = lines.get_mut(line as usize) else {
            return false;
        };
        if binding.masked {
            return false;
        }
        let Some((notification, bits)) = binding.target.as_ref() else {
            return false;
        };
        binding.masked = true;
        (notification.clone(), *bits)
    };
    arch_mask(line);
    crate::ipc::signal_object(&target.0, target.1);
    true
}
