//! Interrupt-line bindings: what `irq_bind(irq, notification, bits)` and `irq_ack(irq)`
//! do with an interrupt-line capability.
//!
//! When a bound line fires, [`deliver`] masks it and signals the bound notification; the
//! driver acknowledges with `irq_ack`, which unmasks it. A line fires into user space at
//! most once per acknowledgement, so a level-triggered device cannot storm the kernel.
//!
//! # The interface to the interrupt controller
//! The first `irq_bind` of a line claims it from the core's line table ([`crate::hwirq::claim`])
//! and keeps the claim in the binding for good; the claim's target is [`line_fired`], which
//! calls [`deliver`]. The controller masks the line on every delivery
//! (`Delivery::MaskUntilUnmask`), and `irq_ack` unmasks it through the claim. The test-only
//! system call `irq_test_raise` calls [`deliver`] without the controller; the binding's own
//! `masked` flag keeps the "once per acknowledgement" rule for both.
//!
//! Weak spots: a binding outlives the capabilities that made it (it holds the notification
//! and the claim until the line is bound again: a restarted driver rebinds the same claim);
//! lines at or above [`MAX_LINES`] cannot be bound; a line the kernel itself claimed
//! (the kernel suite's UART test) cannot be bound at the same time ([`Error::PermissionDenied`]).

use alloc::sync::Arc;

use abi::Error;

use crate::hwirq;
use crate::obj::region::MAX_IRQ_LINES as MAX_LINES;
use crate::obj::{IrqLine, Notification};
use crate::sync::{Lock, level};

struct Binding {
    target: Option<(Arc<Notification>, u64)>,
    /// Masked by the kernel after a delivery, until `irq_ack`.
    masked: bool,
    /// The core's claim on the line, taken by the first bind and kept.
    claim: Option<hwirq::IrqLine>,
}

impl Binding {
    const EMPTY: Self = Self {
        target: None,
        masked: true,
        claim: None,
    };
}

static LINES: Lock<[Binding; MAX_LINES]> =
    Lock::new(level::IRQ_BINDINGS, [const { Binding::EMPTY }; MAX_LINES]);

/// The target of every claimed line: the core's line table calls it (interrupt context,
/// interrupts masked) with the line number as its word.
fn line_fired(word: usize) {
    // why: the word is the line number `bind` stored, below MAX_LINES.
    deliver(word as u32);
}

/// `irq_bind`: deliveries of `line` signal `bits` on `notification`; the line is unmasked.
/// The first bind claims the line at the interrupt controller.
pub fn bind(line: IrqLine, notification: Arc<Notification>, bits: u64) -> Result<(), Error> {
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    let old = {
        let mut lines = LINES.lock();
        let binding = &mut lines[line.line as usize];
        if binding.claim.is_none() {
            let claim = hwirq::claim(line.line).map_err(|error| match error {
                hwirq::IrqError::InUse => Error::PermissionDenied,
                hwirq::IrqError::InvalidLine | hwirq::IrqError::NoController => {
                    Error::InvalidArgument
                }
            })?;
            claim.set_target(Some(hwirq::Target {
                function: line_fired,
                word: line.line as usize,
            }));
            binding.claim = Some(claim);
        }
        binding.masked = false;
        if let Some(claim) = binding.claim.as_ref() {
            claim.unmask();
        }
        binding.target.replace((notification, bits))
    };
    // The old notification is dropped outside the lock.
    drop(old);
    Ok(())
}

/// `irq_ack`: unmask a bound line.
pub fn ack(line: IrqLine) -> Result<(), Error> {
    let mut lines = LINES.lock();
    let binding = &mut lines[line.line as usize];
    if binding.target.is_none() {
        return Err(Error::InvalidArgument);
    }
    binding.masked = false;
    if let Some(claim) = binding.claim.as_ref() {
        claim.unmask();
    }
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
        // The controller masked the line already (mask-on-delivery); `irq_test_raise`
        // relies on this flag alone.
        binding.masked = true;
        (notification.clone(), *bits)
    };
    crate::ipc::signal_object(&target.0, target.1);
    true
}
