//! `shell`: the interactive shell on the serial console.
//!
//! A loop: print the prompt `keel> `, read the next input event from the console server,
//! run it (`ucore::shell` parses; every bad line is one `error: …` line), repeat. All output
//! goes to the console server in whole lines.
//!
//! Capabilities (from `init`, `rt::service::slots`): the console's endpoints, the name
//! service, `init`'s process service (`spawn`, `kill`), system information (`ps`, `mem`,
//! `top`, `caps`, `uptime`, `cpu`, `ipcbench`) and power (`poweroff`).
//!
//! If the console dies under a request, the request fails with `PeerDied`; the shell waits
//! a moment and asks again (`init` restarts the console on the same endpoints).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::ToString;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Error, Handle, MessageInfo, ObjectType, Rights, sysinfo};
use rt::proc;
use rt::service::{self, Console, INPUT_INTERRUPT, INPUT_LINE, label, slot, slots};
use ucore::line::Event;
use ucore::shell::{self, Command};

const PROMPT: &[u8] = b"keel> ";

/// The instruction counter's advance since kernel entry when the first prompt was written
/// (`boot_to_shell` of `cargo xtask bench`, shown by `uptime`); 0 until then.
static BOOT_TO_SHELL: AtomicU64 = AtomicU64::new(0);

struct Shell {
    console: Console,
    names: Handle,
    processes: Handle,
    system: Handle,
    power: Handle,
}

fn main(_: u64) -> i64 {
    let Ok(buffer) = service::ipc_buffer(0) else {
        return 1;
    };
    let shell = Shell {
        console: Console {
            out: slot(slots::CONSOLE_OUT),
            input: slot(slots::CONSOLE_IN),
            buffer,
        },
        names: slot(slots::SHELL_NAMES),
        processes: slot(slots::SHELL_PROCESSES),
        system: slot(slots::SHELL_SYSTEM),
        power: slot(slots::SHELL_POWER),
    };
    let mut line = Vec::new();
    let mut prompt = true;
    loop {
        if prompt {
            if BOOT_TO_SHELL.load(Ordering::Relaxed) == 0 {
                let count = rt::bench_counter(abi::BenchCounter::SinceKernelEntry).unwrap_or(0);
                BOOT_TO_SHELL.store(count, Ordering::Relaxed);
            }
            let _ = shell.console.write(PROMPT);
        }
        let (kind, length) = match shell.console.read(&mut line) {
            Ok(event) => event,
            Err(_) => {
                // The console is being restarted: ask again shortly, prompt once it is back.
                let _ = proc::sleep(5);
                prompt = true;
                continue;
            }
        };
        prompt = true;
        let event = match kind {
            INPUT_LINE => Event::Line(core::mem::take(&mut line)),
            INPUT_INTERRUPT => Event::Interrupt,
            // why: the console reports lengths of lines it received, far below usize::MAX.
            _ => Event::TooLong {
                length: length as usize,
            },
        };
        let mut out = shell.console.printer();
        match shell::interpret(&event) {
            Ok(command) => shell.run(command, &mut out),
            Err(error) => {
                let _ = writeln!(out, "{error}");
            }
        }
        let _ = out.flush();
        if let Event::Line(bytes) = event {
            line = bytes;
        }
    }
}

fn state_name(state: u64) -> &'static str {
    match state {
        0 => "ready",
        1 => "running",
        2 => "blocked",
        _ => "dead",
    }
}

fn name_text(words: [u64; 2], out: &mut [u8; 16]) -> &str {
    let length = sysinfo::unpack_name(words, out);
    core::str::from_utf8(&out[..length]).unwrap_or("?")
}

fn type_name(kind: Option<ObjectType>) -> &'static str {
    match kind {
        Some(ObjectType::Endpoint) => "endpoint",
        Some(ObjectType::Notification) => "notification",
        Some(ObjectType::Process) => "process",
        Some(ObjectType::Memory) => "memory",
        Some(ObjectType::Thread) => "thread",
        Some(ObjectType::Irq) => "irq",
        Some(ObjectType::IoPorts) => "io-ports",
        Some(ObjectType::Mmio) => "mmio",
        Some(ObjectType::System) => "system",
        Some(ObjectType::Power) => "power",
        None => "?",
    }
}

/// Rows a listing (`ps`, `top`, `mem`) shows at most; a line says how many more there are.
const LISTED_MAX: usize = 256;

impl Shell {
    fn summary(&self) -> Result<[u64; sysinfo::summary::WORDS], Error> {
        let mut words = [0u64; sysinfo::summary::WORDS];
        proc::system_info(self.system, sysinfo::SUMMARY, 0, &mut words)?;
        Ok(words)
    }

    /// Every thread record.
    fn threads(&self) -> Result<Vec<[u64; sysinfo::thread::WORDS]>, Error> {
        let slots = self.summary()?[sysinfo::summary::THREAD_SLOTS];
        let mut threads = Vec::new();
        for index in 1..slots {
            let mut record = [0u64; sysinfo::thread::WORDS];
            if proc::system_info(self.system, sysinfo::THREAD, index, &mut record)? != 0 {
                threads.push(record);
            }
        }
        Ok(threads)
    }

    fn run(&self, command: Command<'_>, out: &mut service::Printer<'_>) {
        let result = match command {
            Command::Empty => Ok(()),
            Command::Help => {
                let _ = writeln!(out, "commands:");
                for line in shell::help_lines() {
                    let _ = writeln!(out, "{line}");
                }
                Ok(())
            }
            Command::Echo { text } => {
                let _ = writeln!(out, "{text}");
                Ok(())
            }
            Command::Ps => self.ps(out),
            Command::Top { seconds } => self.top(seconds, out),
            Command::Mem => self.mem(out),
            Command::Caps { pid } => self.caps(u64::from(pid), out),
            Command::Uptime => self.summary().map(|summary| {
                let hz = summary[sysinfo::summary::TIMER_HZ];
                let ticks = summary[sysinfo::summary::TICKS];
                // why: the kernel's timer rate is far below u32::MAX.
                let _ = writeln!(out, "{}", shell::format_uptime(ticks, hz as u32));
                let count = BOOT_TO_SHELL.load(Ordering::Relaxed);
                if count != 0 {
                    let _ = writeln!(
                        out,
                        "boot to first prompt: {count} instructions since kernel entry \
                         (exact under -icount shift=0)"
                    );
                }
            }),
            Command::Cpu => self.cpu(out),
            Command::Kill { pid } => service::process_request(
                self.processes,
                label::PROCESS_KILL,
                [u64::from(pid), 0, 0, 0],
            )
            .map(|_| {
                let _ = writeln!(out, "killed pid {pid}");
            })
            .or_else(|error| {
                let _ = match error {
                    Error::InvalidArgument => {
                        writeln!(out, "error: kill: no process {pid} started by init")
                    }
                    other => writeln!(out, "error: kill: {other:?}"),
                };
                Ok(())
            }),
            Command::Spawn {
                module,
                budget,
                args,
            } => {
                if !args.is_empty() {
                    let _ = writeln!(out, "error: spawn: arguments are not passed yet");
                    return;
                }
                service::spawn_request(
                    self.processes,
                    &self.console.buffer,
                    module,
                    budget.unwrap_or(0),
                )
                .map(|pid| {
                    let _ = writeln!(out, "started {module} (pid {pid})");
                })
                .or_else(|error| {
                    let _ = match error {
                        Error::InvalidArgument => writeln!(
                            out,
                            "error: spawn: no boot module {module} (or not an executable)"
                        ),
                        other => writeln!(out, "error: spawn: {other:?}"),
                    };
                    Ok(())
                })
            }
            Command::IpcBench { rounds } => self.ipcbench(rounds, out),
            Command::Poweroff => {
                let _ = writeln!(out, "powering off");
                let _ = out.flush();
                Err(proc::power_off(self.power, 0))
            }
        };
        if let Err(error) = result {
            let _ = writeln!(out, "error: {error:?}");
        }
    }

    fn ps(&self, out: &mut service::Printer<'_>) -> Result<(), Error> {
        use sysinfo::thread::*;
        let hz = self.summary()?[sysinfo::summary::TIMER_HZ].max(1);
        let _ = writeln!(
            out,
            "  PID  TID  NAME          STATE    PRIO  CPU(ms)  LASTCPU"
        );
        let threads = self.threads()?;
        for record in threads.iter().take(LISTED_MAX) {
            let mut name = [0u8; 16];
            let _ = writeln!(
                out,
                "{:>5} {:>4}  {:<12}  {:<7}  {:>4}  {:>7}  {:>7}",
                record[PROCESS],
                record[ID],
                name_text([record[NAME], record[NAME + 1]], &mut name),
                state_name(record[STATE]),
                record[PRIORITY],
                record[CPU_TICKS] * 1000 / hz,
                record[LAST_CPU],
            );
        }
        if threads.len() > LISTED_MAX {
            let _ = writeln!(out, "  ... and {} more threads", threads.len() - LISTED_MAX);
        }
        Ok(())
    }

    /// Once a second, `seconds` times: each thread's share of the CPU over that second
    /// and what it did in it (switches to it, IPC and notification operations, page
    /// faults). The console delivers whole lines, so it runs for the count it was given.
    /// Refresh once a second until a key is pressed (or `seconds` refreshes).
    fn top(&self, seconds: Option<u32>, out: &mut service::Printer<'_>) -> Result<(), Error> {
        use sysinfo::thread::*;
        let hz = self.summary()?[sysinfo::summary::TIMER_HZ].max(1);
        let mut before = self.threads()?;
        let mut since = self.summary()?[sysinfo::summary::TICKS];
        // Keys typed before `top` started do not stop it.
        out.console().take_keys()?;
        for refresh in 1..=seconds.unwrap_or(u32::MAX) {
            proc::sleep(hz)?;
            let now = self.threads()?;
            let ticks = self.summary()?[sysinfo::summary::TICKS];
            let interval = ticks.saturating_sub(since);
            let _ = match seconds {
                Some(seconds) => write!(out, "top: {refresh}/{seconds}"),
                None => write!(out, "top: {refresh}"),
            };
            let _ = writeln!(
                out,
                ", the last {} ms (any key stops)",
                interval * 1000 / hz
            );
            let _ = writeln!(
                out,
                "  PID  TID  NAME          CPU%  SWITCHES     IPC  NOTIFY  FAULTS"
            );
            for record in now.iter().take(LISTED_MAX) {
                // The same thread a second ago (a reused slot holds another one); both
                // lists are in id order, so a binary search finds it.
                let old = before
                    .binary_search_by_key(&record[ID], |old| old[ID])
                    .ok()
                    .map(|at| before[at])
                    .filter(|old| {
                        old[PROCESS] == record[PROCESS]
                            && old[NAME..NAME + 2] == record[NAME..NAME + 2]
                    })
                    .unwrap_or([0; WORDS]);
                let delta = |word: usize| record[word].saturating_sub(old[word]);
                let mut name = [0u8; 16];
                let _ = writeln!(
                    out,
                    "{:>5} {:>4}  {:<12}  {:>4}  {:>8}  {:>6}  {:>6}  {:>6}",
                    record[PROCESS],
                    record[ID],
                    name_text([record[NAME], record[NAME + 1]], &mut name),
                    shell::percent(delta(CPU_TICKS), interval),
                    delta(SWITCHES),
                    delta(IPC),
                    delta(NOTIFICATIONS),
                    delta(PAGE_FAULTS),
                );
            }
            if now.len() > LISTED_MAX {
                let _ = writeln!(out, "  ... and {} more threads", now.len() - LISTED_MAX);
            }
            let _ = out.flush();
            if out.console().take_keys()? > 0 {
                let _ = writeln!(out, "top: stopped by a key");
                break;
            }
            before = now;
            since = ticks;
        }
        Ok(())
    }

    fn mem(&self, out: &mut service::Printer<'_>) -> Result<(), Error> {
        use sysinfo::summary::*;
        let summary = self.summary()?;
        let free = summary[FREE_FRAMES];
        let total = summary[TOTAL_FRAMES];
        let _ = writeln!(
            out,
            "frames: {} free, {} used, {} total (4 KiB each); kernel heap {} KiB of {} KiB",
            free,
            total.saturating_sub(free),
            total,
            summary[KERNEL_HEAP] / 1024,
            summary[HEAP_FRAMES] * 4
        );
        use sysinfo::budget::{
            CAP_SLOTS, CAPS, LIMIT, NAME, PAGES, THREADS, USED, WORDS as BUDGET_WORDS,
        };
        let _ = writeln!(
            out,
            "  PID  NAME              BUDGET        USED  PAGES  THREADS         CAPS"
        );
        let mut pids: Vec<u64> = self
            .threads()?
            .iter()
            .map(|record| record[sysinfo::thread::PROCESS])
            .filter(|&pid| pid != 0)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        // Each record is a look-up over the kernel's thread table: a long list is cut.
        let shown = pids.len().min(LISTED_MAX);
        for &pid in &pids[..shown] {
            let mut budget = [0u64; BUDGET_WORDS];
            // A process that ended since the thread list was read has no record.
            if proc::system_info(self.system, sysinfo::BUDGET, pid, &mut budget)? == 0 {
                continue;
            }
            let mut name = [0u8; 16];
            // Capabilities held / slots of the table (it grows and shrinks with use).
            let caps = alloc::format!("{}/{}", budget[CAPS], budget[CAP_SLOTS]);
            let _ = writeln!(
                out,
                "{pid:>5}  {:<12}  {:>10}  {:>10}  {:>5}  {:>7}  {caps:>11}",
                name_text([budget[NAME], budget[NAME + 1]], &mut name),
                ucore::size::Bytes(budget[LIMIT]).to_string(),
                ucore::size::Bytes(budget[USED]).to_string(),
                budget[PAGES],
                budget[THREADS],
            );
        }
        if pids.len() > shown {
            let _ = writeln!(out, "  ... and {} more processes", pids.len() - shown);
        }
        Ok(())
    }

    fn caps(&self, pid: u64, out: &mut service::Printer<'_>) -> Result<(), Error> {
        use sysinfo::cap::*;
        let mut words = [0u64; sysinfo::WORDS_MAX as usize];
        let count = proc::system_info(self.system, sysinfo::CAPS, pid, &mut words)?;
        if count == 0 {
            let _ = writeln!(out, "error: caps: no process {pid}");
            return Ok(());
        }
        let _ = writeln!(out, "capabilities of pid {pid}:");
        for record in words[..count].chunks_exact(WORDS) {
            let value = record[TYPE_RIGHTS];
            // why: the type is in bits 0..32, the rights in bits 32..64.
            let kind = ObjectType::from_number(value as u32);
            let rights = Rights::from_bits_truncate((value >> 32) as u32);
            let _ = writeln!(
                out,
                "  slot {:>3}  {:<12}  {rights:?}",
                record[SLOT],
                type_name(kind)
            );
        }
        Ok(())
    }

    /// One row per CPU the kernel has a record for (up to the first `InvalidArgument`),
    /// then the architecture and how many are online.
    fn cpu(&self, out: &mut service::Printer<'_>) -> Result<(), Error> {
        use sysinfo::cpu::*;
        let _ = writeln!(out, "CPU  HWID  TICKS  IPIS");
        let mut name = [0u8; 16];
        let mut arch = "?";
        let (mut rows, mut online, mut switches) = (0u64, 0u64, 0u64);
        loop {
            let mut record = [0u64; WORDS];
            match proc::system_info(self.system, sysinfo::CPU, rows, &mut record) {
                Ok(0) | Err(Error::InvalidArgument) => break,
                Ok(_) => {}
                Err(error) => return Err(error),
            }
            arch = name_text([record[NAME], record[NAME + 1]], &mut name);
            let _ = writeln!(
                out,
                "{:>3}  {:>#4x}  {:>5}  {}/{}/{}{}",
                record[ID],
                record[HARDWARE_ID],
                record[TICKS],
                record[IPI_RESCHEDULE],
                record[IPI_TLB_SHOOTDOWN],
                record[IPI_STOP],
                if record[ONLINE] == 0 { "  offline" } else { "" }
            );
            rows += 1;
            online += record[ONLINE];
            // The kernel counts switches per thread: the total is in CPU 0's record.
            switches += record[SWITCHES];
        }
        let _ = writeln!(
            out,
            "{arch}: {online} CPUs online, {switches} thread switches on all of them \
             (IPIS: reschedule/tlb shootdown/stop)"
        );
        Ok(())
    }

    fn clock(&self) -> Result<[u64; sysinfo::clock::WORDS], Error> {
        let mut words = [0u64; sysinfo::clock::WORDS];
        proc::system_info(self.system, sysinfo::CLOCK, 0, &mut words)?;
        Ok(words)
    }

    /// Time `rounds` calls to the name service with the kernel's fine clock.
    fn ipcbench(&self, rounds: u32, out: &mut service::Printer<'_>) -> Result<(), Error> {
        use sysinfo::clock::*;
        let words = service::name_words("ipcbench-no-such-name");
        let info = MessageInfo::new(label::NAMES_LOOKUP, 0, 0).ok_or(Error::InvalidArgument)?;
        let start = self.clock()?;
        for _ in 0..rounds {
            rt::ipc::call(self.names, info, words)?;
        }
        let end = self.clock()?;
        let total = end[NOW].saturating_sub(start[NOW]);
        let each = total / u64::from(rounds.max(1));
        let _ = if end[UNIT] == NANOSECONDS {
            writeln!(
                out,
                "ipcbench: {rounds} round trips to names, {each} ns each ({} us in all)",
                total / 1000
            )
        } else {
            writeln!(
                out,
                "ipcbench: {rounds} round trips to names, {each} cycles each ({total} cycles \
                 in all; the time-stamp counter, guest instructions under -icount shift=0)"
            )
        };
        Ok(())
    }
}

rt::entry!(main);
