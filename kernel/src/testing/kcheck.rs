//! The kernel invariant checker (test build): a baseline of what the kernel holds — free
//! frames, kernel-heap bytes in use, live objects by kind (`stats::Live`), capabilities in
//! tables, threads — taken before user programs run, compared with the same figures once
//! they are gone; and a consistency test of the IPC and scheduler structures that holds at
//! any moment (both snapshots are taken under the IPC lock, so they are of one moment even
//! while other CPUs run).
//!
//! Consistency, for every thread slot:
//! - a thread in the run queue is ready; a ready thread (not the running one, not idle) is
//!   in the run queue;
//! - a thread the IPC state has sending, receiving, waiting or awaiting a reply exists and
//!   is blocked — or was killed and has not ended yet;
//! - a thread linked into an endpoint or notification queue is in a queued IPC state;
//! - an empty slot has no IPC state, no queue link and no reply slot;
//! - a reply slot naming a caller names a thread that awaits this thread's reply.
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
use crate::task::sched::{self, MAX_THREADS};
use crate::task::thread::State;
use crate::testing::ktest::Suite;

/// What the kernel holds when no user program runs.
#[derive(Clone, Copy)]
pub struct Baseline {
    pub free_frames: u64,
    pub heap_bytes: usize,
    pub live: [u64; Live::ALL.len()],
    pub threads: usize,
}

/// Threads in the table now.
fn thread_count() -> usize {
    sched::snapshot().iter().flatten().count()
}

/// Deferred work items the checker makes room for: the queue keeps room for every charged
/// object alive at once (`pending::promise`), and a fuzz run's sixteen processes at most
/// (four fuzzers, three children each) hold some 200 each (a table fill of 128, the
/// objects they remember, helpers' endpoints).
const PENDING_ROOM: usize = 4096;

/// Touch what the kernel grows once and keeps (the kernel-stack region's page tables and
/// its free list, the deferred-work queue), so a run that needs more of them at once than
/// any before it does not look like a leak of frames or heap bytes.
pub fn settle() {
    pending::reserve(PENDING_ROOM);
    let mut taken = [None; MAX_THREADS];
    for place in taken.iter_mut() {
        *place = stacks::allocate().ok();
    }
    for stack in taken.into_iter().flatten() {
        stacks::free(stack);
    }
}

/// Take the baseline (after [`settle`] and with no user program running).
pub fn baseline() -> Baseline {
    Baseline {
        free_frames: crate::mm::free_frames(),
        heap_bytes: heap::allocated_bytes(),
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
    if now.free_frames == baseline.free_frames {
        println!(
            "ok {prefix} frames back at baseline ({} free)",
            now.free_frames
        );
        suite.add(1, 0);
    } else {
        println!(
            "not ok {prefix} frames: {} free at baseline, {} after the run",
            baseline.free_frames, now.free_frames
        );
        suite.add(0, 1);
    }
    if now.heap_bytes == baseline.heap_bytes {
        println!(
            "ok {prefix} heap bytes back at baseline ({} in use)",
            now.heap_bytes
        );
        suite.add(1, 0);
    } else {
        println!(
            "not ok {prefix} heap bytes: {} in use at baseline, {} after the run",
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
    for id in 1..MAX_THREADS {
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
    if idle {
        if user_threads != 0 {
            return Err(("a user thread is left after the run", 0));
        }
        if let Some(id) = (1..MAX_THREADS).find(|&id| ipc[id].0 != IpcState::Idle || ipc[id].1) {
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
    sched::snapshot()
        .iter()
        .flatten()
        .any(|thread| thread.user && thread.state != State::Dead)
}
