//! The IPC and capability tests: a client and a server, each its own `testsuite`
//! process, started by the kernel's `user` scenario with capabilities pre-installed:
//!
//! | handle | server | client |
//! | --- | --- | --- |
//! | [`ENDPOINT`] (slot 0) | the shared endpoint, `READ WRITE GRANT` (receives) | the same endpoint, `WRITE CALL GRANT` (no `READ`: when the server is gone, nobody can receive) |
//! | [`SERVER_PROCESS`] (slot 1) | — | the server's process, `CONTROL` |
//! | [`MODULE`] (slot 2) | — | the `testsuite` boot module, `READ MAP` |
//!
//! The client prints one `ok`/`not ok` line per test; its exit code carries the counts.
//! Its last test tells the server to exit without replying: the pending call must fail
//! with `PeerDied`, and so must the next one (no receive-capable capability is left).

use abi::{Error, Handle, MessageInfo, ObjectType, Rights, Syscall};
use rt::ipc::{self, IpcBuffer, Received};

use crate::Results;

pub const ENDPOINT: Handle = Handle::new(0, 1);
pub const SERVER_PROCESS: Handle = Handle::new(1, 1);
pub const MODULE: Handle = Handle::new(2, 1);

/// Round trips of the ping-pong test.
const ROUND_TRIPS: u64 = 10_000;
/// Where each side maps its IPC buffer.
const BUFFER: u64 = 0x0000_3000_0000_0000;
/// Words in the long message: 1 KiB.
const LONG_WORDS: usize = 128;

/// Labels of the requests the server understands.
const PING: u32 = 1;
const LONG: u32 = 2;
const CAP: u32 = 3;
const BADGE: u32 = 4;
const EXIT: u32 = 5;
/// A `send` (no reply): signal the notification it carries with [`SIGNAL_BITS`].
const SIGNAL_LATER: u32 = 6;
/// A `send` (no reply): count it and fold its word 0 into an order-sensitive hash.
const NOTE: u32 = 7;
/// A call: reply with the count and hash of the notes so far.
const NOTES: u32 = 8;
/// A call: answer it, and every call after it, through a new copy of the server's
/// endpoint capability; word 0 of the reply is 1 when the copy was made.
const RENAME: u32 = 9;
/// A call: delete the copy [`RENAME`] made, try `reply_recv` through it (which must fail
/// with `InvalidHandle` and answer nobody), then answer through [`ENDPOINT`] again with
/// word 0 = 1 when it failed so.
const DROP_SERVING: u32 = 10;
/// A call: copy and delete another capability (a removal from the server's table that
/// does not touch the handle it answers through), then answer with word 0 = 1.
const DROP_OTHER: u32 = 11;
/// The server's answer to a label it does not know.
const UNKNOWN: u32 = 0xffff;
/// Bits the server signals on a notification it received.
const SIGNAL_BITS: u64 = 0x5a;

fn info(label: u32, words: usize, caps: usize) -> MessageInfo {
    MessageInfo::new(label, words, caps).unwrap_or_default()
}

/// The ping reply the server computes, checked by the client.
fn pong(words: [u64; 4]) -> [u64; 4] {
    [
        words[0].wrapping_add(1),
        words[1] ^ 0x5555_aaaa_5555_aaaa,
        words[2].rotate_left(13),
        words[0]
            .wrapping_add(words[1])
            .wrapping_add(words[2])
            .wrapping_add(words[3]),
    ]
}

/// The word `index` of long message number `seed`.
fn long_word(seed: u64, index: usize) -> u64 {
    (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed
}

/// The server: answer requests until told to exit.
pub fn server() -> i64 {
    let Ok(buffer) = IpcBuffer::map(BUFFER) else {
        return 10;
    };
    let mut request = match ipc::recv(ENDPOINT) {
        Ok(request) => request,
        Err(_) => return 11,
    };
    let (mut notes, mut hash) = (0u64, 0u64);
    // The handle the server answers and receives through.
    let mut serving = ENDPOINT;
    loop {
        let (reply_info, words) = match request.info.label() {
            // Sent, not called: `reply_recv` finds no caller and only receives.
            SIGNAL_LATER => {
                let handle = buffer.cap(0);
                let _ = ipc::signal(handle, SIGNAL_BITS);
                let _ = ipc::cap_delete(handle);
                (info(0, 0, 0), [0; 4])
            }
            NOTE => {
                notes += 1;
                hash = hash.wrapping_mul(31).wrapping_add(request.words[0]);
                (info(0, 0, 0), [0; 4])
            }
            NOTES => (info(NOTES, 2, 0), [notes, hash, 0, 0]),
            PING => (info(PING, 4, 0), pong(request.words)),
            LONG => {
                // Echo every word inverted; word 0 of the reply also carries the sum.
                let count = request.info.words();
                let mut sum = 0u64;
                for index in 0..count {
                    let word = if index < 4 {
                        request.words[index]
                    } else {
                        buffer.word(index)
                    };
                    sum = sum.wrapping_add(word);
                    if index >= 4 {
                        buffer.set_word(index, !word);
                    }
                }
                let mut words = request.words.map(|word| !word);
                words[0] = sum;
                (info(LONG, count, 0), words)
            }
            CAP => {
                let received = request.info.caps();
                let handle = buffer.cap(0);
                let kind = ipc::cap_identify(handle).map(|(kind, _)| kind as u64);
                let signalled = ipc::signal(handle, SIGNAL_BITS).is_ok();
                let deleted = ipc::cap_delete(handle).is_ok();
                (
                    info(CAP, 4, 0),
                    [
                        received as u64,
                        kind.unwrap_or(0),
                        u64::from(signalled),
                        u64::from(deleted),
                    ],
                )
            }
            BADGE => (info(BADGE, 1, 0), [request.badge, 0, 0, 0]),
            RENAME => match ipc::cap_copy(ENDPOINT, Rights::ALL) {
                Ok(copy) => {
                    serving = copy;
                    (info(RENAME, 1, 0), [1, 0, 0, 0])
                }
                Err(_) => (info(RENAME, 1, 0), [0; 4]),
            },
            DROP_SERVING => {
                let deleted = ipc::cap_delete(serving).is_ok();
                // Through the deleted handle: this must answer nobody.
                let failed = matches!(
                    ipc::reply_recv(serving, info(DROP_SERVING, 1, 0), [u64::MAX, 0, 0, 0]),
                    Err(Error::InvalidHandle)
                );
                serving = ENDPOINT;
                (
                    info(DROP_SERVING, 1, 0),
                    [u64::from(deleted && failed), 0, 0, 0],
                )
            }
            DROP_OTHER => {
                let dropped = ipc::cap_copy(ENDPOINT, Rights::ALL)
                    .and_then(ipc::cap_delete)
                    .is_ok();
                (info(DROP_OTHER, 1, 0), [u64::from(dropped), 0, 0, 0])
            }
            // Exit with the call unanswered: the client's call must fail with PeerDied.
            EXIT => return 0,
            _ => (info(UNKNOWN, 0, 0), [0; 4]),
        };
        request = match ipc::reply_recv(serving, reply_info, words) {
            Ok(request) => request,
            Err(_) => return 12,
        };
    }
}

/// The client: every IPC and capability test, in order; the server's exit comes last.
pub fn client(results: &mut Results) {
    ping_pong(results);
    let buffer = match IpcBuffer::map(BUFFER) {
        Ok(buffer) => buffer,
        Err(_) => {
            results.check(
                "user ipc buffer set",
                Err("cannot map or register the buffer"),
            );
            return;
        }
    };
    results.check("user ipc buffer set", Ok(()));
    long_message(results, &buffer);
    capability_transfer(results, &buffer);
    badge(results);
    reply_recv_handles(results);
    sends(results, &buffer);
    capability_rules(results);
    notifications(results);
    bad_arguments(results, &buffer);
    dead_server(results);
}

fn ping_pong(results: &mut Results) {
    let mut outcome = Ok(());
    let mut checksum = 0u64;
    for round in 0..ROUND_TRIPS {
        let words = [round, round.wrapping_mul(31), !round, round << 7];
        match ipc::call(ENDPOINT, info(PING, 4, 0), words) {
            Ok(reply) if reply.words == pong(words) && reply.info.label() == PING => {
                checksum = checksum.wrapping_add(reply.words[3]);
            }
            Ok(_) => {
                outcome = Err("a reply had the wrong payload");
                break;
            }
            Err(_) => {
                outcome = Err("a call failed");
                break;
            }
        }
    }
    // The sum of every reply's word 3, computed independently.
    let expected = (0..ROUND_TRIPS).fold(0u64, |sum, round| {
        sum.wrapping_add(
            round
                .wrapping_add(round.wrapping_mul(31))
                .wrapping_add(!round)
                .wrapping_add(round << 7),
        )
    });
    if outcome.is_ok() && checksum != expected {
        outcome = Err("the checksum over all replies is wrong");
    }
    results.check(
        "user ipc ping-pong between two processes (10000 round trips, payload checksums)",
        outcome,
    );
}

fn long_message(results: &mut Results, buffer: &IpcBuffer) {
    let seed = 0x1234_5678;
    let words: [u64; 4] = core::array::from_fn(|index| long_word(seed, index));
    for index in 4..LONG_WORDS {
        buffer.set_word(index, long_word(seed, index));
    }
    let expected_sum =
        (0..LONG_WORDS).fold(0u64, |sum, index| sum.wrapping_add(long_word(seed, index)));
    let outcome = match ipc::call(ENDPOINT, info(LONG, LONG_WORDS, 0), words) {
        Ok(reply) if reply.info.words() != LONG_WORDS => Err("the reply has the wrong length"),
        Ok(reply) if reply.words[0] != expected_sum => Err("the server saw other words"),
        Ok(reply) if reply.words[1..] != [!words[1], !words[2], !words[3]] => {
            Err("wrong register words in the reply")
        }
        Ok(_) if (4..LONG_WORDS).any(|index| buffer.word(index) != !long_word(seed, index)) => {
            Err("wrong buffer words in the reply")
        }
        Ok(_) => Ok(()),
        Err(_) => Err("the call failed"),
    };
    results.check(
        "user ipc long message (1 KiB through the IPC buffer, both ways)",
        outcome,
    );
}

fn capability_transfer(results: &mut Results, buffer: &IpcBuffer) {
    let outcome = (|| {
        let notification = ipc::notification_create().map_err(|_| "cannot create")?;
        let granted = ipc::cap_copy(notification, Rights::SIGNAL | Rights::GRANT)
            .map_err(|_| "cannot copy")?;
        buffer.set_cap(0, granted);
        let reply = ipc::call(ENDPOINT, info(CAP, 0, 1), [0; 4]).map_err(|_| "call failed")?;
        if reply.words[0] != 1 {
            return Err("the server did not receive one capability");
        }
        if reply.words[1] != ObjectType::Notification as u64 {
            return Err("the received capability is not a notification");
        }
        if reply.words[2] != 1 || reply.words[3] != 1 {
            return Err("the server could not signal or delete it");
        }
        if ipc::poll(notification) != Ok(SIGNAL_BITS) {
            return Err("the server's signal did not arrive");
        }
        // The sender keeps its own capability.
        ipc::cap_identify(granted).map_err(|_| "the sender lost its capability")?;
        ipc::cap_delete(granted).map_err(|_| "cannot delete")?;
        ipc::cap_delete(notification).map_err(|_| "cannot delete")?;
        Ok(())
    })();
    results.check(
        "user ipc capability transfer (a notification sent, then signalled by the receiver)",
        outcome,
    );
    // A capability without GRANT cannot travel.
    let outcome = (|| {
        let notification = ipc::notification_create().map_err(|_| "cannot create")?;
        let no_grant = ipc::cap_copy(notification, Rights::SIGNAL).map_err(|_| "cannot copy")?;
        buffer.set_cap(0, no_grant);
        let result = ipc::call(ENDPOINT, info(CAP, 0, 1), [0; 4]);
        let _ = ipc::cap_delete(no_grant);
        let _ = ipc::cap_delete(notification);
        match result {
            Err(Error::PermissionDenied) => Ok(()),
            _ => Err("not PermissionDenied"),
        }
    })();
    results.check(
        "user ipc capability without GRANT is not transferred",
        outcome,
    );
}

fn badge(results: &mut Results) {
    let outcome = (|| {
        let badged = ipc::cap_mint(ENDPOINT, 0xb4d6e, Rights::ALL).map_err(|_| "mint failed")?;
        let reply = ipc::call(badged, info(BADGE, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        if reply.words[0] != 0xb4d6e {
            return Err("the server saw another badge");
        }
        if reply.badge != 0 {
            return Err("a reply carries a badge");
        }
        let reply = ipc::call(ENDPOINT, info(BADGE, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        if reply.words[0] != 0 {
            return Err("the unbadged capability delivered a badge");
        }
        if ipc::cap_mint(badged, 7, Rights::ALL) != Err(Error::InvalidArgument) {
            return Err("a badged capability was minted again");
        }
        let copy = ipc::cap_copy(badged, Rights::ALL).map_err(|_| "copy failed")?;
        let reply = ipc::call(copy, info(BADGE, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        if reply.words[0] != 0xb4d6e {
            return Err("a copy lost the badge");
        }
        ipc::cap_delete(copy).map_err(|_| "delete failed")?;
        ipc::cap_delete(badged).map_err(|_| "delete failed")?;
        Ok(())
    })();
    results.check("user ipc badge delivered to the server", outcome);
}

/// Pings until `rounds` answers came back right.
fn pings(rounds: u64) -> Result<(), &'static str> {
    for round in 0..rounds {
        let words = [round, 7, 11, 13];
        let reply = ipc::call(ENDPOINT, info(PING, 4, 0), words).map_err(|_| "a ping failed")?;
        if reply.info.label() != PING || reply.words != pong(words) {
            return Err("a ping had the wrong answer");
        }
    }
    Ok(())
}

/// The server answers through a copy of its endpoint capability, then deletes the copy:
/// `reply_recv` through the deleted handle fails with `InvalidHandle` and answers nobody
/// (the `reply_recv` fast path checks the handle without a lookup, so the deletion must
/// reach it), and the server's next `reply_recv` through [`ENDPOINT`] answers the call.
/// Another capability deleted from the server's table changes nothing it answers.
fn reply_recv_handles(results: &mut Results) {
    let outcome = (|| {
        let reply = ipc::call(ENDPOINT, info(RENAME, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        if reply.words[0] != 1 {
            return Err("the server could not copy its capability");
        }
        pings(3)?;
        let reply =
            ipc::call(ENDPOINT, info(DROP_OTHER, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        if reply.info.label() != DROP_OTHER || reply.words[0] != 1 {
            return Err("the server could not copy and delete another capability");
        }
        pings(3)?;
        let reply =
            ipc::call(ENDPOINT, info(DROP_SERVING, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        if reply.words[0] == u64::MAX {
            return Err("reply_recv through a deleted handle answered the call");
        }
        if reply.info.label() != DROP_SERVING || reply.words[0] != 1 {
            return Err("reply_recv through a deleted handle did not fail with InvalidHandle");
        }
        pings(3)
    })();
    results.check(
        "user ipc reply_recv through a handle deleted while serving fails with InvalidHandle and answers nobody",
        outcome,
    );
}

/// `send` (no reply) in both rendezvous orders, and a thread blocked in `wait` woken by
/// another process's `signal`.
fn sends(results: &mut Results, buffer: &IpcBuffer) {
    // The server waits in `recv`: the first send meets it and returns at once (the server
    // is only made ready); the second finds no receiver and waits in the queue until the
    // server, done with the first, receives again (the sender-first order).
    let outcome = (|| {
        for word in [11, 22, 33] {
            ipc::send(ENDPOINT, info(NOTE, 1, 0), [word, 0, 0, 0]).map_err(|_| "a send failed")?;
        }
        let reply = ipc::call(ENDPOINT, info(NOTES, 0, 0), [0; 4]).map_err(|_| "call failed")?;
        let expected = [11u64, 22, 33]
            .iter()
            .fold(0u64, |hash, word| hash.wrapping_mul(31).wrapping_add(*word));
        if reply.words[0] != 3 {
            return Err("the server did not receive every send");
        }
        if reply.words[1] != expected {
            return Err("the sends arrived out of order or changed");
        }
        Ok(())
    })();
    results.check(
        "user ipc send without reply, receiver first and sender first, in order",
        outcome,
    );
    // Send a notification to the server, then block in `wait` until the server signals it
    // (the server runs once this thread blocks; unless a timer tick preempts this thread
    // in between, the bits are not there yet when `wait` starts).
    let outcome = (|| {
        let notification = ipc::notification_create().map_err(|_| "cannot create")?;
        let granted = ipc::cap_copy(notification, Rights::SIGNAL | Rights::GRANT)
            .map_err(|_| "cannot copy")?;
        buffer.set_cap(0, granted);
        ipc::send(ENDPOINT, info(SIGNAL_LATER, 0, 1), [0; 4]).map_err(|_| "send failed")?;
        let bits = ipc::wait(notification);
        let _ = ipc::cap_delete(granted);
        let _ = ipc::cap_delete(notification);
        match bits {
            Ok(SIGNAL_BITS) => Ok(()),
            Ok(_) => Err("wait returned other bits"),
            Err(_) => Err("wait failed"),
        }
    })();
    results.check(
        "user notification wait woken by another process's signal",
        outcome,
    );
}

fn capability_rules(results: &mut Results) {
    // Stale handles.
    let outcome = (|| {
        let copy = ipc::cap_copy(ENDPOINT, Rights::ALL).map_err(|_| "copy failed")?;
        ipc::cap_delete(copy).map_err(|_| "delete failed")?;
        if ipc::cap_identify(copy) != Err(Error::InvalidHandle) {
            return Err("identify accepted a deleted handle");
        }
        if ipc::call(copy, info(PING, 0, 0), [0; 4]) != Err(Error::InvalidHandle) {
            return Err("call accepted a deleted handle");
        }
        if ipc::cap_delete(copy) != Err(Error::InvalidHandle) {
            return Err("a handle was deleted twice");
        }
        // The slot is reused with a new generation; the old handle still fails.
        let reused = ipc::cap_copy(ENDPOINT, Rights::ALL).map_err(|_| "copy failed")?;
        let stale_still = reused.slot() == copy.slot()
            && reused != copy
            && ipc::cap_identify(copy) == Err(Error::InvalidHandle);
        ipc::cap_delete(reused).map_err(|_| "delete failed")?;
        if !stale_still {
            return Err("the reused slot answered the stale handle");
        }
        Ok(())
    })();
    results.check(
        "user stale handle fails after cap_delete (and after slot reuse)",
        outcome,
    );
    // Rights never grow.
    let outcome = (|| {
        let (_, held) = ipc::cap_identify(ENDPOINT).map_err(|_| "identify failed")?;
        let write_only = ipc::cap_copy(ENDPOINT, Rights::WRITE).map_err(|_| "copy failed")?;
        let regrown = ipc::cap_copy(write_only, Rights::ALL).map_err(|_| "copy failed")?;
        let (kind, rights) = ipc::cap_identify(regrown).map_err(|_| "identify failed")?;
        let call = ipc::call(regrown, info(PING, 0, 0), [0; 4]);
        let widened = ipc::cap_copy(ENDPOINT, Rights::ALL).map_err(|_| "copy failed")?;
        let (_, widened_rights) = ipc::cap_identify(widened).map_err(|_| "identify failed")?;
        let minted = ipc::cap_mint(ENDPOINT, 9, Rights::ALL).map_err(|_| "mint failed")?;
        let (_, minted_rights) = ipc::cap_identify(minted).map_err(|_| "identify failed")?;
        for handle in [write_only, regrown, widened, minted] {
            ipc::cap_delete(handle).map_err(|_| "delete failed")?;
        }
        if kind != ObjectType::Endpoint || rights != Rights::WRITE {
            return Err("a copy of a reduced copy regained rights");
        }
        if call != Err(Error::PermissionDenied) {
            return Err("call without CALL was not PermissionDenied");
        }
        if widened_rights != held || minted_rights != held {
            return Err("a copy or mint with a wider mask gained rights");
        }
        if held.contains(Rights::READ) {
            return Err("the client's endpoint capability can receive");
        }
        Ok(())
    })();
    results.check(
        "user rights never grow (copy, copy of a copy, mint)",
        outcome,
    );
    // Pre-installed objects of other types.
    let outcome = match (ipc::cap_identify(SERVER_PROCESS), ipc::cap_identify(MODULE)) {
        (Ok((ObjectType::Process, process)), Ok((ObjectType::Memory, memory)))
            if process == Rights::CONTROL && memory == Rights::READ | Rights::MAP =>
        {
            Ok(())
        }
        _ => Err("wrong type or rights"),
    };
    results.check(
        "user cap_identify names process and memory capabilities",
        outcome,
    );
    // The table's bound (its growth and the budget's tests are in `limits.rs`).
    let outcome = (|| {
        let mut copies: alloc::vec::Vec<Handle> = alloc::vec::Vec::new();
        copies
            .try_reserve_exact(abi::CAP_TABLE_MAX_SLOTS)
            .map_err(|_| "no heap for the handles")?;
        let failure = loop {
            match ipc::cap_copy(ENDPOINT, Rights::ALL) {
                Ok(handle) if copies.len() < abi::CAP_TABLE_MAX_SLOTS => copies.push(handle),
                Ok(_) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        let endpoint_failure = ipc::endpoint_create();
        let full = copies.len();
        for handle in &copies {
            let _ = ipc::cap_delete(*handle);
        }
        if failure != Err(Error::NoSpace) {
            rt::println!("testsuite: copy {full} ended with {failure:?}");
            return Err("a table of CAP_TABLE_MAX_SLOTS did not refuse a copy with NoSpace");
        }
        if endpoint_failure != Err(Error::NoSpace) {
            return Err("a full table did not refuse endpoint_create with NoSpace");
        }
        if ipc::cap_copy(ENDPOINT, Rights::ALL)
            .map(ipc::cap_delete)
            .is_err()
        {
            return Err("the emptied table refused a copy");
        }
        Ok(())
    })();
    results.check(
        "user a capability table at CAP_TABLE_MAX_SLOTS returns NoSpace",
        outcome,
    );
}

fn notifications(results: &mut Results) {
    let outcome = (|| {
        let notification = ipc::notification_create().map_err(|_| "create failed")?;
        if ipc::poll(notification) != Ok(0) {
            return Err("a new notification has bits");
        }
        ipc::signal(notification, 0b01).map_err(|_| "signal failed")?;
        ipc::signal(notification, 0b10).map_err(|_| "signal failed")?;
        if ipc::wait(notification) != Ok(0b11) {
            return Err("wait did not return the accumulated bits");
        }
        if ipc::poll(notification) != Ok(0) {
            return Err("wait did not clear the word");
        }
        let wait_only = ipc::cap_copy(notification, Rights::WAIT).map_err(|_| "copy failed")?;
        let signal = ipc::signal(wait_only, 1);
        ipc::cap_delete(wait_only).map_err(|_| "delete failed")?;
        ipc::cap_delete(notification).map_err(|_| "delete failed")?;
        if signal != Err(Error::PermissionDenied) {
            return Err("signal without SIGNAL was not PermissionDenied");
        }
        Ok(())
    })();
    results.check("user notification signal, wait and poll", outcome);
}

/// Every new system call with each class of bad argument: its documented error.
fn bad_arguments(results: &mut Results, buffer: &IpcBuffer) {
    let bogus = Handle::new(77, 1);
    let null = Handle::NULL;
    let raw = |call: Syscall, handle: Handle, info: u64| {
        ipc::ipc_raw(call, handle.raw(), info, [0; 4]).map(|_| 0)
    };
    let handle = |value: Result<Handle, Error>| value.map(Handle::raw);
    let unit = |value: Result<(), Error>| value.map(|()| 0);
    let identify = |value: Result<(ObjectType, Rights), Error>| value.map(|_| 0);
    let Ok(notification) = ipc::notification_create() else {
        results.check(
            "user bad arguments: a notification to test with",
            Err("create failed"),
        );
        return;
    };
    let ping = info(PING, 0, 0).raw();
    let cases: [(&str, Result<u64, Error>, Error); 33] = [
        (
            "cap_copy invalid handle",
            handle(ipc::cap_copy(bogus, Rights::ALL)),
            Error::InvalidHandle,
        ),
        (
            "cap_copy null handle",
            handle(ipc::cap_copy(null, Rights::ALL)),
            Error::InvalidHandle,
        ),
        (
            "cap_copy reserved rights bits",
            handle(ipc::cap_copy_raw(ENDPOINT, 1 << 20)),
            Error::InvalidArgument,
        ),
        (
            "cap_delete invalid handle",
            unit(ipc::cap_delete(bogus)),
            Error::InvalidHandle,
        ),
        (
            "cap_mint invalid handle",
            handle(ipc::cap_mint(bogus, 1, Rights::ALL)),
            Error::InvalidHandle,
        ),
        (
            "cap_mint of a notification",
            handle(ipc::cap_mint(notification, 1, Rights::ALL)),
            Error::InvalidArgument,
        ),
        (
            "cap_mint badge 0",
            handle(ipc::cap_mint(ENDPOINT, 0, Rights::ALL)),
            Error::InvalidArgument,
        ),
        (
            "cap_identify invalid handle",
            identify(ipc::cap_identify(bogus)),
            Error::InvalidHandle,
        ),
        (
            "send invalid handle",
            raw(Syscall::Send, bogus, ping),
            Error::InvalidHandle,
        ),
        (
            "send to a notification",
            raw(Syscall::Send, notification, ping),
            Error::InvalidArgument,
        ),
        (
            "send reserved info bits",
            raw(Syscall::Send, ENDPOINT, 1 << 45),
            Error::InvalidArgument,
        ),
        (
            "send more than 512 words",
            raw(Syscall::Send, ENDPOINT, 513 << 32),
            Error::InvalidArgument,
        ),
        (
            "send more than 4 capabilities",
            raw(Syscall::Send, ENDPOINT, 5 << 48),
            Error::InvalidArgument,
        ),
        (
            "recv invalid handle",
            raw(Syscall::Recv, bogus, 0),
            Error::InvalidHandle,
        ),
        (
            "recv without READ",
            raw(Syscall::Recv, ENDPOINT, 0),
            Error::PermissionDenied,
        ),
        (
            "recv on a notification",
            raw(Syscall::Recv, notification, 0),
            Error::InvalidArgument,
        ),
        (
            "call invalid handle",
            raw(Syscall::Call, bogus, ping),
            Error::InvalidHandle,
        ),
        (
            "call bad info",
            raw(Syscall::Call, ENDPOINT, u64::MAX),
            Error::InvalidArgument,
        ),
        (
            "call with an invalid capability to transfer",
            {
                buffer.set_cap(0, bogus);
                raw(Syscall::Call, ENDPOINT, info(PING, 0, 1).raw())
            },
            Error::InvalidHandle,
        ),
        (
            "reply with no caller",
            raw(Syscall::Reply, null, 0),
            Error::InvalidArgument,
        ),
        (
            "reply bad info",
            raw(Syscall::Reply, null, 1 << 60),
            Error::InvalidArgument,
        ),
        (
            "reply_recv invalid handle",
            raw(Syscall::ReplyRecv, bogus, 0),
            Error::InvalidHandle,
        ),
        (
            "reply_recv without READ",
            raw(Syscall::ReplyRecv, ENDPOINT, 0),
            Error::PermissionDenied,
        ),
        (
            "reply_recv bad info",
            raw(Syscall::ReplyRecv, ENDPOINT, 1 << 60),
            Error::InvalidArgument,
        ),
        (
            "signal invalid handle",
            unit(ipc::signal(bogus, 1)),
            Error::InvalidHandle,
        ),
        (
            "signal zero bits",
            unit(ipc::signal(notification, 0)),
            Error::InvalidArgument,
        ),
        (
            "signal an endpoint",
            unit(ipc::signal(ENDPOINT, 1)),
            Error::InvalidArgument,
        ),
        (
            "wait invalid handle",
            ipc::wait(bogus),
            Error::InvalidHandle,
        ),
        (
            "wait on an endpoint",
            ipc::wait(ENDPOINT),
            Error::InvalidArgument,
        ),
        (
            "poll invalid handle",
            ipc::poll(bogus),
            Error::InvalidHandle,
        ),
        (
            "ipc_buffer_set misaligned",
            unit(ipc::ipc_buffer_set(buffer.address() + 8)),
            Error::InvalidArgument,
        ),
        (
            "ipc_buffer_set unmapped",
            unit(ipc::ipc_buffer_set(0x0000_1000_0000_0000)),
            Error::BadAddress,
        ),
        (
            "ipc_buffer_set kernel address",
            unit(ipc::ipc_buffer_set(0xffff_ffff_8000_0000)),
            Error::BadAddress,
        ),
    ];
    for (name, got, wanted) in cases {
        results.expect_error(&name_with_prefix(name), got, wanted);
    }
    // The image's text is mapped, but not by memory_map and not writable.
    results.expect_error(
        "user ipc bad argument: ipc_buffer_set on the program's text",
        unit(ipc::ipc_buffer_set(0x40_0000)),
        Error::BadAddress,
    );
    // Long messages and capabilities need a registered, mapped buffer.
    let _ = ipc::ipc_buffer_set(0);
    results.expect_error(
        "user ipc bad argument: call with 5 words and no IPC buffer",
        raw(Syscall::Call, ENDPOINT, info(PING, 5, 0).raw()),
        Error::InvalidArgument,
    );
    let _ = ipc::ipc_buffer_set(buffer.address());
    let _ = rt::memory_unmap(buffer.address(), abi::PAGE_SIZE);
    results.expect_error(
        "user ipc bad argument: call with 5 words after the buffer was unmapped",
        raw(Syscall::Call, ENDPOINT, info(PING, 5, 0).raw()),
        Error::BadAddress,
    );
    let _ = ipc::ipc_buffer_set(0);
    let _ = ipc::cap_delete(notification);
    // Nothing above reached the server: it still answers.
    results.check(
        "user ipc server still answers after the bad arguments",
        match ipc::call(ENDPOINT, info(PING, 4, 0), [1, 2, 3, 4]) {
            Ok(Received { words, .. }) if words == pong([1, 2, 3, 4]) => Ok(()),
            _ => Err("wrong or no reply"),
        },
    );
}

fn name_with_prefix(name: &str) -> NameBuffer {
    let mut buffer = NameBuffer {
        bytes: [0; 96],
        length: 0,
    };
    for part in ["user ipc bad argument: ", name] {
        for &byte in part.as_bytes() {
            if buffer.length < buffer.bytes.len() {
                buffer.bytes[buffer.length] = byte;
                buffer.length += 1;
            }
        }
    }
    buffer
}

/// A test name built without an allocator.
struct NameBuffer {
    bytes: [u8; 96],
    length: usize,
}

impl core::ops::Deref for NameBuffer {
    type Target = str;
    fn deref(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("?")
    }
}

fn dead_server(results: &mut Results) {
    let outcome = match ipc::call(ENDPOINT, info(EXIT, 0, 0), [0; 4]) {
        Err(Error::PeerDied) => Ok(()),
        Err(_) => Err("another error"),
        Ok(_) => Err("the exiting server replied"),
    };
    results.check(
        "user ipc call to a server that exits without replying fails with PeerDied",
        outcome,
    );
    let outcome = match ipc::call(ENDPOINT, info(PING, 0, 0), [0; 4]) {
        Err(Error::PeerDied) => Ok(()),
        Err(_) => Err("another error"),
        Ok(_) => Err("a dead server replied"),
    };
    results.check(
        "user ipc call to an endpoint whose server is gone fails with PeerDied",
        outcome,
    );
    let outcome = match ipc::send(ENDPOINT, info(PING, 0, 0), [0; 4]) {
        Err(Error::PeerDied) => Ok(()),
        _ => Err("not PeerDied"),
    };
    results.check(
        "user ipc send to an endpoint whose server is gone fails with PeerDied",
        outcome,
    );
}
