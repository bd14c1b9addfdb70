//! TLB consistency between CPUs: which CPUs an address space is active on
//! ([`SpaceCpus`], [`ActiveSpaces`]) and the invalidation requests one CPU sends others,
//! with their acknowledgements ([`Mailboxes`]). Both arch crates keep one
//! [`ActiveSpaces`] and one [`Mailboxes`] in statics and supply only the flush itself.
//!
//! # The active mask
//! Every address space has a [`SpaceCpus`] at an address that does not change while the
//! space lives (the arch crates box it), and every CPU has a slot in [`ActiveSpaces`]
//! naming the space it has active (none at boot, and none once it switched to the kernel's
//! own root). Rules:
//! - CPU *c* alone writes its slot and its bit in a space's `active` mask: it sets the bit
//!   when it activates the space ([`ActiveSpaces::activate`]) and clears it when it
//!   activates another one or drops the space on request ([`ActiveSpaces::leave`]).
//!   Any CPU reads the mask.
//! - Where the hardware broadcasts TLB maintenance (AArch64) the mask is not kept: a CPU
//!   only records the space in its slot ([`ActiveSpaces::record`]), and the CPUs that
//!   have a space active are the slots that name it ([`ActiveSpaces::holders`]).
//! - A pointer in a slot stays valid because a space is destroyed only after every CPU in
//!   its mask dropped it (the destroying CPU sends [`Request::Leave`] and waits), so no slot
//!   names it when its record is freed.
//!
//! # Stale bits (tagged TLBs: x86_64 PCIDs)
//! With tagged TLB entries a CPU keeps a space's translations after switching away. So a
//! change to the space's tables sets the `stale` bit of every CPU that will not flush now
//! ([`SpaceCpus::changed`]), and a CPU that finds its bit set when it next activates the
//! space flushes the space's tag ([`SpaceCpus::take_stale`]). A new space starts stale on
//! every CPU: that is what makes reusing a destroyed space's tag safe — no CPU runs with a
//! tag before it flushed it for its new owner.
//!
//! The changer sets the stale bits *before* it reads the active mask, and an activating
//! CPU sets its active bit *before* it reads its stale bit (both sequentially consistent),
//! so of a change and a concurrent activation at least one sees the other: either the
//! changer sends the activating CPU a request, or that CPU flushes on activation.
//!
//! # Requests and deadlock freedom
//! A sender writes its one outgoing request, raises its bit in each target's pending word,
//! interrupts the target, and waits for every target's acknowledgement of that request's
//! sequence number ([`Mailboxes::send`]). The kernel runs with interrupts masked and its
//! locks are spin locks, so a target may be unable to take the interrupt for a while:
//! it may be spinning on a lock the sender holds, or waiting for the sender's own
//! acknowledgement of a request of its own. Both waits therefore answer this CPU's pending
//! requests between polls ([`Mailboxes::service`]): the sender's wait here, and the
//! kernel's lock spin path through `SecondaryCpus::service_ipi_work`. Answering a request
//! takes no lock and sends nothing, so it cannot wait on anyone. A target that is stopped
//! or offline (`gone`) is not waited for.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

use crate::MAX_CPUS;

/// A set of CPUs by dense index, bit *i* for CPU *i*.
pub type CpuMask = u32;

/// Every CPU the kernel can have.
pub const ALL_CPUS: CpuMask = if MAX_CPUS >= 32 {
    u32::MAX
} else {
    (1 << MAX_CPUS) - 1
};

const _: () = assert!(MAX_CPUS <= 32, "a CpuMask has 32 bits");

/// The bit of CPU `cpu`.
#[inline(always)]
pub const fn bit(cpu: u32) -> CpuMask {
    1 << cpu
}

/// One address space's CPUs (see the module docs).
#[derive(Debug)]
pub struct SpaceCpus {
    active: AtomicU32,
    stale: AtomicU32,
    /// The architecture's tag context of the space (AArch64: its ASID generation and ASID),
    /// here so that a switch reaches it without the space's lock.
    context: AtomicU64,
}

impl Default for SpaceCpus {
    fn default() -> Self {
        Self::new()
    }
}

impl SpaceCpus {
    /// A new space's record on the heap (a fixed address for the CPUs' slots), or `None`
    /// when the heap refuses: an allocation failure is the caller's `OutOfMemory`, never a
    /// panic.
    #[allow(unsafe_code, reason = "a fallible heap allocation of a known layout")]
    pub fn boxed() -> Option<alloc::boxed::Box<Self>> {
        let layout = core::alloc::Layout::new::<Self>();
        // SAFETY: the layout has a non-zero size.
        let memory = unsafe { alloc::alloc::alloc(layout) }.cast::<Self>();
        if memory.is_null() {
            return None;
        }
        // SAFETY: `memory` is a fresh allocation with `SpaceCpus`'s layout from the global
        // allocator, initialized here, so the box owns it.
        unsafe {
            memory.write(Self::new());
            Some(alloc::boxed::Box::from_raw(memory))
        }
    }

    /// A new space: active nowhere, stale everywhere.
    pub const fn new() -> Self {
        Self {
            active: AtomicU32::new(0),
            stale: AtomicU32::new(ALL_CPUS),
            context: AtomicU64::new(0),
        }
    }

    /// The architecture's tag context word (0 until the architecture sets it).
    #[inline(always)]
    pub fn context(&self) -> &AtomicU64 {
        &self.context
    }

    /// The CPUs the space is active on now.
    #[inline(always)]
    pub fn active(&self) -> CpuMask {
        self.active.load(Ordering::SeqCst)
    }

    /// After a change to the space's tables (every entry written): with `tagged` TLBs, mark
    /// the space stale on every CPU but `fresh` (the CPUs that flush now regardless);
    /// then return the CPUs the space is active on, which must be asked to flush.
    #[inline(always)]
    pub fn changed(&self, tagged: bool, fresh: CpuMask) -> CpuMask {
        if tagged {
            self.stale.fetch_or(ALL_CPUS & !fresh, Ordering::SeqCst);
        } else {
            // Order the table writes before the read of the mask (see the module docs).
            fence(Ordering::SeqCst);
        }
        self.active.load(Ordering::SeqCst)
    }

    /// On CPU `cpu`, activating the space (after [`ActiveSpaces::activate`] set its active
    /// bit): whether its cached translations of this space may be stale, clearing the bit.
    #[inline(always)]
    pub fn take_stale(&self, cpu: u32) -> bool {
        self.stale.load(Ordering::SeqCst) & bit(cpu) != 0
            && self.stale.fetch_and(!bit(cpu), Ordering::SeqCst) & bit(cpu) != 0
    }
}

/// What a context switch needs to activate an address space without the space's lock
/// (`Paging::SwitchHandle`): its root table and tag, which never change while it lives,
/// and its [`SpaceCpus`], at a fixed address until it is destroyed.
#[derive(Clone, Copy, Debug)]
pub struct SwitchHandle {
    /// Physical address of the root table.
    pub root: u64,
    /// The architecture's fixed tag (x86_64: the PCID; AArch64 keeps its ASID in
    /// [`SpaceCpus::context`] instead, so 0).
    pub tag: u16,
    cpus: *const SpaceCpus,
}

// SAFETY: the record the pointer names is all atomics, shared by every CPU by design (module
// docs); the handle's users keep the space alive (`SwitchHandle::cpus`).
#[allow(unsafe_code, reason = "a pointer to a record shared by every CPU")]
unsafe impl Send for SwitchHandle {}
// SAFETY: as above.
#[allow(unsafe_code, reason = "a pointer to a record shared by every CPU")]
unsafe impl Sync for SwitchHandle {}

impl SwitchHandle {
    /// The handle of the space whose root is `root`, tag `tag` and record `cpus` (boxed by
    /// the space, so at a fixed address while it lives).
    pub fn new(root: u64, tag: u16, cpus: &SpaceCpus) -> Self {
        Self {
            root,
            tag,
            cpus: core::ptr::from_ref(cpus),
        }
    }

    /// The space's CPU record.
    ///
    /// # Safety
    /// The space the handle was taken from is not destroyed while the reference is used.
    #[allow(unsafe_code, reason = "the record lives as long as its space")]
    #[inline(always)]
    pub unsafe fn cpus<'a>(self) -> &'a SpaceCpus {
        // SAFETY: the record is boxed by its space and freed only when the space is
        // destroyed, which the caller rules out.
        unsafe { &*self.cpus }
    }
}

/// Each CPU's active space (see the module docs), by dense index.
#[derive(Debug)]
pub struct ActiveSpaces([AtomicPtr<SpaceCpus>; MAX_CPUS]);

impl Default for ActiveSpaces {
    fn default() -> Self {
        Self::new()
    }
}

impl ActiveSpaces {
    pub const fn new() -> Self {
        Self([const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS])
    }

    /// Whether `space` is the one active on `cpu`.
    #[inline(always)]
    pub fn is_active(&self, cpu: u32, space: &SpaceCpus) -> bool {
        self.0
            .get(cpu as usize)
            .is_some_and(|slot| core::ptr::eq(slot.load(Ordering::Relaxed), space))
    }

    /// The record of the space active on `cpu` (as an address, for comparison only).
    pub fn active_on(&self, cpu: u32) -> usize {
        self.0
            .get(cpu as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed) as usize)
    }

    /// On CPU `cpu` (an index below `MAX_CPUS`), before its translation registers name
    /// `space`: set its bit in `space` and clear it in the space it had active. Returns
    /// `false` (and changes nothing) when `space` was active already.
    #[inline(always)]
    #[allow(
        unsafe_code,
        reason = "dereferences the previous space's record, kept alive by the destroy rule"
    )]
    pub fn activate(&self, cpu: u32, space: &SpaceCpus) -> bool {
        debug_assert!((cpu as usize) < MAX_CPUS);
        // CPU indices are below `MAX_CPUS`, a power of two: the mask only tells the compiler.
        let slot = &self.0[cpu as usize & (MAX_CPUS - 1)];
        let new = core::ptr::from_ref(space).cast_mut();
        let old = slot.load(Ordering::Relaxed);
        if old == new {
            return false;
        }
        space.active.fetch_or(bit(cpu), Ordering::SeqCst);
        slot.store(new, Ordering::Relaxed);
        // SAFETY: a slot names only a live record: a space is destroyed only after every
        // CPU whose slot names it has cleared the slot (module docs), and only this CPU
        // writes its slot.
        if let Some(old) = unsafe { old.as_ref() } {
            old.active.fetch_and(!bit(cpu), Ordering::SeqCst);
        }
        true
    }

    /// On CPU `cpu`, before its translation registers name `space`, where no one reads the
    /// space's `active` mask (TLB maintenance is broadcast by the hardware, and only a
    /// destroy needs the CPUs that have the space active: [`ActiveSpaces::holders`]):
    /// record `space` in this CPU's slot only, one store.
    #[inline(always)]
    pub fn record(&self, cpu: u32, space: &SpaceCpus) {
        // CPU indices are below `MAX_CPUS`, a power of two: the mask only tells the compiler.
        self.0[cpu as usize & (MAX_CPUS - 1)]
            .store(core::ptr::from_ref(space).cast_mut(), Ordering::Release);
    }

    /// The CPUs whose slot names `space` (with [`ActiveSpaces::record`]: the CPUs it is
    /// active on). Exact while no CPU activates `space` concurrently.
    pub fn holders(&self, space: &SpaceCpus) -> CpuMask {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, slot)| core::ptr::eq(slot.load(Ordering::SeqCst), space))
            .fold(0, |mask, (cpu, _)| mask | bit(cpu as u32))
    }

    /// On CPU `cpu`, after its translation registers stopped naming `space` (it switched to
    /// the kernel's root): clear its bit and its slot. Nothing when `space` is not active
    /// on `cpu`.
    pub fn leave(&self, cpu: u32, space: &SpaceCpus) {
        if self.is_active(cpu, space) {
            self.0[cpu as usize].store(core::ptr::null_mut(), Ordering::Relaxed);
            space.active.fetch_and(!bit(cpu), Ordering::SeqCst);
        }
    }
}

/// What a CPU is asked to do. `space` is the address of the space's [`SpaceCpus`] (valid
/// while the sender waits: it holds the space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Drop the translations of `pages` pages from `start` in `space`, if it is active
    /// here (else nothing: an untagged TLB was flushed when the space was left, and a
    /// tagged one is marked stale).
    Pages {
        space: usize,
        start: u64,
        pages: u64,
    },
    /// Drop every translation of `space`, if it is active here.
    Space { space: usize },
    /// `space` is being destroyed: if it is active here, switch to the kernel's root,
    /// flush, and [`ActiveSpaces::leave`] it.
    Leave { space: usize },
}

const PAGES: u64 = 1;
const SPACE: u64 = 2;
const LEAVE: u64 = 3;

/// One sender's request, written only by that sender while no target owes it an answer.
#[derive(Debug)]
struct Outgoing {
    sequence: AtomicU64,
    kind: AtomicU64,
    space: AtomicU64,
    start: AtomicU64,
    pages: AtomicU64,
}

/// The request slots and acknowledgements of every CPU (see the module docs).
#[derive(Debug)]
pub struct Mailboxes {
    /// Per target: bit *s* set when sender *s* has a request for it.
    pending: [AtomicU32; MAX_CPUS],
    /// Per sender: its request.
    outgoing: [Outgoing; MAX_CPUS],
    /// `[sender][target]`: the last sequence number the target answered.
    answered: [[AtomicU64; MAX_CPUS]; MAX_CPUS],
}

impl Default for Mailboxes {
    fn default() -> Self {
        Self::new()
    }
}

/// How many polls [`Mailboxes::send`] makes between checks of whether a silent target is
/// gone (checking costs more than a poll).
const POLLS_PER_GONE_CHECK: u32 = 1024;

impl Mailboxes {
    pub const fn new() -> Self {
        Self {
            pending: [const { AtomicU32::new(0) }; MAX_CPUS],
            outgoing: [const {
                Outgoing {
                    sequence: AtomicU64::new(0),
                    kind: AtomicU64::new(0),
                    space: AtomicU64::new(0),
                    start: AtomicU64::new(0),
                    pages: AtomicU64::new(0),
                }
            }; MAX_CPUS],
            answered: [const { [const { AtomicU64::new(0) }; MAX_CPUS] }; MAX_CPUS],
        }
    }

    /// Whether CPU `me` has requests to answer (one load).
    #[inline(always)]
    pub fn has_work(&self, me: u32) -> bool {
        self.pending
            .get(me as usize)
            .is_some_and(|word| word.load(Ordering::Relaxed) != 0)
    }

    /// On CPU `me`: answer every request waiting for it, `handle` doing the work.
    /// `handle` must not send requests or take locks.
    pub fn service(&self, me: u32, mut handle: impl FnMut(Request)) {
        let Some(word) = self.pending.get(me as usize) else {
            return;
        };
        let mut senders = word.swap(0, Ordering::Acquire);
        while senders != 0 {
            let sender = senders.trailing_zeros() as usize;
            senders &= senders - 1;
            let out = &self.outgoing[sender];
            let sequence = out.sequence.load(Ordering::Acquire);
            let space = out.space.load(Ordering::Relaxed) as usize;
            let request = match out.kind.load(Ordering::Relaxed) {
                PAGES => Some(Request::Pages {
                    space,
                    start: out.start.load(Ordering::Relaxed),
                    pages: out.pages.load(Ordering::Relaxed),
                }),
                SPACE => Some(Request::Space { space }),
                LEAVE => Some(Request::Leave { space }),
                _ => None,
            };
            if let Some(request) = request {
                handle(request);
            }
            self.answered[sender][me as usize].store(sequence, Ordering::Release);
        }
    }

    /// On CPU `me`: send `request` to every CPU of `targets` (`me` excluded), `kick`ing each
    /// (its interrupt), and wait until each answered it or is `gone` (stopped or offline),
    /// answering requests for `me` meanwhile through `handle`. Returns the targets that
    /// were gone without answering.
    pub fn send(
        &self,
        me: u32,
        targets: CpuMask,
        request: Request,
        mut kick: impl FnMut(u32),
        mut handle: impl FnMut(Request),
        gone: impl Fn(u32) -> bool,
    ) -> CpuMask {
        let Some(out) = self.outgoing.get(me as usize) else {
            return 0;
        };
        let targets = targets & ALL_CPUS & !bit(me);
        if targets == 0 {
            return 0;
        }
        let (kind, space, start, pages) = match request {
            Request::Pages {
                space,
                start,
                pages,
            } => (PAGES, space, start, pages),
            Request::Space { space } => (SPACE, space, 0, 0),
            Request::Leave { space } => (LEAVE, space, 0, 0),
        };
        let sequence = out.sequence.load(Ordering::Relaxed) + 1;
        out.kind.store(kind, Ordering::Relaxed);
        out.space.store(space as u64, Ordering::Relaxed);
        out.start.store(start, Ordering::Relaxed);
        out.pages.store(pages, Ordering::Relaxed);
        out.sequence.store(sequence, Ordering::Release);
        let mut left = targets;
        while left != 0 {
            let target = left.trailing_zeros();
            left &= left - 1;
            self.pending[target as usize].fetch_or(bit(me), Ordering::Release);
            kick(target);
        }
        let mut missing = 0;
        let mut left = targets;
        while left != 0 {
            let target = left.trailing_zeros();
            let mut polls = 0u32;
            loop {
                if self.answered[me as usize][target as usize].load(Ordering::Acquire) >= sequence {
                    break;
                }
                if self.has_work(me) {
                    self.service(me, &mut handle);
                }
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(POLLS_PER_GONE_CHECK) && gone(target) {
                    missing |= bit(target);
                    break;
                }
                core::hint::spin_loop();
            }
            left &= left - 1;
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::thread;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn activation_moves_the_cpu_bit_between_spaces() {
        let spaces = ActiveSpaces::new();
        let (a, b) = (SpaceCpus::new(), SpaceCpus::new());
        assert!(spaces.activate(1, &a));
        assert!(spaces.activate(2, &a));
        assert_eq!(a.active(), bit(1) | bit(2));
        assert!(
            !spaces.activate(1, &a),
            "a second activation changes nothing"
        );
        assert!(spaces.activate(1, &b));
        assert_eq!((a.active(), b.active()), (bit(2), bit(1)));
        spaces.leave(2, &b);
        assert_eq!(
            a.active(),
            bit(2),
            "leaving a space not active there changes nothing"
        );
        spaces.leave(2, &a);
        assert_eq!(a.active(), 0);
        assert_eq!(spaces.active_on(2), 0);
        assert!(spaces.is_active(1, &b));
    }

    #[test]
    fn recorded_slots_name_the_holders() {
        let spaces = ActiveSpaces::new();
        let (a, b) = (SpaceCpus::new(), SpaceCpus::new());
        spaces.record(0, &a);
        spaces.record(4, &a);
        spaces.record(2, &b);
        assert_eq!(spaces.holders(&a), bit(0) | bit(4));
        spaces.record(4, &b);
        assert_eq!(
            (spaces.holders(&a), spaces.holders(&b)),
            (bit(0), bit(2) | bit(4))
        );
        spaces.leave(0, &a);
        assert_eq!(spaces.holders(&a), 0);
    }

    #[test]
    fn a_new_space_is_stale_once_on_every_cpu() {
        // A recycled tag: every CPU flushes it on its first activation of the new owner,
        // and only then.
        let space = SpaceCpus::new();
        for cpu in 0..MAX_CPUS as u32 {
            assert!(space.take_stale(cpu));
            assert!(!space.take_stale(cpu));
        }
    }

    #[test]
    fn a_change_marks_stale_all_but_the_fresh_cpus_and_names_the_active_ones() {
        let spaces = ActiveSpaces::new();
        let space = SpaceCpus::new();
        for cpu in 0..MAX_CPUS as u32 {
            space.take_stale(cpu);
        }
        spaces.activate(0, &space);
        spaces.activate(3, &space);
        assert_eq!(space.changed(true, bit(0)), bit(0) | bit(3));
        assert!(!space.take_stale(0), "the changer flushed itself");
        assert!(
            space.take_stale(3),
            "an active CPU may leave before it answers"
        );
        assert!(
            space.take_stale(5),
            "an inactive CPU may hold tagged entries"
        );
        assert_eq!(space.changed(false, 0), bit(0) | bit(3));
        assert!(!space.take_stale(5), "untagged TLBs need no stale bits");
    }

    #[test]
    fn a_request_is_answered_with_its_contents() {
        let boxes = Mailboxes::new();
        let mut seen = Vec::new();
        let request = Request::Pages {
            space: 0x1000,
            start: 0x40_0000,
            pages: 3,
        };
        // The target answers from inside `kick`, as an interrupt handler would.
        let missing = boxes.send(
            0,
            bit(2),
            request,
            |target| {
                assert_eq!(target, 2);
                assert!(boxes.has_work(2));
                boxes.service(2, |got| seen.push(got));
            },
            |_| panic!("nothing is sent to the sender"),
            |_| false,
        );
        assert_eq!(missing, 0);
        assert_eq!(seen, [request]);
        assert!(!boxes.has_work(2));
    }

    #[test]
    fn a_gone_target_is_not_waited_for() {
        let boxes = Mailboxes::new();
        let missing = boxes.send(
            1,
            bit(1) | bit(4),
            Request::Space { space: 8 },
            |_| {},
            |_| {},
            |cpu| cpu == 4,
        );
        assert_eq!(missing, bit(4), "the sender itself is never a target");
    }

    #[test]
    fn two_senders_waiting_on_each_other_both_finish() {
        // Two CPUs each send the other a request and wait; neither takes interrupts (no
        // kick handling), so only answering while waiting lets both finish.
        let boxes = Arc::new(Mailboxes::new());
        let handled = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let finished = Arc::new(AtomicU32::new(0));
        let workers: Vec<_> = (0..2u32)
            .map(|me| {
                let boxes = Arc::clone(&boxes);
                let handled = Arc::clone(&handled);
                let finished = Arc::clone(&finished);
                thread::spawn(move || {
                    let mut handle = |request: Request| {
                        assert!(matches!(request, Request::Leave { .. }));
                        handled[me as usize].store(true, Ordering::Relaxed);
                    };
                    for round in 0..1000 {
                        let missing = boxes.send(
                            me,
                            bit(1 - me),
                            Request::Leave { space: round },
                            |_| {},
                            &mut handle,
                            |_| false,
                        );
                        assert_eq!(missing, 0);
                    }
                    // Keep answering until the other is done sending too.
                    finished.fetch_add(1, Ordering::SeqCst);
                    while finished.load(Ordering::SeqCst) < 2 {
                        boxes.service(me, &mut handle);
                        core::hint::spin_loop();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert!(handled.iter().all(|flag| flag.load(Ordering::Relaxed)));
    }
}
