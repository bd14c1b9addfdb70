//! The kernel trace (`trace=on`, `cargo xtask trace-<arch>`): a traced run of the `bench`
//! scenario, whose IPC benchmark is a call/reply ping-pong between two processes, gives
//! valid Chrome trace JSON with the threads of both processes switched onto the CPU and
//! IPC flows from the client's send to the server's receive, in that order. One boot per
//! architecture.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, expect_ending, options, selected, workspace};
use xtask::trace::json::{self, Value};
use xtask::trace::{CPU_PID, TraceOptions, USER_PID_BASE};

fn field<'a>(event: &'a Value, name: &str) -> &'a str {
    event.get(name).and_then(Value::as_str).unwrap_or("")
}

fn number(event: &Value, name: &str) -> f64 {
    event.get(name).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn place(event: &Value) -> (u64, u64) {
    (number(event, "pid") as u64, number(event, "tid") as u64)
}

fn traced_ping_pong(arch: Arch) {
    if !selected(arch, &format!("trace on {arch}")) {
        return;
    }
    let mut boot = options(arch, "trace", "test=bench iterations=5 trace=on");
    boot.qemu.echo = false;
    let output = workspace()
        .target_dir()
        .join("trace")
        .join(format!("test-{arch}.json"));
    let traced = xtask::trace::run(
        &workspace(),
        &TraceOptions {
            boot,
            output: Some(output.clone()),
        },
    )
    .unwrap_or_else(|error| panic!("no trace: {error}"));
    expect_ending(&traced.outcome, &Ending::Exit(0));
    assert!(
        traced.outcome.line_containing("bench done").is_some(),
        "the bench scenario did not finish"
    );
    assert_eq!(traced.trace.dropped, 0, "the ring overflowed");

    let text = std::fs::read_to_string(&output).expect("the JSON was written");
    let document = json::parse(&text).unwrap_or_else(|error| panic!("invalid JSON: {error}"));
    let events = document
        .get("traceEvents")
        .and_then(Value::as_array)
        .expect("a traceEvents array");
    for event in events {
        assert!(!field(event, "ph").is_empty(), "an event without ph");
        assert!(number(event, "ts").is_finite(), "an event without ts");
    }

    // Every flow start has one end, never earlier.
    let starts: Vec<&Value> = events.iter().filter(|e| field(e, "ph") == "s").collect();
    let ends: Vec<&Value> = events.iter().filter(|e| field(e, "ph") == "f").collect();
    assert!(!starts.is_empty(), "no IPC flows");
    let end_of = |start: &Value| {
        ends.iter()
            .copied()
            .find(|end| number(end, "id") == number(start, "id"))
    };

    // A send from a user thread of one process whose flow ends in a receive of a user
    // thread of another process: the ping-pong's client and server.
    let at = |place_of: (u64, u64), name: &str, ts: f64| {
        events.iter().any(|event| {
            place(event) == place_of
                && field(event, "ph") == "X"
                && field(event, "name") == name
                && number(event, "ts") == ts
        })
    };
    let pair = starts.iter().find_map(|start| {
        let end = end_of(start)?;
        let (client, server) = (place(start), place(end));
        let ts = number(start, "ts");
        let user = |(pid, _): (u64, u64)| pid > USER_PID_BASE;
        (user(client)
            && user(server)
            && client.0 != server.0
            && at(client, "send", ts)
            && at(server, "receive", number(end, "ts")))
        .then_some((client, server, ts, number(end, "ts")))
    });
    let Some((client, server, sent, received)) = pair else {
        panic!("no flow from a send in one process to a receive in another:\n{text}");
    };
    assert!(sent <= received, "the receive comes before the send");

    // Both threads ran on the CPU: slices on the CPU track and their own "running" slices,
    // and the server ran after it received the client's message.
    let running = |thread: (u64, u64)| -> Vec<f64> {
        events
            .iter()
            .filter(|event| {
                place(event) == thread
                    && field(event, "ph") == "X"
                    && field(event, "name").starts_with("running on CPU")
            })
            .map(|event| number(event, "ts"))
            .collect()
    };
    let client_runs = running(client);
    let server_runs = running(server);
    assert!(!client_runs.is_empty(), "the client never ran");
    assert!(
        server_runs.iter().any(|&ts| ts >= received),
        "the server did not run after its receive"
    );
    let cpu_slices = events
        .iter()
        .filter(|event| {
            number(event, "pid") as u64 == CPU_PID
                && field(event, "ph") == "X"
                && field(event, "cat") == "sched"
        })
        .count();
    assert!(
        cpu_slices >= client_runs.len() + server_runs.len(),
        "fewer CPU slices than thread runs"
    );
    // The server replied: a flow from the server back to the client.
    assert!(
        starts.iter().any(|start| {
            place(start) == server
                && at(server, "reply", number(start, "ts"))
                && end_of(start).is_some_and(|end| place(end) == client)
        }),
        "no reply flow from the server to the client"
    );
}

#[test]
fn trace_x86_64() {
    traced_ping_pong(Arch::X86_64);
}

#[test]
fn trace_aarch64() {
    traced_ping_pong(Arch::Aarch64);
}

/// `cargo xtask bench --trace ipc_call_reply`: only that benchmark runs (its `bench` line and
/// no other), and its timeline is valid JSON with the ping-pong's sends and replies.
fn bench_trace(arch: Arch) {
    if !selected(arch, &format!("bench --trace on {arch}")) {
        return;
    }
    let runs = xtask::bench::trace(&workspace(), &[arch], 20, "ipc_call_reply")
        .unwrap_or_else(|error| panic!("bench --trace failed: {error}"));
    let traced = &runs[0];
    assert!(
        traced
            .outcome
            .line_containing("bench ipc_call_reply ")
            .is_some()
    );
    for other in [
        "null_syscall",
        "ipc_call_reply_1k",
        "yield",
        "map_unmap",
        "spawn",
    ] {
        assert!(
            traced
                .outcome
                .line_containing(&format!("bench {other} "))
                .is_none(),
            "{other} ran too"
        );
    }
    let text = std::fs::read_to_string(xtask::bench::trace_path(
        &workspace(),
        arch,
        "ipc_call_reply",
    ))
    .expect("the JSON was written");
    let document = json::parse(&text).unwrap_or_else(|error| panic!("invalid JSON: {error}"));
    let events = document
        .get("traceEvents")
        .and_then(Value::as_array)
        .expect("a traceEvents array");
    let count = |name: &str| events.iter().filter(|e| field(e, "name") == name).count();
    // 20 samples after a warm-up: at least 20 sends and 20 replies.
    assert!(
        count("send") >= 20 && count("reply") >= 20,
        "{} sends, {} replies",
        count("send"),
        count("reply")
    );
}

#[test]
fn bench_trace_x86_64() {
    bench_trace(Arch::X86_64);
}

#[test]
fn bench_trace_aarch64() {
    bench_trace(Arch::Aarch64);
}
