//! The kernel invariant checker (test build): a baseline of what the kernel holds — free
//! frames, kernel-heap bytes in use, live objects by kind (`stats::Live`), capabilities in
//! tables, threads — taken before user programs run, compared with the same figures once
//! they are gone; and a consistency test of the IPC and scheduler structures that holds at
//! any moment (both snapshots are taken under the IPC lock, so they are of one moment even
//! while other CPUs run).
//!
//! What the kernel grows and keeps by design is counted apart, so a run that needs more of
//! it than any before it is not taken for a leak:
//! - the frames given to the heap (`heap::frames_held`: they never go back to the frame
//!   allocator) and the page tables of the kernel-stack region (`stacks::table_frames`:
//!   kept with its slots): frames are compared as free frames plus these;
//! - the storage of the tables that grow with the peak and never shrink: the thread and
//!   IPC tables (thread ids in use at once), the threads' event chunks, the kernel-stack
//!   slot lists and the deferred-work queue's room (charged objects alive at once). Heap
//!   bytes are compared as bytes in use less these blocks ([`kept_bytes`]).
//!
//! A leaked heap block still shows in the heap bytes, a frame leaked outside the heap in
//! the frames.
//!
//! Consistency, for every thread slot:
//! - a thread in the run queue is ready; a ready thread (not the running one, not idle) is
//!   in the run queue;
//! - a thread the IPC state has sending, receiving, waiting or awaiting a reply exists and
//!   is blocked — or was killed and has not ended yet;
//! - a thread linked into an endpoint or notification queue is in a queued IPC state;
//! - an empty slot has no IPC state, no queue link and no reply slot;
//! - a reply slot naming a caller names a thread that awaits this thread's reply;
//! - a run queue holding a thread another CPU may take is marked so (the scheduler's
//!   `maybe_movable`, which idle CPUs look at before a queue).
//!
//! With no user thread left, also: no thread in any IPC state and no deferred work queued.
//!
//! The fuzz scenarios always run it; `kcheck=on` adds it around the `user` scenario.

use kcore::ipc::{ReplySlot, State as IpcState};

use crate::ipc;
use crate::mm::{heap, stacks};
use crate::obj::pending;
use crate::println;
use crate::stats::{self, Live};
use crate::task::sched;
use crate::task::thread::{self, State};
use crate::testing::ktest::Suite;

/// What the kernel holds when no user program runs.
#[derive(Clone, Copy)]
pub struct Baseline {
    pub free_frames: u64,
    /// Frames the heap and the kernel-stack region's page tables hold (counted with the
    /// free ones: module docs).
    pub kept_frames: u64,
    /// Heap bytes in use, less the storage the kernel keeps ([`kept_bytes`]).
    pub heap_bytes: usize,
    /// Heap bytes of the storage the kernel keeps ([`kept_bytes`]).
    pub kept_bytes: usize,
    pub live: [u64; Live::ALL.len()],
    pub threads: usize,
}

/// Threads in the table now.
fn thread_count() -> usize {
    ipc::snapshot().1.iter().flatten().count()
}

/// Deferred work items the checker makes room for before its baseline: the queue keeps
/// room for every charged object alive at once (`pending::promise`). A short fuzz run's
/// sixteen processes at most (four fuzzers, three children each) hold some 200 each (a
/// table fill of 128, the objects they remember, helpers' endpoints); a long run reaches
/// more, up to what their budgets allow, and the room it adds is counted apart (module
/// docs).
const PENDING_ROOM: usize = 4096;
/// Kernel stacks the checker has made once, and thread ids the thread and IPC tables
/// serve before the baseline: what a default fuzz run uses at once. A run with more
/// threads at once grows them, and what that keeps is counted apart (module docs).
const SETTLE_THREADS: usize = 1024;

/// Touch what the kernel grows once and keeps (the kernel-stack region's page tables and
/// its free list, the deferred-work queue, the per-thread tables), so a run that needs
/// more of them at once than any before it does not look like a leak of frames or heap
/// bytes.
pub fn settle() {
    pending::reserve(PENDING_ROOM);
    let _ = sched::reserve_ids(SETTLE_THREADS);
    let _ = ipc::reserve(SETTLE_THREADS);
    let taken: alloc::vec::Vec<_> = (0..SETTLE_THREADS)
        .map_while(|_| stacks::allocate().ok())
        .collect();
    for stack in taken {
        stacks::free(stack);
    }
}

/// Heap bytes the storage the kernel grows and keeps takes now (module docs): every block
/// of the thread and IPC tables, the event chunks, the stack-slot lists and the
/// deferred-work queue, as the heap counts them.
fn kept_bytes() -> usize {
    let mut total = 0;
    let mut add = |bytes: usize| total += heap::block_bytes(bytes);
    sched::table_storage(&mut add);
    ipc::table_storage(&mut add);
    thread::event_storage(&mut add);
    stacks::list_storage(&mut add);
    pending::queue_storage(&mut add);
    total
}

/// Take the baseline (after [`settle`] and with no user program running).
pub fn baseline() -> Baseline {
    let kept_bytes = kept_bytes();
    Baseline {
        free_frames: crate::mm::free_frames(),
        kept_frames: heap::frames_held() + stacks::table_frames(),
        heap_bytes: heap::allocated_bytes().saturating_sub(kept_bytes),
        kept_bytes,
        live: Live::ALL.map(stats::live),
        threads: thread_count(),
    }
}

/// Compare with `baseline` (every user program gone): one `ok`/`not ok` line per
/// figure, named `<prefix> …`, the counts in each.
pub fn compare(suite: &mut Suite, prefix: &str, baseline: &Baseline) {
    let now = self::baseline();
    let mut leaked = 0u64;
    for (index, kind) in Live::ALL.into_iter().enumerate() {
        let (before, after) = (baseline.live[index], now.live[index]);
        if before != after {
            println!(
                "not ok {prefix} leaked objects: {} {before} at baseline, {after} after the run",
                kind.name()
            );
            leaked += after.abs_diff(before);
            suite.add(0, 1);
        }
    }
    if now.threads != baseline.threads {
        println!(
            "not ok {prefix} leaked objects: threads {} at baseline, {} after the run",
            baseline.threads, now.threads
        );
        leaked += now.threads.abs_diff(baseline.threads) as u64;
        suite.add(0, 1);
    }
    if leaked == 0 {
        println!(
            "ok {prefix} leaked objects 0 (endpoints {}, notifications {}, processes {}, memory regions {}, capabilities {}, threads {}: as at baseline)",
            now.live[0], now.live[1], now.live[2], now.live[3], now.live[4], now.threads
        );
        suite.add(1, 0);
    }
    // The heap's frames, the stack region's page tables and the tables' storage are kept
    // by design (module docs).
    let frames_growth = now.kept_frames.saturating_sub(baseline.kept_frames);
    let kept_growth = now.kept_bytes.saturating_sub(baseline.kept_bytes);
    if now.free_frames + now.kept_frames == baseline.free_frames + baseline.kept_frames {
        println!(
            "ok {prefix} frames back at baseline ({} free, {frames_growth} more kept by the heap and the stack region's page tables)",
            now.free_frames
        );
        suite.add(1, 0);
    } else {
        println!(
            "not ok {prefix} frames: {} free and {} kept at baseline, {} and {} after the run",
            baseline.free_frames, baseline.kept_frames, now.free_frames, now.kept_frames
        );
        suite.add(0, 1);
    }
    if now.heap_bytes == baseline.heap_bytes {
        println!(
            "ok {prefix} heap bytes back at baseline ({} in use, besides the tables the kernel keeps, {kept_growth} bytes larger)",
            now.heap_bytes
        );
        suite.add(1, 0);
    } else {
        println!(
            "not ok {prefix} heap bytes: {} in use at baseline, {} after the run (both besides the tables the kernel keeps)",
            baseline.heap_bytes, now.heap_bytes
        );
        suite.add(0, 1);
    }
}

/// The consistency test (module docs); `idle` once no user program runs (the stricter
/// rules). `Err` names
/// the first broken rule and the thread.
pub fn consistency(idle: bool) -> Result<(), (&'static str, usize)> {
    let (ipc, threads) = ipc::snapshot();
    let mut user_threads = 0;
    for id in 1..threads.len() {
        let (ipc_state, linked, reply) = ipc[id];
        let Some(thread) = threads[id] else {
            if ipc_state != IpcState::Idle {
                return Err(("an empty thread slot has an IPC state", id));
            }
            if linked {
                return Err(("an empty thread slot is linked into an IPC queue", id));
            }
            if reply != ReplySlot::Empty {
                return Err(("an empty thread slot holds a reply slot", id));
            }
            continue;
        };
        if thread.user && thread.state != State::Dead {
            user_threads += 1;
        }
        if thread.queued && thread.state != State::Ready {
            return Err(("a thread in the run queue is not ready", id));
        }
        if thread.state == State::Ready && !thread.queued && !thread.current && !thread.idle {
            return Err(("a ready thread is not in the run queue", id));
        }
        let in_ipc = ipc_state != IpcState::Idle;
        if in_ipc && thread.state != State::Blocked && !thread.killed {
            return Err(("a thread blocked in IPC is not blocked", id));
        }
        if in_ipc && thread.state == State::Dead {
            return Err(("a dead thread is left in an IPC state", id));
        }
        let queued_state = matches!(
            ipc_state,
            IpcState::Sending { .. } | IpcState::Receiving | IpcState::Waiting
        );
        if linked != queued_state {
            return Err(("a thread's IPC queue link does not match its IPC state", id));
        }
        if let ReplySlot::Caller(caller) = reply {
            let awaiting = ipc
                .get(caller)
                .is_some_and(|(state, ..)| *state == IpcState::AwaitingReply { server: id });
            if !awaiting {
                return Err((
                    "a reply slot names a thread that does not await this thread's reply",
                    id,
                ));
            }
        }
    }
    if let Some(cpu) = sched::movable_mark_missing() {
        return Err((
            "a run queue holds a thread another CPU may take but is not marked so",
            cpu,
        ));
    }
    if idle {
        if user_threads != 0 {
            return Err(("a user thread is left after the run", 0));
        }
        if let Some(id) = (1..ipc.len()).find(|&id| ipc[id].0 != IpcState::Idle || ipc[id].1) {
            return Err(("a thread is left in an IPC state after the run", id));
        }
        if pending::any() {
            return Err(("deferred object work is left queued after the run", 0));
        }
    }
    Ok(())
}

/// Whether any user thread is left (not dead).
pub fn user_threads_left() -> bool {
    ipc::snapshot()
        .1
        .iter()
        .flatten()
        .any(|thread| thread.user && thread.state != State::Dead)
}
