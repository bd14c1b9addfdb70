//! `cargo xtask trace-x86` / `trace-aarch64`: boot with `trace=on`, read the kernel's trace
//! records from the serial output and write a Chrome/Perfetto trace JSON
//! (`target/trace/<arch>.json`; open it at <https://ui.perfetto.dev>, "Open trace file").
//!
//! The kernel (`kernel/src/trace.rs`) prints its rings (one per CPU, one after the other;
//! the records are put in time order here) at power-off:
//!
//! ```text
//! trace: begin cpus=<n> records=<n> dropped=<n> clock_hz=<hz or 0>
//! trace: <time> <cpu> <kind> <thread> <a> <b>        (hexadecimal)
//! trace: end
//! ```
//!
//! [`parse`] reads those lines into a [`Trace`], [`events`] turns it into trace events and
//! [`to_json`] writes them; [`json::parse`] reads JSON back (for the tests). The picture:
//!
//! - process "CPUs": one track per CPU, a slice per stretch a thread ran on it (from the
//!   switch to it to the switch away), interrupts as slices inside it, faults as instants;
//! - one process per user process (and one, "kernel", for kernel threads), one track per
//!   thread (a thread id reused by a new thread gets a new track): "running" slices,
//!   system calls (a slice when the thread was not switched away inside the call, else an
//!   instant at each end), IPC and notification events (zero-length slices), spawns,
//!   deaths and faults (instants);
//! - flow arrows ("s" → "f") from each send to its receive, each reply to its caller and
//!   each signal to the thread it woke.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::boot::{self, BootOptions};
use crate::{Arch, Error, Profile, Result, Workspace, step};

/// The kinds of record (`kernel/src/trace.rs`, `Kind`).
pub mod kind {
    pub const SWITCH: u16 = 1;
    pub const NAME: u16 = 2;
    pub const SEND: u16 = 3;
    pub const RECEIVE: u16 = 4;
    pub const REPLY: u16 = 5;
    pub const SIGNAL: u16 = 6;
    pub const WAKE: u16 = 7;
    pub const IRQ_ENTER: u16 = 8;
    pub const IRQ_EXIT: u16 = 9;
    pub const FAULT: u16 = 10;
    pub const SYSCALL_ENTER: u16 = 11;
    pub const SYSCALL_EXIT: u16 = 12;
    pub const SPAWN: u16 = 13;
    pub const EXIT: u16 = 14;
}

/// The IRQ line of the timer in interrupt records.
const TIMER_LINE: u64 = u32::MAX as u64;

/// One trace record as the kernel printed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: u64,
    pub cpu: u32,
    pub kind: u16,
    pub thread: u32,
    pub a: u64,
    pub b: u64,
}

/// What one boot's trace held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The clock's rate (0: unknown, read as nanoseconds).
    pub clock_hz: u64,
    /// Records the rings overwrote.
    pub dropped: u64,
    pub records: Vec<Record>,
}

fn header_field(header: &str, name: &str) -> Option<u64> {
    header.split_whitespace().find_map(|field| {
        field
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .and_then(|value| value.parse().ok())
    })
}

/// Read the trace out of the serial lines: the last `trace: begin` … `trace: end` block.
pub fn parse<S: AsRef<str>>(lines: &[S]) -> std::result::Result<Trace, String> {
    let mut trace = None;
    let mut current: Option<Trace> = None;
    for (index, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        let Some(at) = line.find("trace: ") else {
            continue;
        };
        let rest = line[at + "trace: ".len()..].trim();
        if let Some(header) = rest.strip_prefix("begin") {
            current = Some(Trace {
                clock_hz: header_field(header, "clock_hz").unwrap_or(0),
                dropped: header_field(header, "dropped").unwrap_or(0),
                records: Vec::new(),
            });
        } else if rest == "end" {
            trace = current.take().or(trace);
        } else if let Some(open) = current.as_mut() {
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|field| u64::from_str_radix(field, 16))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| format!("serial line {}: bad trace record {rest:?}", index + 1))?;
            let [time, cpu, kind, thread, a, b] = fields[..] else {
                return Err(format!(
                    "serial line {}: a trace record has 6 fields: {rest:?}",
                    index + 1
                ));
            };
            let small = |value: u64| {
                u32::try_from(value)
                    .map_err(|_| format!("serial line {}: field out of range", index + 1))
            };
            open.records.push(Record {
                time,
                cpu: small(cpu)?,
                kind: u16::try_from(kind)
                    .map_err(|_| format!("serial line {}: bad kind", index + 1))?,
                thread: small(thread)?,
                a,
                b,
            });
        }
    }
    trace.ok_or_else(|| {
        "no complete trace in the serial output (`trace: begin` … `trace: end`): the kernel \
         prints it at power-off, so boot a scenario that powers off"
            .to_owned()
    })
}

/// One Chrome trace event (the subset this writer uses).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    pub cat: &'static str,
    /// "X" (complete slice), "i" (instant), "s"/"f" (flow start/end), "M" (metadata).
    pub ph: &'static str,
    /// Microseconds.
    pub ts: f64,
    pub dur: Option<f64>,
    pub pid: u64,
    pub tid: u64,
    /// Flow id ("s"/"f").
    pub id: Option<u64>,
    pub args: Vec<(String, String)>,
}

impl Event {
    fn new(ph: &'static str, cat: &'static str, name: impl Into<String>, ts: f64) -> Self {
        Self {
            name: name.into(),
            cat,
            ph,
            ts,
            dur: None,
            pid: 0,
            tid: 0,
            id: None,
            args: Vec::new(),
        }
    }

    fn on(mut self, (pid, tid): (u64, u64)) -> Self {
        self.pid = pid;
        self.tid = tid;
        self
    }

    fn arg(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.args.push((name.to_owned(), value.to_string()));
        self
    }
}

/// The process of the CPU tracks.
pub const CPU_PID: u64 = 0;
/// The process of kernel threads' tracks.
pub const KERNEL_PID: u64 = 1;
/// User process `p` is shown as process `USER_PID_BASE + p`.
pub const USER_PID_BASE: u64 = 100;

/// One thread's track: a thread id's life from its creation (its name record) on.
#[derive(Debug)]
struct ThreadTrack {
    id: u32,
    name: String,
    pid: u64,
    tid: u64,
    /// A system call entered and not yet left: (time, number, first argument).
    syscall: Option<(f64, u64, u64)>,
}

/// The name of system call `number`.
fn syscall_name(number: u64) -> String {
    match abi::Syscall::from_number(number) {
        Some(call) => format!("{call:?}"),
        None => format!("syscall {number}"),
    }
}

fn name_from_words(a: u64, b: u64) -> String {
    let mut bytes = a.to_le_bytes().to_vec();
    bytes.extend_from_slice(&b.to_le_bytes());
    let end = bytes.iter().position(|&byte| byte == 0).unwrap_or(16);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

struct Builder {
    to_us: Box<dyn Fn(u64) -> f64>,
    tracks: Vec<ThreadTrack>,
    /// Thread id → its current track.
    live: BTreeMap<u32, usize>,
    /// CPU → (track running on it, since).
    running: BTreeMap<u32, (usize, f64)>,
    /// CPU → an interrupt entered and not yet left: (since, line).
    irq: BTreeMap<u32, (f64, u64)>,
    /// Sender thread id → (endpoint, flow id) of its last unmatched send.
    sends: BTreeMap<u32, (u64, u64)>,
    /// Notification → flow id of its last signal.
    signals: BTreeMap<u64, u64>,
    process_names: BTreeMap<u64, String>,
    next_flow: u64,
    out: Vec<Event>,
}

impl Builder {
    fn track(&mut self, id: u32) -> usize {
        if let Some(&index) = self.live.get(&id) {
            return index;
        }
        let name = if id == 0 {
            "(boot)".to_owned()
        } else {
            format!("thread {id}")
        };
        self.new_track(id, name)
    }

    fn new_track(&mut self, id: u32, name: String) -> usize {
        let index = self.tracks.len();
        self.tracks.push(ThreadTrack {
            id,
            name,
            pid: KERNEL_PID,
            tid: index as u64 + 1,
            syscall: None,
        });
        self.live.insert(id, index);
        index
    }

    fn place(&self, track: usize) -> (u64, u64) {
        (self.tracks[track].pid, self.tracks[track].tid)
    }

    fn flow(&mut self) -> u64 {
        self.next_flow += 1;
        self.next_flow
    }

    /// End what runs on `cpu` at `ts`: the thread's slices and an open interrupt.
    fn stop_running(&mut self, cpu: u32, ts: f64) {
        if let Some((since, line)) = self.irq.remove(&cpu) {
            self.irq_slice(cpu, since, ts, line);
        }
        if let Some((track, since)) = self.running.remove(&cpu) {
            let name = self.tracks[track].name.clone();
            let id = self.tracks[track].id;
            let place = self.place(track);
            let mut slice = Event::new("X", "sched", name, since)
                .on((CPU_PID, u64::from(cpu)))
                .arg("thread", id);
            slice.dur = Some(ts - since);
            self.out.push(slice);
            let mut slice = Event::new("X", "sched", format!("running on CPU {cpu}"), since)
                .on(place)
                .arg("cpu", cpu);
            slice.dur = Some(ts - since);
            self.out.push(slice);
        }
    }

    fn irq_slice(&mut self, cpu: u32, since: f64, until: f64, line: u64) {
        let name = if line == TIMER_LINE {
            "timer interrupt".to_owned()
        } else {
            format!("irq {line}")
        };
        let mut slice = Event::new("X", "irq", name, since).on((CPU_PID, u64::from(cpu)));
        slice.dur = Some(until - since);
        self.out.push(slice);
    }

    /// A zero-length slice on `track` at `ts`.
    fn mark(&mut self, track: usize, cat: &'static str, name: &str, ts: f64) -> Event {
        let mut slice = Event::new("X", cat, name, ts).on(self.place(track));
        slice.dur = Some(0.0);
        slice
    }

    fn instant(&mut self, track: usize, cat: &'static str, name: &str, ts: f64) -> Event {
        let mut event = Event::new("i", cat, name, ts).on(self.place(track));
        event.args.push(("s".to_owned(), "t".to_owned()));
        event
    }

    fn flow_start(&mut self, track: usize, id: u64, ts: f64) {
        let mut event = Event::new("s", "flow", "ipc", ts).on(self.place(track));
        event.id = Some(id);
        self.out.push(event);
    }

    fn flow_end(&mut self, track: usize, id: u64, ts: f64) {
        let mut event = Event::new("f", "flow", "ipc", ts).on(self.place(track));
        event.id = Some(id);
        self.out.push(event);
    }

    fn record(&mut self, record: &Record) {
        let ts = (self.to_us)(record.time);
        let cpu = record.cpu;
        match record.kind {
            kind::NAME => {
                let name = name_from_words(record.a, record.b);
                self.new_track(record.thread, name);
            }
            kind::SWITCH => {
                let from = self.track(record.thread);
                // The thread before the first switch ran since the trace began.
                self.running.entry(cpu).or_insert((from, 0.0_f64.min(ts)));
                self.stop_running(cpu, ts);
                // A call the thread is switched away inside is shown as two instants.
                if let Some((since, number, argument)) = self.tracks[from].syscall.take() {
                    let event = self
                        .instant(from, "syscall", &syscall_name(number), since)
                        .arg("number", number)
                        .arg("argument", format!("{argument:#x}"))
                        .arg("part", "enter");
                    self.out.push(event);
                }
                let to = self.track(record.a as u32);
                self.running.insert(cpu, (to, ts));
            }
            kind::SEND => {
                let sender = self.track(record.thread);
                let flow = self.flow();
                let event = self
                    .mark(sender, "ipc", "send", ts)
                    .arg("endpoint", format!("{:#x}", record.a))
                    .arg("badge", record.b);
                self.out.push(event);
                self.flow_start(sender, flow, ts);
                self.sends.insert(record.thread, (record.a, flow));
            }
            kind::RECEIVE => {
                let receiver = self.track(record.thread);
                let sender = record.b as u32;
                let sender_track = self.track(sender);
                let sender_name = self.tracks[sender_track].name.clone();
                let event = self
                    .mark(receiver, "ipc", "receive", ts)
                    .arg("endpoint", format!("{:#x}", record.a))
                    .arg("from", format!("{sender_name} ({sender})"));
                self.out.push(event);
                if let Some((endpoint, flow)) = self.sends.remove(&sender)
                    && endpoint == record.a
                {
                    self.flow_end(receiver, flow, ts);
                }
            }
            kind::REPLY => {
                let replier = self.track(record.thread);
                let caller = self.track(record.a as u32);
                let flow = self.flow();
                let event = self.mark(replier, "ipc", "reply", ts).arg("to", record.a);
                self.out.push(event);
                self.flow_start(replier, flow, ts);
                let event = self
                    .mark(caller, "ipc", "reply received", ts)
                    .arg("from", record.thread);
                self.out.push(event);
                self.flow_end(caller, flow, ts);
            }
            kind::SIGNAL => {
                let signaller = self.track(record.thread);
                let flow = self.flow();
                let event = self
                    .mark(signaller, "notify", "signal", ts)
                    .arg("notification", format!("{:#x}", record.a))
                    .arg("bits", format!("{:#x}", record.b));
                self.out.push(event);
                self.flow_start(signaller, flow, ts);
                self.signals.insert(record.a, flow);
            }
            kind::WAKE => {
                let waiter = self.track(record.thread);
                let event = self
                    .mark(waiter, "notify", "wake", ts)
                    .arg("notification", format!("{:#x}", record.a))
                    .arg("word", format!("{:#x}", record.b));
                self.out.push(event);
                if let Some(flow) = self.signals.remove(&record.a) {
                    self.flow_end(waiter, flow, ts);
                }
            }
            kind::IRQ_ENTER => {
                if let Some((since, line)) = self.irq.insert(cpu, (ts, record.a)) {
                    self.irq_slice(cpu, since, ts, line);
                }
            }
            kind::IRQ_EXIT => {
                if let Some((since, line)) = self.irq.remove(&cpu) {
                    self.irq_slice(cpu, since, ts, line);
                }
            }
            kind::FAULT => {
                let track = self.track(record.thread);
                let event = self
                    .instant(track, "fault", "fault", ts)
                    .arg("ip", format!("{:#x}", record.a))
                    .arg("address", format!("{:#x}", record.b));
                self.out.push(event);
                let name = format!("fault in {}", self.tracks[track].name);
                let mut event = Event::new("i", "fault", name, ts)
                    .on((CPU_PID, u64::from(cpu)))
                    .arg("ip", format!("{:#x}", record.a));
                event.args.push(("s".to_owned(), "t".to_owned()));
                self.out.push(event);
            }
            kind::SYSCALL_ENTER => {
                let track = self.track(record.thread);
                // A call with no exit record (IPC) is shown as an instant.
                if let Some((since, number, argument)) =
                    self.tracks[track].syscall.replace((ts, record.a, record.b))
                {
                    let event = self
                        .instant(track, "syscall", &syscall_name(number), since)
                        .arg("number", number)
                        .arg("argument", format!("{argument:#x}"));
                    self.out.push(event);
                }
            }
            kind::SYSCALL_EXIT => {
                let track = self.track(record.thread);
                let status = record.a.to_string();
                match self.tracks[track].syscall.take() {
                    Some((since, number, argument)) => {
                        let mut slice = Event::new("X", "syscall", syscall_name(number), since)
                            .on(self.place(track))
                            .arg("argument", format!("{argument:#x}"))
                            .arg("status", status);
                        slice.dur = Some(ts - since);
                        self.out.push(slice);
                    }
                    _ => {
                        let event = self
                            .instant(track, "syscall", "syscall exit", ts)
                            .arg("status", status)
                            .arg("part", "exit");
                        self.out.push(event);
                    }
                }
            }
            kind::SPAWN => {
                let track = self.track(record.thread);
                let pid = USER_PID_BASE + record.a;
                self.tracks[track].pid = pid;
                let name = self.tracks[track].name.clone();
                self.process_names.entry(pid).or_insert(name);
                let event = self
                    .instant(track, "proc", "spawn", ts)
                    .arg("process", record.a);
                self.out.push(event);
            }
            kind::EXIT => {
                let track = self.track(record.thread);
                let event = self.instant(track, "proc", "exit", ts);
                self.out.push(event);
            }
            _ => {}
        }
    }
}

/// The trace events of `trace` (metadata first).
pub fn events(trace: &Trace) -> Vec<Event> {
    let first = trace.records.iter().map(|record| record.time).min();
    let first = first.unwrap_or(0);
    let hz = if trace.clock_hz == 0 {
        1e9
    } else {
        trace.clock_hz as f64
    };
    let mut builder = Builder {
        to_us: Box::new(move |time| (time as f64 - first as f64) * 1e6 / hz),
        tracks: Vec::new(),
        live: BTreeMap::new(),
        running: BTreeMap::new(),
        irq: BTreeMap::new(),
        sends: BTreeMap::new(),
        signals: BTreeMap::new(),
        process_names: BTreeMap::new(),
        next_flow: 0,
        out: Vec::new(),
    };
    // The kernel prints its rings one CPU after another: put the records in time order
    // (stable, so one CPU's records with equal times keep theirs).
    let mut records: Vec<&Record> = trace.records.iter().collect();
    records.sort_by_key(|record| record.time);
    let mut cpus = std::collections::BTreeSet::new();
    for record in &records {
        cpus.insert(record.cpu);
        builder.record(record);
    }
    let end = records
        .last()
        .map_or(0.0, |record| (builder.to_us)(record.time));
    for cpu in cpus.iter().copied() {
        builder.stop_running(cpu, end);
    }
    let mut out = Vec::new();
    let metadata = |name: &str, (pid, tid): (u64, u64), value: &str| {
        Event::new("M", "__metadata", name, 0.0)
            .on((pid, tid))
            .arg("name", value)
    };
    out.push(metadata("process_name", (CPU_PID, 0), "CPUs"));
    for cpu in &cpus {
        out.push(metadata(
            "thread_name",
            (CPU_PID, u64::from(*cpu)),
            &format!("CPU {cpu}"),
        ));
    }
    out.push(metadata("process_name", (KERNEL_PID, 0), "kernel threads"));
    for (pid, name) in &builder.process_names {
        let label = format!("process {} ({name})", pid - USER_PID_BASE);
        out.push(metadata("process_name", (*pid, 0), &label));
    }
    for track in &builder.tracks {
        let label = format!("{} ({})", track.name, track.id);
        out.push(metadata("thread_name", (track.pid, track.tid), &label));
    }
    out.extend(builder.out);
    out
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            character if (character as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", character as u32);
            }
            character => out.push(character),
        }
    }
    out.push('"');
    out
}

/// A JSON number for a time in microseconds (nanosecond precision).
fn json_time(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "0".to_owned()
    }
}

/// The Chrome trace JSON of `events` (`{"traceEvents": […], "displayTimeUnit": "ns"}`).
pub fn to_json(events: &[Event]) -> String {
    let mut out = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            out.push_str(",\n");
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"cat\":{},\"ph\":{},\"ts\":{},\"pid\":{},\"tid\":{}",
            json_string(&event.name),
            json_string(event.cat),
            json_string(event.ph),
            json_time(event.ts),
            event.pid,
            event.tid
        );
        if let Some(dur) = event.dur {
            let _ = write!(out, ",\"dur\":{}", json_time(dur));
        }
        if let Some(id) = event.id {
            let _ = write!(out, ",\"id\":{id}");
        }
        // An instant's scope ("s") is a field of the event, not an argument.
        let mut args = Vec::new();
        for (name, value) in &event.args {
            if event.ph == "i" && name == "s" {
                let _ = write!(out, ",\"s\":{}", json_string(value));
            } else {
                args.push(format!("{}:{}", json_string(name), json_string(value)));
            }
        }
        if !args.is_empty() {
            let _ = write!(out, ",\"args\":{{{}}}", args.join(","));
        }
        out.push('}');
    }
    out.push_str("\n]}\n");
    out
}

/// A small JSON reader, enough to check what [`to_json`] wrote.
pub mod json {
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(BTreeMap<String, Value>),
    }

    impl Value {
        /// Field `name` of an object.
        pub fn get(&self, name: &str) -> Option<&Value> {
            match self {
                Value::Object(fields) => fields.get(name),
                _ => None,
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(text) => Some(text),
                _ => None,
            }
        }

        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Number(number) => Some(*number),
                _ => None,
            }
        }

        pub fn as_array(&self) -> Option<&[Value]> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }
    }

    struct Reader<'a> {
        text: &'a [u8],
        at: usize,
    }

    impl Reader<'_> {
        fn error(&self, what: &str) -> String {
            format!("JSON: {what} at byte {}", self.at)
        }

        fn skip_space(&mut self) {
            while self
                .text
                .get(self.at)
                .is_some_and(|byte| byte.is_ascii_whitespace())
            {
                self.at += 1;
            }
        }

        fn expect(&mut self, byte: u8) -> Result<(), String> {
            self.skip_space();
            if self.text.get(self.at) == Some(&byte) {
                self.at += 1;
                Ok(())
            } else {
                Err(self.error(&format!("expected {:?}", byte as char)))
            }
        }

        fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
            if self.text[self.at..].starts_with(word.as_bytes()) {
                self.at += word.len();
                Ok(value)
            } else {
                Err(self.error("unknown literal"))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, String> {
            if depth > 64 {
                return Err(self.error("nested too deeply"));
            }
            self.skip_space();
            match self.text.get(self.at) {
                None => Err(self.error("unexpected end")),
                Some(b'{') => {
                    self.at += 1;
                    let mut fields = BTreeMap::new();
                    self.skip_space();
                    if self.text.get(self.at) == Some(&b'}') {
                        self.at += 1;
                        return Ok(Value::Object(fields));
                    }
                    loop {
                        self.skip_space();
                        let name = self.string()?;
                        self.expect(b':')?;
                        let value = self.value(depth + 1)?;
                        fields.insert(name, value);
                        self.skip_space();
                        match self.text.get(self.at) {
                            Some(b',') => self.at += 1,
                            Some(b'}') => {
                                self.at += 1;
                                return Ok(Value::Object(fields));
                            }
                            _ => return Err(self.error("expected ',' or '}'")),
                        }
                    }
                }
                Some(b'[') => {
                    self.at += 1;
                    let mut items = Vec::new();
                    self.skip_space();
                    if self.text.get(self.at) == Some(&b']') {
                        self.at += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.skip_space();
                        match self.text.get(self.at) {
                            Some(b',') => self.at += 1,
                            Some(b']') => {
                                self.at += 1;
                                return Ok(Value::Array(items));
                            }
                            _ => return Err(self.error("expected ',' or ']'")),
                        }
                    }
                }
                Some(b'"') => Ok(Value::String(self.string()?)),
                Some(b't') => self.literal("true", Value::Bool(true)),
                Some(b'f') => self.literal("false", Value::Bool(false)),
                Some(b'n') => self.literal("null", Value::Null),
                Some(_) => self.number(),
            }
        }

        fn number(&mut self) -> Result<Value, String> {
            let start = self.at;
            while self
                .text
                .get(self.at)
                .is_some_and(|byte| b"+-.eE0123456789".contains(byte))
            {
                self.at += 1;
            }
            std::str::from_utf8(&self.text[start..self.at])
                .ok()
                .filter(|text| !text.is_empty() && !text.starts_with('+'))
                .and_then(|text| text.parse::<f64>().ok())
                .map(Value::Number)
                .ok_or_else(|| self.error("bad number"))
        }

        fn string(&mut self) -> Result<String, String> {
            if self.text.get(self.at) != Some(&b'"') {
                return Err(self.error("expected a string"));
            }
            self.at += 1;
            let mut out = Vec::new();
            loop {
                let Some(&byte) = self.text.get(self.at) else {
                    return Err(self.error("unterminated string"));
                };
                self.at += 1;
                match byte {
                    b'"' => break,
                    b'\\' => {
                        let Some(&escape) = self.text.get(self.at) else {
                            return Err(self.error("unterminated escape"));
                        };
                        self.at += 1;
                        match escape {
                            b'"' | b'\\' | b'/' => out.push(escape),
                            b'n' => out.push(b'\n'),
                            b'r' => out.push(b'\r'),
                            b't' => out.push(b'\t'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'u' => {
                                let hex = self
                                    .text
                                    .get(self.at..self.at + 4)
                                    .and_then(|hex| std::str::from_utf8(hex).ok())
                                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                                    .ok_or_else(|| self.error("bad \\u escape"))?;
                                self.at += 4;
                                let character = char::from_u32(hex).unwrap_or('\u{fffd}');
                                let mut buffer = [0u8; 4];
                                out.extend_from_slice(
                                    character.encode_utf8(&mut buffer).as_bytes(),
                                );
                            }
                            _ => return Err(self.error("bad escape")),
                        }
                    }
                    byte if byte < 0x20 => return Err(self.error("control character in a string")),
                    byte => out.push(byte),
                }
            }
            String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
        }
    }

    /// Parse one JSON document.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut reader = Reader {
            text: text.as_bytes(),
            at: 0,
        };
        let value = reader.value(0)?;
        reader.skip_space();
        if reader.at != reader.text.len() {
            return Err(reader.error("trailing characters"));
        }
        Ok(value)
    }
}

/// The default command line of a trace boot: the bench scenario, a few samples each.
pub const DEFAULT_CMDLINE: &str = "test=bench iterations=5";

/// Options of `cargo xtask trace-<arch>`.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub boot: BootOptions,
    /// Where the JSON goes; `None`: `target/trace/<arch>.json`.
    pub output: Option<PathBuf>,
}

impl TraceOptions {
    /// Boot `cmdline` (plus `trace=on`) on `arch`, giving it `seconds` to power off.
    pub fn new(arch: Arch, cmdline: &str, seconds: u64, profile: Profile) -> Self {
        let mut boot = BootOptions::new(arch);
        boot.profile = profile;
        boot.cmdline = with_trace_on(cmdline);
        boot.qemu.capture = true;
        boot.qemu.echo = false;
        boot.qemu.timeout = Some(Duration::from_secs(seconds));
        Self { boot, output: None }
    }
}

/// `cmdline` with `trace=on` added (unless it sets `trace=` itself).
pub fn with_trace_on(cmdline: &str) -> String {
    if cmdline
        .split_whitespace()
        .any(|word| word.starts_with("trace="))
    {
        cmdline.to_owned()
    } else if cmdline.trim().is_empty() {
        "trace=on".to_owned()
    } else {
        format!("{} trace=on", cmdline.trim())
    }
}

/// What a trace boot produced.
#[derive(Debug)]
pub struct Traced {
    pub json: PathBuf,
    pub trace: Trace,
    pub outcome: crate::qemu::Outcome,
}

/// The default output file.
pub fn default_output(workspace: &Workspace, arch: Arch) -> PathBuf {
    workspace
        .target_dir()
        .join("trace")
        .join(format!("{arch}.json"))
}

/// Boot, collect the trace, write the JSON.
pub fn run(workspace: &Workspace, options: &TraceOptions) -> Result<Traced> {
    let arch = options.boot.qemu.arch;
    step(format_args!(
        "{arch}: booting with `{}` (the trace is printed at power-off)…",
        options.boot.cmdline
    ));
    let outcome = boot::boot(workspace, &options.boot)?;
    for line in outcome
        .lines
        .iter()
        .filter(|line| !line.contains("trace: "))
    {
        println!("{line}");
    }
    let trace = parse(&outcome.lines).map_err(|why| {
        let ending = match &outcome.ending {
            crate::qemu::Ending::Timeout(seconds) => {
                format!(" (the kernel did not power off within {seconds} s; raise --seconds)")
            }
            _ => String::new(),
        };
        Error::new(format!("{arch}: {why}{ending}"))
    })?;
    let json = options
        .output
        .clone()
        .unwrap_or_else(|| default_output(workspace, arch));
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| Error::new(format!("cannot create {}: {error}", parent.display())))?;
    }
    std::fs::write(&json, to_json(&events(&trace)))
        .map_err(|error| Error::new(format!("cannot write {}: {error}", json.display())))?;
    step(format_args!(
        "{arch}: {} trace records ({} dropped) written to {}; open it at https://ui.perfetto.dev \
         (\"Open trace file\")",
        trace.records.len(),
        trace.dropped,
        json.display()
    ));
    Ok(Traced {
        json,
        trace,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_words(name: &str) -> (u64, u64) {
        let mut bytes = [0u8; 16];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        (
            u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            u64::from_le_bytes(bytes[8..].try_into().unwrap()),
        )
    }

    /// A client (thread 3, process 1) calls a server (thread 4, process 2) and gets its
    /// reply; the kernel thread 1 starts it all.
    fn sample_lines() -> Vec<String> {
        let (client_a, client_b) = name_words("client");
        let (server_a, server_b) = name_words("server");
        let (main_a, main_b) = name_words("main");
        let records = [
            (100, kind::NAME, 1, main_a, main_b),
            (110, kind::SWITCH, 0, 1, 0),
            (120, kind::NAME, 3, client_a, client_b),
            (121, kind::SPAWN, 3, 1, 0),
            (130, kind::NAME, 4, server_a, server_b),
            (131, kind::SPAWN, 4, 2, 0),
            (140, kind::SWITCH, 1, 4, 0),
            (150, kind::SYSCALL_ENTER, 4, 17, 1),
            (160, kind::SWITCH, 4, 3, 0),
            (170, kind::SEND, 3, 0xffff_8000_0000_1000, 7),
            (171, kind::RECEIVE, 4, 0xffff_8000_0000_1000, 3),
            (172, kind::SWITCH, 3, 4, 0),
            (180, kind::IRQ_ENTER, 4, TIMER_LINE, 0),
            (185, kind::IRQ_EXIT, 4, TIMER_LINE, 0),
            (190, kind::REPLY, 4, 3, 0),
            (191, kind::SWITCH, 4, 3, 0),
            (200, kind::FAULT, 3, 0x40_1000, 0x10),
            (201, kind::EXIT, 3, 0, 0),
        ];
        let mut lines = vec![
            "garbage before".to_owned(),
            "\u{1b}[0mtrace: begin cpus=1 records=18 dropped=2 clock_hz=1000000000".to_owned(),
        ];
        for (time, kind, thread, a, b) in records {
            lines.push(format!("trace: {time:x} 0 {kind:x} {thread:x} {a:x} {b:x}"));
        }
        lines.push("trace: end".to_owned());
        lines.push("keel: power off".to_owned());
        lines
    }

    #[test]
    fn parses_the_kernel_lines() {
        let trace = parse(&sample_lines()).unwrap();
        assert_eq!(trace.clock_hz, 1_000_000_000);
        assert_eq!(trace.dropped, 2);
        assert_eq!(trace.records.len(), 18);
        assert_eq!(
            trace.records[9],
            Record {
                time: 170,
                cpu: 0,
                kind: kind::SEND,
                thread: 3,
                a: 0xffff_8000_0000_1000,
                b: 7
            }
        );
    }

    #[test]
    fn refuses_incomplete_and_bad_traces() {
        assert!(parse(&["trace: begin cpus=1", "trace: 1 0 1 0 1 0"]).is_err());
        assert!(parse(&["nothing here"]).is_err());
        let error = parse(&["trace: begin", "trace: 1 2 3", "trace: end"]).unwrap_err();
        assert!(error.contains("6 fields"), "{error}");
        assert!(parse(&["trace: begin", "trace: zz 0 1 0 1 0", "trace: end"]).is_err());
    }

    #[test]
    fn events_show_threads_on_cpus_and_ipc_flows() {
        let events = events(&parse(&sample_lines()).unwrap());
        let cpu_slices: Vec<&str> = events
            .iter()
            .filter(|event| event.ph == "X" && event.pid == CPU_PID && event.cat == "sched")
            .map(|event| event.name.as_str())
            .collect();
        assert_eq!(
            cpu_slices,
            ["(boot)", "main", "server", "client", "server", "client"]
        );
        // The client's send starts a flow that ends in the server's receive.
        let send = events
            .iter()
            .find(|event| event.ph == "s")
            .expect("a flow start");
        let end = events
            .iter()
            .find(|event| event.ph == "f" && event.id == send.id)
            .expect("its end");
        assert_eq!(send.pid, USER_PID_BASE + 1);
        assert_eq!(end.pid, USER_PID_BASE + 2);
        assert!(end.ts >= send.ts);
        // The reply flows back.
        let flows = events.iter().filter(|event| event.ph == "f").count();
        assert_eq!(flows, 2);
        // A syscall cut by a switch is shown as an instant; the interrupt as a slice.
        assert!(
            events
                .iter()
                .any(|event| event.ph == "i" && event.cat == "syscall")
        );
        assert!(events.iter().any(|event| event.name == "timer interrupt"
            && event.dur.is_some_and(|dur| (dur - 0.005).abs() < 1e-9)));
        assert!(events.iter().any(|event| event.name == "fault in client"));
        // Times are microseconds from the first record (1 GHz clock).
        let first_switch = events
            .iter()
            .find(|event| event.name == "main" && event.ph == "X")
            .unwrap();
        assert!((first_switch.ts - 0.01).abs() < 1e-9, "{}", first_switch.ts);
        // Metadata names the processes and threads.
        assert!(events.iter().any(|event| {
            event.ph == "M"
                && event
                    .args
                    .iter()
                    .any(|(_, value)| value == "process 1 (client)")
        }));
    }

    #[test]
    fn json_round_trips() {
        let events = events(&parse(&sample_lines()).unwrap());
        let text = to_json(&events);
        let value = json::parse(&text).unwrap();
        let list = value
            .get("traceEvents")
            .and_then(json::Value::as_array)
            .unwrap();
        assert_eq!(list.len(), events.len());
        let flows = list
            .iter()
            .filter(|event| event.get("ph").and_then(json::Value::as_str) == Some("s"))
            .count();
        assert_eq!(flows, 2);
        let instant = list
            .iter()
            .find(|event| event.get("ph").and_then(json::Value::as_str) == Some("i"))
            .unwrap();
        assert_eq!(instant.get("s").and_then(json::Value::as_str), Some("t"));
    }

    #[test]
    fn json_strings_are_escaped_and_checked() {
        assert_eq!(json_string("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
        let value = json::parse("{\"x\": [1, -2.5e3, \"\\u0041\", true, null]}").unwrap();
        let items = value.get("x").and_then(json::Value::as_array).unwrap();
        assert_eq!(items[1].as_f64(), Some(-2500.0));
        assert_eq!(items[2].as_str(), Some("A"));
        assert!(json::parse("{\"x\": }").is_err());
        assert!(json::parse("[1,]").is_err());
        assert!(json::parse("[1] 2").is_err());
    }

    #[test]
    fn trace_on_is_added_once() {
        assert_eq!(with_trace_on(""), "trace=on");
        assert_eq!(with_trace_on("test=bench"), "test=bench trace=on");
        assert_eq!(
            with_trace_on("test=bench trace=off"),
            "test=bench trace=off"
        );
    }
}
