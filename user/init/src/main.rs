//! `init`, Keel's root task (DESIGN.md §7): the kernel starts it from the boot
//! module `init` when no test scenario is selected, with every boot capability
//! (`abi::init_slots`).
//!
//! It creates the servers' endpoints itself (so they outlive any one server process:
//! clients keep their capabilities across a restart), then starts the servers of its
//! manifest (`user/init/manifest`, `ucore::manifest`) in order, each with only the
//! capabilities the manifest lists, in `rt::service::slots` order; a provider (`console`,
//! `names`) also gets the receive side of its own endpoints. Deaths arrive on one
//! notification (bit `i` for server `i`, [`SPAWNED_BIT`] for programs the shell started);
//! `ucore::supervisor` decides restarts with backoff and stops crash loops.
//!
//! Threads: the main thread supervises and never blocks on a server; the worker thread
//! prints the reports on the console and tells `names` about deaths (either may block
//! while that server is being restarted); the service thread answers `init`'s process
//! endpoint (`spawn`, `kill` from the shell).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use abi::{Error, Handle, MessageInfo, PAGE_SIZE, ProcessStatus, Rights, init_slots, sysinfo};
use rt::ipc;
use rt::proc;
use rt::service::{self, CLIENT_RIGHTS, Console, label};
use rt::sync::SpinLock;
use ucore::manifest::{Capability, Manifest};
use ucore::restart::Exit;
use ucore::supervisor::Supervisor;

const MANIFEST: &[u8] = include_bytes!("../manifest");
/// The manifest of the crash-containment scenario (the kernel starts `init` with argument
/// [`abi::INIT_CONTAINMENT`] under `test=containment`).
const CONTAINMENT_MANIFEST: &[u8] = include_bytes!("../manifest-containment");
/// The death bit of programs started through the process service.
const SPAWNED_BIT: u64 = 1 << 63;
/// The console and names badge of programs started through the process service (servers
/// have their manifest index + 1).
const SPAWNED_BADGE: u64 = 64;
/// The largest memory budget a program started through the process service may ask for,
/// so the shell cannot take what `init` needs to restart the servers.
const SPAWNED_BUDGET_MAX: u64 = 64 << 20;
const STACK_BYTES: u64 = 16 * PAGE_SIZE;
const WORKER_STACK: u64 = 0x0000_2200_0000_0000;
const SERVICE_STACK: u64 = 0x0000_2300_0000_0000;

/// What `init` holds for its whole life.
struct Boot {
    modules: Vec<(String, Handle)>,
    console_out: Handle,
    console_in: Handle,
    names: Handle,
    processes: Handle,
    deaths: Handle,
}

/// A process `init` started.
struct Child {
    pid: u64,
    process: Handle,
    module: String,
    /// Its manifest index, if it is a server.
    server: Option<usize>,
}

enum Job {
    Print(String),
    /// Tell `names` that the client with this badge died.
    OwnerDied(u64),
}

static CHILDREN: SpinLock<Vec<Child>> = SpinLock::new(Vec::new());
static JOBS: SpinLock<VecDeque<Job>> = SpinLock::new(VecDeque::new());
static BOOT: SpinLock<Option<Boot>> = SpinLock::new(None);
/// Signalled when a job is queued.
static WORK: SpinLock<Handle> = SpinLock::new(Handle::NULL);

fn boot_slot(slot: u32) -> Handle {
    service::slot(slot)
}

fn queue(job: Job) {
    JOBS.lock().push_back(job);
    let work = *WORK.lock();
    let _ = ipc::signal(work, 1);
}

fn report(line: String) {
    queue(Job::Print(line));
}

fn main(argument: u64) -> i64 {
    let manifest = if argument == abi::INIT_CONTAINMENT {
        CONTAINMENT_MANIFEST
    } else {
        MANIFEST
    };
    match run(manifest) {
        Ok(never) => match never {},
        Err(error) => {
            rt::println!("init: cannot continue: {error:?}");
            1
        }
    }
}

fn ticks() -> u64 {
    let mut summary = [0u64; sysinfo::summary::WORDS];
    let _ = proc::system_info(
        boot_slot(init_slots::SYSTEM),
        sysinfo::SUMMARY,
        0,
        &mut summary,
    );
    summary[sysinfo::summary::TICKS]
}

fn run(manifest: &[u8]) -> Result<core::convert::Infallible, Error> {
    let _buffer = service::ipc_buffer(0)?;
    let system = boot_slot(init_slots::SYSTEM);
    let mut summary = [0u64; sysinfo::summary::WORDS];
    proc::system_info(system, sysinfo::SUMMARY, 0, &mut summary)?;
    let hz = summary[sysinfo::summary::TIMER_HZ].max(1);
    let mut modules = Vec::new();
    for index in 0..u64::from(init_slots::MODULES_MAX) {
        let mut record = [0u64; sysinfo::module::WORDS];
        if proc::system_info(system, sysinfo::MODULE, index, &mut record)? == 0 {
            break;
        }
        let mut name = [0u8; 16];
        let length = sysinfo::unpack_name(
            [
                record[sysinfo::module::NAME],
                record[sysinfo::module::NAME + 1],
            ],
            &mut name,
        );
        let name = String::from_utf8_lossy(&name[..length]).into_owned();
        // why: index < MODULES_MAX (16).
        modules.push((name, boot_slot(init_slots::FIRST_MODULE + index as u32)));
    }
    *WORK.lock() = ipc::notification_create()?;
    *BOOT.lock() = Some(Boot {
        modules,
        console_out: ipc::endpoint_create()?,
        console_in: ipc::endpoint_create()?,
        names: ipc::endpoint_create()?,
        processes: ipc::endpoint_create()?,
        deaths: ipc::notification_create()?,
    });
    let deaths = BOOT
        .lock()
        .as_ref()
        .map(|boot| boot.deaths)
        .unwrap_or(Handle::NULL);
    let manifest = Manifest::parse(manifest).map_err(|_| Error::InvalidArgument)?;
    let mut supervisor: Supervisor<u64> = Supervisor::new(manifest, hz);
    start_thread(worker, WORKER_STACK)?;
    start_thread(service_thread, SERVICE_STACK)?;
    loop {
        let now = ticks();
        for index in supervisor.due(now) {
            start_server(&mut supervisor, index, now);
        }
        let bits = match supervisor.next_wakeup() {
            Some(at) => {
                let now = ticks();
                if at > now {
                    let _ = proc::sleep((at - now).min(abi::SLEEP_MAX_TICKS));
                }
                ipc::poll(deaths)?
            }
            None => ipc::wait(deaths)?,
        };
        if bits != 0 {
            reap(&mut supervisor, bits);
        }
    }
}

fn start_thread(entry: extern "C" fn(u64) -> !, stack: u64) -> Result<(), Error> {
    rt::memory_map(stack, STACK_BYTES, abi::MAP_WRITE)?;
    proc::thread_create(entry, stack + STACK_BYTES, 0, abi::PRIORITY_NORMAL).map(drop)
}

/// The capabilities server `index` (module `module`) gets, as temporary copies `init`
/// deletes after the spawn.
fn server_caps(
    module: &str,
    caps: ucore::manifest::Capabilities,
    badge: u64,
) -> Result<Vec<Handle>, Error> {
    let guard = BOOT.lock();
    let boot = guard.as_ref().ok_or(Error::InvalidArgument)?;
    let mut list = Vec::new();
    let copy = |handle: Handle, rights: Rights| ipc::cap_copy(handle, rights);
    let result = (|| {
        for cap in caps.iter() {
            match cap {
                Capability::Serial => {
                    list.push(copy(boot_slot(init_slots::CONSOLE_IRQ), Rights::ALL)?);
                    list.push(copy(boot_slot(init_slots::CONSOLE_DEVICE), Rights::ALL)?);
                }
                Capability::Console => {
                    list.push(ipc::cap_mint(boot.console_out, badge, CLIENT_RIGHTS)?);
                    list.push(copy(boot.console_in, CLIENT_RIGHTS)?);
                }
                Capability::Names => list.push(ipc::cap_mint(boot.names, badge, CLIENT_RIGHTS)?),
                Capability::Processes => {
                    list.push(ipc::cap_mint(boot.processes, badge, CLIENT_RIGHTS)?)
                }
                Capability::System => list.push(copy(boot_slot(init_slots::SYSTEM), Rights::ALL)?),
                Capability::Power => list.push(copy(boot_slot(init_slots::POWER), Rights::ALL)?),
            }
        }
        let serve = Rights::READ | Rights::GRANT;
        match module {
            "console" => {
                list.push(copy(boot.console_out, serve)?);
                list.push(copy(boot.console_in, serve)?);
            }
            "names" => list.push(copy(boot.names, serve)?),
            _ => {}
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(list),
        Err(error) => {
            for handle in list {
                let _ = ipc::cap_delete(handle);
            }
            Err(error)
        }
    }
}

fn module_image(module: &str) -> Option<Handle> {
    let guard = BOOT.lock();
    let boot = guard.as_ref()?;
    boot.modules
        .iter()
        .find(|(name, _)| name == module)
        .map(|(_, handle)| *handle)
}

/// Spawn `module` with `caps` (deleted afterwards) and a memory budget of `budget` bytes
/// out of `init`'s (0: the kernel's default share), its death bound to `bits`.
fn spawn(module: &str, caps: Vec<Handle>, budget: u64, bits: u64) -> Result<(Handle, u64), Error> {
    let image = module_image(module).ok_or(Error::InvalidArgument);
    let result =
        image.and_then(|image| proc::process_spawn(image, &caps, abi::PRIORITY_NORMAL, 0, budget));
    for handle in caps {
        let _ = ipc::cap_delete(handle);
    }
    let process = result?;
    let deaths = BOOT
        .lock()
        .as_ref()
        .map(|boot| boot.deaths)
        .unwrap_or(Handle::NULL);
    proc::process_bind_death(process, deaths, bits)?;
    let pid = proc::process_id(process)?;
    Ok((process, pid))
}

fn start_server(supervisor: &mut Supervisor<u64>, index: usize, now: u64) {
    let Some(server) = supervisor.server(index).cloned() else {
        return;
    };
    // why: the manifest holds at most SERVERS_MAX (16) servers.
    let badge = index as u64 + 1;
    let started = server_caps(&server.module, server.caps, badge)
        .and_then(|caps| spawn(&server.module, caps, server.budget.unwrap_or(0), 1 << index));
    match started {
        Ok((process, pid)) => {
            CHILDREN.lock().push(Child {
                pid,
                process,
                module: server.module.clone(),
                server: Some(index),
            });
            if let Some(line) = supervisor.started(index, pid, now) {
                report(format!("{line}"));
            }
        }
        Err(error) => {
            if let Some(line) = supervisor.start_failed(index, now) {
                report(format!("{line} (cannot start: {error:?})"));
            }
        }
    }
}

fn exit_of(process: Handle) -> Option<Exit> {
    match proc::process_status(process).ok()? {
        ProcessStatus::Running => None,
        ProcessStatus::Exited(code) => Some(Exit::Code(i64::from(code))),
        ProcessStatus::Faulted => Some(Exit::Faulted),
        ProcessStatus::Killed => Some(Exit::Killed),
    }
}

/// Handle the deaths in `bits`.
fn reap(supervisor: &mut Supervisor<u64>, bits: u64) {
    let now = ticks();
    let mut ended = Vec::new();
    {
        let mut children = CHILDREN.lock();
        let mut index = 0;
        while index < children.len() {
            let child = &children[index];
            let watched = match child.server {
                Some(server) => bits & (1 << server) != 0,
                None => bits & SPAWNED_BIT != 0,
            };
            match watched.then(|| exit_of(child.process)).flatten() {
                Some(exit) => ended.push((children.swap_remove(index), exit)),
                None => index += 1,
            }
        }
    }
    for (child, exit) in ended {
        let _ = ipc::cap_delete(child.process);
        match child.server {
            Some(index) => {
                if let Some(line) = supervisor.died(child.pid, exit, now) {
                    report(format!("{line}"));
                }
                // why: the manifest holds at most 16 servers.
                queue(Job::OwnerDied(index as u64 + 1));
            }
            None => report(format!("init: {} (pid {}) {exit}", child.module, child.pid)),
        }
    }
}

/// The worker: console output and `names` notices, in order.
extern "C" fn worker(_: u64) -> ! {
    let Ok(buffer) = service::ipc_buffer(1) else {
        rt::exit(2)
    };
    let (out, input, names) = {
        let guard = BOOT.lock();
        let boot = guard.as_ref();
        (
            boot.map(|boot| boot.console_out).unwrap_or(Handle::NULL),
            boot.map(|boot| boot.console_in).unwrap_or(Handle::NULL),
            boot.map(|boot| boot.names).unwrap_or(Handle::NULL),
        )
    };
    let console = Console { out, input, buffer };
    let work = *WORK.lock();
    loop {
        let job = JOBS.lock().pop_front();
        match job {
            Some(Job::Print(mut line)) => {
                line.push('\n');
                let _ = console.write(line.as_bytes());
            }
            Some(Job::OwnerDied(badge)) => {
                if let Some(info) = MessageInfo::new(label::NAMES_OWNER_DIED, 0, 0) {
                    let _ = ipc::call(names, info, [badge, 0, 0, 0]);
                }
            }
            None => {
                let _ = ipc::wait(work);
            }
        }
    }
}

/// The process service: `spawn` and `kill` for the shell.
extern "C" fn service_thread(_: u64) -> ! {
    let endpoint = BOOT
        .lock()
        .as_ref()
        .map(|boot| boot.processes)
        .unwrap_or(Handle::NULL);
    let Ok(buffer) = service::ipc_buffer(2) else {
        rt::exit(3)
    };
    let mut answer = (MessageInfo::default(), [0u64; 4]);
    loop {
        let received = match ipc::reply_recv(endpoint, answer.0, answer.1) {
            Ok(received) => received,
            // Only `recv`'s own errors come back (a dead caller is skipped): permanent.
            Err(error) => {
                report(format!("init: process service stopped: {error:?}"));
                rt::exit(4)
            }
        };
        let result = match received.info.label() {
            label::PROCESS_KILL => kill(received.words[0]).map(|()| 0),
            label::PROCESS_SPAWN => {
                // The budget in word 4, when the request has one.
                let budget = if received.info.words() > MessageInfo::REGISTER_WORDS {
                    buffer.word(MessageInfo::REGISTER_WORDS)
                } else {
                    0
                };
                spawn_request(&received.words, budget)
            }
            _ => Err(Error::InvalidArgument),
        };
        answer = match result {
            Ok(value) => (MessageInfo::default(), [0, value, 0, 0]),
            Err(error) => (MessageInfo::default(), [u64::from(error.code()), 0, 0, 0]),
        };
    }
}

fn kill(pid: u64) -> Result<(), Error> {
    let process = CHILDREN
        .lock()
        .iter()
        .find(|child| child.pid == pid)
        .map(|child| child.process)
        .ok_or(Error::InvalidArgument)?;
    proc::process_kill(process)
}

/// Start `module` (named by `words`) for the shell with a memory budget of `budget` bytes
/// (0: the kernel's default share), at most [`SPAWNED_BUDGET_MAX`].
fn spawn_request(words: &[u64; 4], budget: u64) -> Result<u64, Error> {
    if budget > SPAWNED_BUDGET_MAX {
        return Err(Error::OutOfMemory);
    }
    let mut text = [0u8; 32];
    let length = service::words_name(words, &mut text).ok_or(Error::InvalidArgument)?;
    let module = core::str::from_utf8(&text[..length]).map_err(|_| Error::InvalidArgument)?;
    if module == "init" {
        return Err(Error::PermissionDenied);
    }
    let caps = {
        let guard = BOOT.lock();
        let boot = guard.as_ref().ok_or(Error::InvalidArgument)?;
        let out = ipc::cap_mint(boot.console_out, SPAWNED_BADGE, CLIENT_RIGHTS)?;
        match ipc::cap_copy(boot.console_in, CLIENT_RIGHTS) {
            Ok(input) => alloc::vec![out, input],
            Err(error) => {
                let _ = ipc::cap_delete(out);
                return Err(error);
            }
        }
    };
    let (process, pid) = spawn(module, caps, budget, SPAWNED_BIT)?;
    CHILDREN.lock().push(Child {
        pid,
        process,
        module: String::from(module),
        server: None,
    });
    report(format!("init: started {module} (pid {pid}) for the shell"));
    Ok(pid)
}

rt::entry!(main);
