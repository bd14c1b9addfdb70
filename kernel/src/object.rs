//! Kernel objects and the per-process capability space (DESIGN.md §6, issue 8).
//!
//! An [`Object`] is what a capability names: a reference-counted kernel object, so
//! deleting the last capability (and dropping the last kernel reference, such as a thread
//! blocked on it) frees the object. A process's capabilities live in its [`CapSpace`], a
//! [`kcore::captable::CapTable`] of [`abi::CAP_TABLE_SLOTS`] slots behind a lock.
//!
//! Objects a process creates are charged to it ([`Charge`]): at most
//! [`abi::OBJECT_QUOTA`] live at once, so no process can exhaust the kernel heap.
//!
//! Extending: a new object type is a new [`Object`] variant, its [`ObjectType`], and the
//! system calls that use it; [`CapSpace`] needs no change.
//!
//! Endpoints count their receive-capable (`READ`) capabilities ([`EndpointCap`]): when the
//! last one goes, the endpoint is closed ([`crate::ipc::close_endpoint`]) and its waiting
//! senders are woken with `PeerDied` — the definition of "the server is dead".
//!
//! Weak spot: `Arc::new` cannot report heap exhaustion on stable Rust; the quota keeps the
//! heap far from it.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};

use abi::{CAP_TABLE_SLOTS, Error, Handle, OBJECT_QUOTA, ObjectType, Rights};
use kcore::captable::{CapTable, Capability, Slot};
use kcore::ipc::{EndpointQueue, NotificationState};
use spin::Mutex;

use crate::process::Process;

/// What a capability names.
#[derive(Clone)]
pub enum Object {
    Endpoint(EndpointCap),
    Notification(Arc<Notification>),
    Process(Arc<Process>),
    /// A region of physical memory (a boot module).
    Memory(Arc<MemoryRegion>),
    /// A thread, by id and serial ([`crate::procsys`]).
    Thread(crate::procsys::ThreadRef),
    /// An interrupt line ([`crate::irq_caps`]).
    Irq(crate::irq_caps::IrqLine),
    /// A range of x86_64 I/O ports ([`crate::procsys`]).
    IoPorts(crate::procsys::PortRange),
    /// A physical device-memory range ([`crate::procsys`]).
    Mmio(crate::procsys::MmioRange),
    /// Reading system information ([`crate::sysinfo`]).
    System,
    /// Switching the machine off ([`crate::sysinfo`]).
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

/// A charge against a process's object quota, released when the object is freed.
pub struct Charge(Arc<AtomicUsize>);

impl Charge {
    /// Count one more object against `counter`, or `OutOfMemory` at the quota.
    pub fn take(counter: &Arc<AtomicUsize>) -> Result<Self, Error> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < OBJECT_QUOTA).then_some(live + 1)
            })
            .map_err(|_| Error::OutOfMemory)?;
        Ok(Self(counter.clone()))
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A synchronous IPC endpoint: the threads waiting on it (under the IPC lock, see
/// [`crate::ipc`]) and a count of receive-capable capabilities.
pub struct Endpoint {
    pub queue: Mutex<EndpointQueue>,
    receivers: AtomicUsize,
    _charge: Option<Charge>,
}

impl Endpoint {
    pub fn new(charge: Option<Charge>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(EndpointQueue::new()),
            receivers: AtomicUsize::new(0),
            _charge: charge,
        })
    }
}

/// An endpoint capability's object: the endpoint, the badge it delivers (0: unbadged),
/// and whether it counts as a receiver (holds `READ`).
pub struct EndpointCap {
    pub endpoint: Arc<Endpoint>,
    pub badge: u64,
    receiver: bool,
}

impl EndpointCap {
    /// A capability object for `endpoint`; counts as a receiver until restricted.
    pub fn new(endpoint: Arc<Endpoint>, badge: u64) -> Self {
        endpoint.receivers.fetch_add(1, Ordering::AcqRel);
        Self {
            endpoint,
            badge,
            receiver: true,
        }
    }

    fn stop_counting(&mut self) {
        if core::mem::replace(&mut self.receiver, false) {
            self.release();
        }
    }

    fn release(&self) {
        if self.endpoint.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            crate::ipc::close_endpoint(&self.endpoint);
        }
    }
}

impl Clone for EndpointCap {
    fn clone(&self) -> Self {
        if self.receiver {
            self.endpoint.receivers.fetch_add(1, Ordering::AcqRel);
        }
        Self {
            endpoint: self.endpoint.clone(),
            badge: self.badge,
            receiver: self.receiver,
        }
    }
}

impl Drop for EndpointCap {
    fn drop(&mut self) {
        if self.receiver {
            self.release();
        }
    }
}

/// A notification: a word of bits and its waiters (under the IPC lock).
pub struct Notification {
    pub state: Mutex<NotificationState>,
    _charge: Option<Charge>,
}

impl Notification {
    pub fn new(charge: Option<Charge>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(NotificationState::new()),
            _charge: charge,
        })
    }
}

/// Physical memory `[base, base + length)`, e.g. a boot module.
pub struct MemoryRegion {
    pub base: u64,
    pub length: u64,
}

impl MemoryRegion {
    /// The first `length` bytes of the boot module `name` (at most its length).
    pub fn boot_module_prefix(name: &str, length: u64) -> Option<Arc<Self>> {
        let whole = Self::boot_module(name)?;
        Some(Arc::new(Self {
            base: whole.base,
            length: whole.length.min(length),
        }))
    }

    /// The bytes of the region, through the kernel's direct map. Only boot-module regions
    /// exist, and the loader's memory they name is never reused by the kernel.
    pub fn bytes(&self) -> &[u8] {
        let address = crate::memory::frames::virtual_address(self.base);
        // SAFETY: a `MemoryRegion` is made only from a boot module (`boot_module*`): memory
        // the loader filled, mapped by the HHDM and never freed or written by the kernel,
        // `length` bytes long.
        unsafe { core::slice::from_raw_parts(address as *const u8, self.length as usize) }
    }

    /// The boot module named `name` (the loader's memory, never reused by the kernel).
    pub fn boot_module(name: &str) -> Option<Arc<Self>> {
        let bytes = crate::boot::module(name)?;
        Some(Arc::new(Self {
            base: (bytes.as_ptr() as u64).wrapping_sub(crate::memory::frames::virtual_address(0)),
            length: bytes.len() as u64,
        }))
    }
}

type Table = CapTable<Object, Box<[Slot<Object>]>>;

/// A process's capabilities and its object quota.
pub struct CapSpace {
    table: Mutex<Table>,
    /// Objects this process created that are still alive.
    objects: Arc<AtomicUsize>,
}

impl Default for CapSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl CapSpace {
    pub fn new() -> Self {
        let slots: Box<[Slot<Object>]> = (0..CAP_TABLE_SLOTS).map(|_| Slot::empty()).collect();
        Self {
            table: Mutex::new(CapTable::new(slots)),
            objects: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A charge for one new object created by this process.
    pub fn charge(&self) -> Result<Charge, Error> {
        Charge::take(&self.objects)
    }

    /// Put `object` in the table with `rights`.
    pub fn insert(&self, mut object: Object, rights: Rights) -> Result<Handle, Error> {
        object.restrict(rights);
        // A refused object is dropped under the table lock; that may close an endpoint
        // (taking the IPC lock), which never waits for a table lock: no deadlock.
        self.table.lock().insert(object, rights)
    }

    /// Put a capability derived elsewhere (another table, a message) in the table.
    pub fn insert_capability(&self, capability: Capability<Object>) -> Result<Handle, Error> {
        let rights = capability.rights();
        self.insert(capability.into_object(), rights)
    }

    /// Free slots left (checked before a transfer).
    pub fn free_slots(&self) -> usize {
        self.table.lock().free_slots()
    }

    /// A copy of the capability `handle` names, if it holds `required`.
    pub fn get(&self, handle: Handle, required: Rights) -> Result<Capability<Object>, Error> {
        let table = self.table.lock();
        let capability = table.lookup(handle, required)?;
        Ok(capability.derive(Rights::ALL))
    }

    /// Run `body` on the capability `handle` names (no reference taken), if it holds
    /// `required`. `body` must not take this table's lock.
    pub fn with<R>(
        &self,
        handle: Handle,
        required: Rights,
        body: impl FnOnce(&Capability<Object>) -> R,
    ) -> Result<R, Error> {
        let table = self.table.lock();
        table.lookup(handle, required).map(body)
    }

    /// `cap_copy`: the same object with rights `source & mask`.
    pub fn copy(&self, handle: Handle, mask: Rights) -> Result<Handle, Error> {
        let derived = self.get(handle, Rights::NONE)?.derive(mask);
        self.insert_capability(derived)
    }

    /// `cap_mint`: a badged copy of an unbadged endpoint capability.
    pub fn mint(&self, handle: Handle, badge: u64, mask: Rights) -> Result<Handle, Error> {
        let source = self.get(handle, Rights::NONE)?;
        let rights = source.rights().intersection(mask);
        let Object::Endpoint(endpoint) = source.into_object() else {
            return Err(Error::InvalidArgument);
        };
        if endpoint.badge != 0 || badge == 0 {
            return Err(Error::InvalidArgument);
        }
        let mut badged = endpoint.clone();
        badged.badge = badge;
        // `endpoint` (the lookup's reference) drops here, outside the table lock.
        drop(endpoint);
        self.insert(Object::Endpoint(badged), rights)
    }

    /// `cap_delete`. The object reference is dropped after the table lock is released
    /// (dropping the last endpoint receiver wakes threads).
    pub fn delete(&self, handle: Handle) -> Result<(), Error> {
        let removed = self.table.lock().delete(handle);
        drop(removed?);
        Ok(())
    }

    /// `cap_identify`: the object type and the rights.
    pub fn identify(&self, handle: Handle) -> Result<(ObjectType, Rights), Error> {
        self.with(handle, Rights::NONE, |capability| {
            (capability.object().object_type(), capability.rights())
        })
    }

    /// Up to `out.len()` of the capabilities, as (slot, object type, rights), in slot order.
    pub fn list(&self, out: &mut [(u32, ObjectType, Rights)]) -> usize {
        let table = self.table.lock();
        let mut count = 0;
        for ((handle, capability), place) in table.iter().zip(out.iter_mut()) {
            *place = (
                handle.slot(),
                capability.object().object_type(),
                capability.rights(),
            );
            count += 1;
        }
        count
    }

    /// Delete every capability (the process is torn down). References drop outside the
    /// lock, one at a time.
    pub fn clear(&self) {
        loop {
            let next = {
                let mut table = self.table.lock();
                let handle = table.iter().next().map(|(handle, _)| handle);
                handle.and_then(|handle| table.delete(handle).ok())
            };
            match next {
                Some(capability) => drop(capability),
                None => break,
            }
        }
    }
}
