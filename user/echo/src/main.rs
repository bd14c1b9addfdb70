//! `echo`: the test server of the crash-containment scenario (`test=containment`).
//!
//! Capabilities (from `init`'s containment manifest, `caps=console,names`): the console's
//! endpoints in slots 1 and 2, the name service in slot 3. It makes its own endpoint,
//! registers it as `echo`, and answers each call with `[w0 + 1, w1, w2, w3 ^ w0]`, so a
//! client can tell a right answer from a stale or mixed-up one.
//!
//! Both servers it depends on may die under it: a second thread looks its name up every
//! few ticks and registers again when the name service lost it (a restarted `names`
//! starts empty), or when the registration was refused because the name still belonged
//! to the `echo` that died before this one (`init` tells `names` of that death soon).
#![no_std]
#![no_main]

use abi::{Error, Handle, MessageInfo, PAGE_SIZE};
use rt::ipc;
use rt::proc;
use rt::service::{self, slot, slots};

/// The name clients look up.
const NAME: &str = "echo";
/// Ticks between the watcher's checks of the registration.
const WATCH_TICKS: u64 = 5;
const WATCHER_STACK: u64 = 0x0000_2100_0000_0000;
const WATCHER_STACK_BYTES: u64 = 16 * PAGE_SIZE;

/// The endpoint, for the watcher thread (written once before it starts).
static ENDPOINT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn main(_: u64) -> i64 {
    let Ok(_buffer) = service::ipc_buffer(0) else {
        return 1;
    };
    let Ok(endpoint) = ipc::endpoint_create() else {
        return 2;
    };
    ENDPOINT.store(endpoint.raw(), core::sync::atomic::Ordering::Release);
    if rt::memory_map(WATCHER_STACK, WATCHER_STACK_BYTES, abi::MAP_WRITE).is_err()
        || proc::thread_create(
            watcher,
            WATCHER_STACK + WATCHER_STACK_BYTES,
            0,
            abi::PRIORITY_NORMAL,
        )
        .is_err()
    {
        return 3;
    }
    serve(endpoint)
}

fn serve(endpoint: Handle) -> i64 {
    let mut answer = None;
    loop {
        let received = match answer {
            None => ipc::recv(endpoint),
            Some(words) => ipc::reply_recv(endpoint, MessageInfo::default(), words),
        };
        answer = match received {
            Ok(received) => {
                let [a, b, c, d] = received.words;
                Some([a.wrapping_add(1), b, c, d ^ a])
            }
            // Only the receive's own errors come back (a dead caller is skipped).
            Err(error) => return 100 + i64::from(error.code()),
        };
    }
}

/// Keep the name registered: look it up every [`WATCH_TICKS`]; register when it is
/// missing or not this server's.
extern "C" fn watcher(_: u64) -> ! {
    let code = match watch() {
        Ok(never) => match never {},
        Err(error) => 110 + i64::from(error.code()),
    };
    rt::exit(code)
}

fn watch() -> Result<core::convert::Infallible, Error> {
    let buffer = service::ipc_buffer(1)?;
    let names = slot(slots::SHELL_NAMES);
    let endpoint = Handle::from_raw(ENDPOINT.load(core::sync::atomic::Ordering::Acquire));
    loop {
        let registered = match service::names_lookup(names, &buffer, NAME) {
            Ok(found) => {
                // The name service hands out a copy; only whether it is ours matters.
                let ours = answers(found);
                let _ = ipc::cap_delete(found);
                ours
            }
            Err(_) => false,
        };
        if !registered {
            // Refused while the old owner's name is still there, or while `names` is being
            // restarted: the next round tries again.
            let _ = service::names_register(names, &buffer, NAME, endpoint);
        }
        proc::sleep(WATCH_TICKS)?;
    }
}

/// Whether the endpoint the name leads to answers: this server's does (the main thread
/// serves it); a dead server's is closed (`PeerDied`).
fn answers(found: Handle) -> bool {
    ipc::call(found, MessageInfo::default(), [0; 4]).is_ok()
}

rt::entry!(main);
