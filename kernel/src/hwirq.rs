//! Device interrupt lines as the core sees them: a fixed table, line →
//! claim, target and counters, used by the capability layer's IRQ objects.
//!
//! A line is claimed once ([`claim`]); the [`IrqLine`] it returns routes the line at the
//! interrupt controller with [`Delivery::MaskUntilUnmask`], so every delivery leaves the
//! line masked until the owner acknowledges it with [`IrqLine::unmask`] (a driver's
//! `irq_ack`). Each delivery counts as pending and calls the line's target, if any: a plain
//! function and a word, called from interrupt context with interrupts masked (the
//! capability layer's "signal this notification with this bit"). Dropping the `IrqLine`
//! disables the line and frees it.
//!
//! The interrupt path ([`deliver`], from the `keel_irq` upcall) takes no lock and allocates
//! nothing: the table is static and every field an atomic. Device interrupts are
//! delivered on the boot CPU only.
//! Weak spot (SMP): a target changed on another CPU while the boot CPU delivers on that
//! line could be seen with the old word and the new function (a notification signalled
//! with the old bits); a sequence count would close it.
//!
//! A line the core has not claimed but the arch still delivers (raced with a release, or
//! enabled behind the core's back) is counted ([`unclaimed`]) and disabled.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use arch_api::{Delivery, InterruptError, Interrupts};

use crate::Cpu;

/// Lines the table covers; higher lines cannot be claimed.
pub const MAX_LINES: usize = 1024;

/// Why a line cannot be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// No such line, or not a device line (the controller refused it).
    InvalidLine,
    /// Someone holds it already.
    InUse,
    /// The machine has no interrupt controller the kernel could route through.
    NoController,
}

impl From<InterruptError> for IrqError {
    fn from(error: InterruptError) -> Self {
        match error {
            InterruptError::InvalidLine => IrqError::InvalidLine,
            InterruptError::NoController => IrqError::NoController,
        }
    }
}

/// What a delivery calls: `function(word)`, in interrupt context with interrupts masked;
/// it must not block, allocate or take a lock an interrupted thread could hold.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub function: fn(usize),
    pub word: usize,
}

struct Slot {
    claimed: AtomicBool,
    /// The target's function as an address; 0 = no target.
    function: AtomicUsize,
    word: AtomicUsize,
    /// Deliveries not yet taken by [`IrqLine::take_pending`].
    pending: AtomicU32,
    /// Deliveries since the line was claimed.
    delivered: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            function: AtomicUsize::new(0),
            word: AtomicUsize::new(0),
            pending: AtomicU32::new(0),
            delivered: AtomicU64::new(0),
        }
    }
}

static TABLE: [Slot; MAX_LINES] = [const { Slot::new() }; MAX_LINES];
static UNCLAIMED: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "testing")]
/// Deliveries on lines nobody had claimed.
pub fn unclaimed() -> u64 {
    UNCLAIMED.load(Ordering::Relaxed)
}

/// The held claim on one line; dropping it disables and frees the line.
#[derive(Debug)]
pub struct IrqLine {
    line: u32,
}

/// Claim `line`: route it to this CPU, masked, with mask-on-delivery. The owner sets a
/// target and then unmasks to start receiving.
pub fn claim(line: u32) -> Result<IrqLine, IrqError> {
    if Cpu::line_count() == 0 {
        return Err(IrqError::NoController);
    }
    let slot = TABLE.get(line as usize).ok_or(IrqError::InvalidLine)?;
    if line >= Cpu::line_count() {
        return Err(IrqError::InvalidLine);
    }
    if slot.claimed.swap(true, Ordering::Acquire) {
        return Err(IrqError::InUse);
    }
    slot.function.store(0, Ordering::Relaxed);
    slot.word.store(0, Ordering::Relaxed);
    slot.pending.store(0, Ordering::Relaxed);
    slot.delivered.store(0, Ordering::Relaxed);
    // Interrupts are masked in the kernel, so nothing arrives between routing and masking.
    let routed = Cpu::enable(line, Delivery::MaskUntilUnmask).and_then(|()| Cpu::mask(line));
    if let Err(error) = routed {
        let _ = Cpu::disable(line);
        slot.claimed.store(false, Ordering::Release);
        return Err(error.into());
    }
    Ok(IrqLine { line })
}

impl IrqLine {
    fn slot(&self) -> &'static Slot {
        &TABLE[self.line as usize]
    }

    #[cfg(feature = "testing")]
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Call `target` on every delivery from now on (`None`: only count).
    pub fn set_target(&self, target: Option<Target>) {
        let slot = self.slot();
        slot.function.store(0, Ordering::Release);
        if let Some(target) = target {
            slot.word.store(target.word, Ordering::Relaxed);
            slot.function
                .store(target.function as usize, Ordering::Release);
        }
    }

    /// Acknowledge: unmask the line; an interrupt pending at the device arrives next.
    pub fn unmask(&self) {
        // The line is valid: `claim` checked it with the controller.
        let _ = Cpu::unmask(self.line);
    }

    #[cfg(feature = "testing")]
    /// Mask the line: no delivery until [`IrqLine::unmask`].
    pub fn mask(&self) {
        let _ = Cpu::mask(self.line);
    }

    #[cfg(feature = "testing")]
    /// Deliveries since the last call (and reset to 0).
    pub fn take_pending(&self) -> u32 {
        self.slot().pending.swap(0, Ordering::Relaxed)
    }

    #[cfg(feature = "testing")]
    /// Deliveries since the line was claimed.
    pub fn delivered(&self) -> u64 {
        self.slot().delivered.load(Ordering::Relaxed)
    }
}

impl Drop for IrqLine {
    fn drop(&mut self) {
        let _ = Cpu::disable(self.line);
        let slot = self.slot();
        slot.function.store(0, Ordering::Release);
        slot.pending.store(0, Ordering::Relaxed);
        slot.claimed.store(false, Ordering::Release);
    }
}

/// The `keel_irq` upcall's work: count the delivery and call the line's target. Interrupt
/// context, interrupts masked: no lock, no allocation.
pub fn deliver(line: u32) {
    let Some(slot) = TABLE
        .get(line as usize)
        .filter(|slot| slot.claimed.load(Ordering::Acquire))
    else {
        UNCLAIMED.fetch_add(1, Ordering::Relaxed);
        let _ = Cpu::disable(line);
        return;
    };
    slot.pending.fetch_add(1, Ordering::Relaxed);
    slot.delivered.fetch_add(1, Ordering::Relaxed);
    let function = slot.function.load(Ordering::Acquire);
    if function != 0 {
        let word = slot.word.load(Ordering::Relaxed);
        // SAFETY: `function` is non-zero only after `set_target` stored the address of a
        // `fn(usize)` (with Release, read here with Acquire); function pointers and `usize`
        // have the same size and a function's address is never 0.
        let function = unsafe { core::mem::transmute::<usize, fn(usize)>(function) };
        function(word);
    }
}
