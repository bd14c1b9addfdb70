//! `ucore`: the logic of Keel's user-space servers that needs no system call, so it builds
//! for the host and is unit-tested there (as `kcore` is for the kernel).
//!
//! - [`line`]: the console's line discipline (echo, erase, kill line, Ctrl-C, CR/LF, a
//!   bounded line).
//! - [`output`]: the console's output: whole lines from many clients, a prompt kept open.
//! - [`shell`]: the shell's command table and parser.
//! - [`names`]: the name service's registry (names released when their owner dies).
//! - [`manifest`]: `init`'s manifest: which servers start, in which order, with which
//!   capabilities and restart policy.
//! - [`restart`]: `init`'s restart decisions: exponential backoff and crash-loop detection.
//! - [`supervisor`]: `init`'s table of servers: what to start when, deaths, report lines.
//!
//! Principles: every input is hostile (a byte stream from a serial line, a line typed at the
//! shell, a name from any client, a manifest from a boot module): each is bounded, and bad
//! input is an error value, never a panic. Time is in timer ticks passed in by the caller.
//! Nothing here allocates without a bound.
//!
//! Weak spot: the servers that drive this logic (`console`, `names`, `init`, `shell`) need
//! the kernel's IPC, capability and IRQ system calls and do not exist yet.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod line;
pub mod manifest;
pub mod names;
pub mod output;
pub mod restart;
pub mod shell;
pub mod size;
pub mod supervisor;
