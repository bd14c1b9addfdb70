//! Kernel objects and the per-process capability space (DESIGN.md §6): records and
//! lookups, no policy.
//!
//! An [`Object`] is what a capability names: a reference-counted kernel object, so
//! deleting the last capability (and dropping the last kernel reference, such as a thread
//! blocked on it) frees the object. A process's capabilities live in its [`CapSpace`], a
//! [`kcore::captable::CapTable`] behind a lock that grows on demand from
//! [`abi::CAP_TABLE_INITIAL_SLOTS`] slots (charged to the process's budget), and are
//! looked up in one way only, [`CapSpace::lookup`] / [`CapSpace::with`], typed by [`Kind`].
//!
//! Objects a process creates are charged to its memory budget ([`Charge`], [`budget`]).
//! Taking a charge also makes sure the heap holds the object ([`OBJECT_HEAP_BYTES`],
//! `mm::heap::reserve`) and that the deferred-work queue has room for what its end may
//! queue ([`pending::promise`]): when the budget, or the frames for either, are gone the
//! creation fails with `OutOfMemory`, before anything is allocated.
//!
//! Extending: a new object type is a new [`Object`] variant, its [`ObjectType`], a
//! [`Kind`] impl, and the system calls that use it; [`CapSpace`] needs no change.
//!
//! Nothing here calls up into the IPC or scheduler layers: work that needs them (closing
//! an endpoint whose last receiver went, signalling a dead process's death notification)
//! is queued on [`pending`] and done by the layers above.
//!
//! Weak spot: `Arc::new` cannot report heap exhaustion on stable Rust; [`Charge::take`]
//! reserves the heap it will use first.

use alloc::sync::Arc;

use abi::{Error, ObjectType, Rights};

pub mod budget;
pub mod capspace;
pub mod endpoint;
pub mod pending;
pub mod process;
pub mod region;

pub use budget::Budget;
pub use capspace::CapSpace;
pub use endpoint::{Endpoint, EndpointCap, Notification, NotificationCap};
pub use process::Process;
pub use region::{IrqLine, MemoryRegion, MmioRange, PortRange, ThreadRef};

/// What a capability names.
#[derive(Clone)]
pub enum Object {
    Endpoint(EndpointCap),
    Notification(NotificationCap),
    Process(Arc<Process>),
    /// A region of physical memory (a boot module).
    Memory(Arc<MemoryRegion>),
    /// A thread, by id and serial.
    Thread(ThreadRef),
    /// An interrupt line.
    Irq(IrqLine),
    /// A range of x86_64 I/O ports.
    IoPorts(PortRange),
    /// A physical device-memory range.
    Mmio(MmioRange),
    /// Reading system information.
    System,
    /// Switching the machine off.
    Power,
}

impl Object {
    pub fn object_type(&self) -> ObjectType {
        match self {
            Self::Endpoint(_) => ObjectType::Endpoint,
            Self::Notification(_) => ObjectType::Notification,
            Self::Process(_) => ObjectType::Process,
            Self::Memory(_) => ObjectType::Memory,
            Self::Thread(_) => ObjectType::Thread,
            Self::Irq(_) => ObjectType::Irq,
            Self::IoPorts(_) => ObjectType::IoPorts,
            Self::Mmio(_) => ObjectType::Mmio,
            Self::System => ObjectType::System,
            Self::Power => ObjectType::Power,
        }
    }

    /// Make the object consistent with the rights of the capability that will hold it
    /// (an endpoint capability without `READ` does not count as a receiver).
    fn restrict(&mut self, rights: Rights) {
        if let Self::Endpoint(endpoint) = self
            && !rights.contains(Rights::READ)
        {
            endpoint.stop_counting();
        }
    }
}

/// An object type a capability lookup can ask for: how to find it inside an [`Object`].
pub trait Kind {
    /// What the lookup hands out (a clone of the reference the capability holds).
    type Target: Clone;
    fn cast(object: &Object) -> Option<&Self::Target>;
}

/// Declares a [`Kind`] marker for one [`Object`] variant.
macro_rules! kind {
    ($(#[$doc:meta])* $marker:ident, $variant:ident, $target:ty) => {
        $(#[$doc])*
        pub struct $marker;
        impl Kind for $marker {
            type Target = $target;
            #[inline(always)]
            fn cast(object: &Object) -> Option<&$target> {
                match object {
                    Object::$variant(target) => Some(target),
                    _ => None,
                }
            }
        }
    };
}

/// The marker types [`CapSpace::lookup`] takes, one per object type.
pub mod kind {
    use super::*;

    kind!(
        /// An endpoint capability (the endpoint and its badge).
        Endpoint,
        Endpoint,
        EndpointCap
    );
    kind!(
        /// A notification capability (counted: see `obj::endpoint`).
        Notification,
        Notification,
        NotificationCap
    );
    kind!(Process, Process, Arc<super::Process>);
    kind!(Memory, Memory, Arc<MemoryRegion>);
    kind!(Thread, Thread, ThreadRef);
    kind!(Irq, Irq, IrqLine);
    kind!(IoPorts, IoPorts, PortRange);
    kind!(Mmio, Mmio, MmioRange);

    /// The system-information capability (no data).
    pub struct System;
    impl Kind for System {
        type Target = ();
        fn cast(object: &Object) -> Option<&()> {
            matches!(object, Object::System).then_some(&())
        }
    }

    /// The power capability (no data).
    pub struct Power;
    impl Kind for Power {
        type Target = ();
        fn cast(object: &Object) -> Option<&()> {
            matches!(object, Object::Power).then_some(&())
        }
    }
}

/// Heap bytes one charged object may take when it is made: the largest, a process,
/// holds its record, its capability table and its first thread's record (with room to
/// spare).
pub const OBJECT_HEAP_BYTES: usize = 32 * 1024;

/// Bytes charged to a budget for an object, refunded when the object is freed.
pub struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Charge {
    /// Charge `bytes` to `budget` for one new object, or `OutOfMemory` when the budget
    /// has not that much left or the heap cannot hold one more object.
    pub fn take(budget: &Arc<Budget>, bytes: u64) -> Result<Self, Error> {
        crate::mm::heap::reserve(OBJECT_HEAP_BYTES).map_err(|_| Error::OutOfMemory)?;
        budget.charge(bytes)?;
        if pending::promise().is_err() {
            budget.refund(bytes);
            return Err(Error::OutOfMemory);
        }
        Ok(Self {
            budget: budget.clone(),
            bytes,
        })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        pending::release_promise();
        self.budget.refund(self.bytes);
    }
}
