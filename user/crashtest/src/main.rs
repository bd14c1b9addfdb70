//! `crashtest`: the driver of the crash-containment scenario (`test=containment`).
//!
//! `init` starts it last from its containment manifest, after `console`, `names` and the
//! test server `echo`, with the shell's capabilities (`rt::service::slots`: console, names,
//! `init`'s process service, system information, power). Client threads call all three
//! servers without pause — an empty console write, a name lookup, an echo call whose answer
//! is checked — while the main thread kills one server after another at random moments
//! through `init`'s process service (the same request as the shell's `kill`). For every
//! kill it waits until `init` has started the server again and every client has completed
//! calls since: a client that sees `PeerDied` (or a stale name) looks the name up again and
//! carries on. Then it prints its figures (`containment: …`), one `ok`/`not ok` line, and
//! switches the machine off with the result.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::{Error, Handle, MessageInfo, PAGE_SIZE, sysinfo};
use rt::ipc;
use rt::proc;
use rt::service::{self, label, slot, slots};

/// Client threads.
const CLIENTS: usize = 3;
/// The servers killed, in turn.
const VICTIMS: [&str; 3] = ["console", "names", "echo"];
/// Kills (three of each server: below `init`'s crash-loop limit of five in 30 seconds).
const KILLS: usize = 9;
/// The bound on each wait, in ticks of 10 ms polling (a restart takes well under one
/// second even under emulation; the bound only stops a hung run).
const WAIT_POLLS: u64 = 6000;
/// Calls each client must complete after a restart before the next kill.
const CALLS_AFTER_RESTART: u64 = 3;
const CLIENT_STACKS: u64 = 0x0000_2100_0000_0000;
const CLIENT_STACK_BYTES: u64 = 16 * PAGE_SIZE;

/// Per client: calls completed, `PeerDied` seen, names looked up again, wrong answers.
static CALLS: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
static PEER_DIED: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
static RELOOKUPS: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
static WRONG: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
static STOP: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicU64 = AtomicU64::new(0);

fn main(argument: u64) -> i64 {
    let power = slot(slots::SHELL_POWER);
    let outcome = run(argument);
    let code = match &outcome {
        Ok(()) => 0,
        Err(_) => 1,
    };
    if let Err(why) = outcome {
        rt::println!("not ok containment: {why}");
    }
    proc::power_off(power, code);
    2
}

fn run(seed: u64) -> Result<(), &'static str> {
    let _buffer = service::ipc_buffer(0).map_err(|_| "no IPC buffer")?;
    let system = slot(slots::SHELL_SYSTEM);
    let processes = slot(slots::SHELL_PROCESSES);
    rt::println!("containment: {CLIENTS} clients, {KILLS} kills of console, names and echo");
    for client in 0..CLIENTS {
        let stack = CLIENT_STACKS + client as u64 * 2 * CLIENT_STACK_BYTES;
        rt::memory_map(stack, CLIENT_STACK_BYTES, abi::MAP_WRITE)
            .map_err(|_| "cannot map a client stack")?;
        proc::thread_create(
            client_thread,
            stack + CLIENT_STACK_BYTES,
            client as u64,
            abi::PRIORITY_NORMAL,
        )
        .map_err(|_| "cannot start a client")?;
    }
    wait_for_calls(CALLS_AFTER_RESTART).map_err(|_| "a client made no calls before any kill")?;

    let mut random = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut restarts = 0;
    for kill in 0..KILLS {
        let victim = VICTIMS[kill % VICTIMS.len()];
        // A random moment: the clients are somewhere in their calls.
        proc::sleep(1 + next(&mut random) % 20).map_err(|_| "sleep failed")?;
        let pid = pid_of(system, victim).ok_or("a server to kill is not running")?;
        service::process_request(processes, label::PROCESS_KILL, [pid, 0, 0, 0])
            .map_err(|_| "init refused the kill")?;
        let mut polls = 0;
        loop {
            match pid_of(system, victim) {
                Some(new) if new != pid => break,
                _ if polls >= WAIT_POLLS => return Err("init did not restart a killed server"),
                _ => {}
            }
            polls += 1;
            proc::sleep(1).map_err(|_| "sleep failed")?;
        }
        restarts += 1;
        wait_for_calls(CALLS_AFTER_RESTART)
            .map_err(|_| "a client made no progress after a restart")?;
        rt::println!("containment: {victim} (pid {pid}) killed and restarted");
    }

    STOP.store(true, Ordering::Release);
    let mut polls = 0;
    while STOPPED.load(Ordering::Acquire) < CLIENTS as u64 {
        if polls >= WAIT_POLLS {
            return Err("a client did not stop");
        }
        polls += 1;
        proc::sleep(1).map_err(|_| "sleep failed")?;
    }
    let sum = |counters: &[AtomicU64; CLIENTS]| -> u64 {
        counters.iter().map(|c| c.load(Ordering::Acquire)).sum()
    };
    let (calls, died, relookups, wrong) =
        (sum(&CALLS), sum(&PEER_DIED), sum(&RELOOKUPS), sum(&WRONG));
    rt::println!(
        "containment: kills {KILLS}, restarts {restarts}, calls {calls}, peer-died {died}, \
         names looked up again {relookups}, wrong answers {wrong}"
    );
    if wrong != 0 {
        return Err("a server gave a wrong answer");
    }
    if restarts != KILLS as u64 {
        return Err("not every killed server was restarted");
    }
    rt::println!("ok containment: every killed server restarted and every client recovered");
    Ok(())
}

/// xorshift64.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Wait until every client completed `calls` more calls than now (or the bound passes).
fn wait_for_calls(calls: u64) -> Result<(), ()> {
    let start: [u64; CLIENTS] = core::array::from_fn(|i| CALLS[i].load(Ordering::Acquire));
    for _ in 0..WAIT_POLLS {
        if (0..CLIENTS).all(|i| CALLS[i].load(Ordering::Acquire) >= start[i] + calls) {
            return Ok(());
        }
        let _ = proc::sleep(1);
    }
    Err(())
}

/// The pid of the live process named `name` (its threads' records name it).
fn pid_of(system: Handle, name: &str) -> Option<u64> {
    use sysinfo::thread::*;
    let mut summary = [0u64; sysinfo::summary::WORDS];
    proc::system_info(system, sysinfo::SUMMARY, 0, &mut summary).ok()?;
    let wanted = sysinfo::pack_name(name);
    (1..summary[sysinfo::summary::THREAD_SLOTS]).find_map(|index| {
        let mut record = [0u64; WORDS];
        let found = proc::system_info(system, sysinfo::THREAD, index, &mut record).ok()?;
        (found != 0 && record[STATE] != 3 && [record[NAME], record[NAME + 1]] == wanted)
            .then_some(record[PROCESS])
    })
}

extern "C" fn client_thread(client: u64) -> ! {
    // why: the thread argument is a client number below CLIENTS.
    let client = client as usize;
    let code = match client_loop(client) {
        Ok(()) => 0,
        Err(error) => 120 + i64::from(error.code()),
    };
    STOPPED.fetch_add(1, Ordering::AcqRel);
    rt::exit(code)
}

/// Call console, names and echo in turn until told to stop; recover from every server
/// death by asking again (console, names: their endpoints outlive the server) or by
/// looking `echo` up again (its endpoint dies with it).
fn client_loop(client: usize) -> Result<(), Error> {
    let buffer = service::ipc_buffer(1 + client as u64)?;
    let console = slot(slots::CONSOLE_OUT);
    let names = slot(slots::SHELL_NAMES);
    let mut echo = None;
    let mut round = 0u64;
    while !STOP.load(Ordering::Acquire) {
        round += 1;
        let result = match round % 3 {
            0 => {
                let info = MessageInfo::new(label::CONSOLE_WRITE, 0, 0).unwrap_or_default();
                ipc::call(console, info, [0; 4]).map(drop)
            }
            1 => service::names_lookup(names, &buffer, "echo").and_then(ipc::cap_delete),
            _ => {
                let endpoint = match echo {
                    Some(endpoint) => endpoint,
                    None => {
                        RELOOKUPS[client].fetch_add(1, Ordering::AcqRel);
                        match service::names_lookup(names, &buffer, "echo") {
                            Ok(endpoint) => *echo.insert(endpoint),
                            // Not registered yet (echo or names is being restarted).
                            Err(_) => {
                                proc::sleep(1)?;
                                continue;
                            }
                        }
                    }
                };
                let words = [round, client as u64, 7, round ^ 0x5a5a];
                match ipc::call(endpoint, MessageInfo::default(), words) {
                    Ok(reply) => {
                        let expected = [round + 1, client as u64, 7, (round ^ 0x5a5a) ^ round];
                        if reply.words != expected {
                            WRONG[client].fetch_add(1, Ordering::AcqRel);
                        }
                        Ok(())
                    }
                    Err(error) => {
                        // A dead echo: drop its endpoint, look the name up next time.
                        let _ = ipc::cap_delete(endpoint);
                        echo = None;
                        Err(error)
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                CALLS[client].fetch_add(1, Ordering::AcqRel);
            }
            Err(Error::PeerDied) => {
                PEER_DIED[client].fetch_add(1, Ordering::AcqRel);
            }
            // A name not (yet) registered, or a stale endpoint: try again shortly.
            Err(Error::InvalidHandle | Error::InvalidArgument | Error::PermissionDenied) => {
                proc::sleep(1)?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

rt::entry!(main);
