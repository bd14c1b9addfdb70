//! Keel's portable kernel logic that needs no hardware: it builds for the host and is
//! unit-tested there (the hubris `kerncore` split, DESIGN.md §1).
//!
//! Today: the kernel command line, the boot memory summary, the frame allocator's
//! bookkeeping, capability tables, the IPC state machine, scheduler run queues, the
//! sleepers' deadline heap, the growth of per-thread tables and ELF checks.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bootmem;
pub mod captable;
pub mod cmdline;
pub mod deadlines;
pub mod elf;
pub mod frames;
pub mod ipc;
pub mod memory;
pub mod runqueue;
pub mod table;
