//! The interactive system. A boot without a test scenario ends at the shell's
//! `keel> ` prompt, served from user space (`init`, `console`, `names`, `shell`); the test
//! types at it over the serial line as a person would, on both architectures: `help`,
//! `echo`, `ps`, `top`, `ipcbench`, `cpu`, `mem`, an unknown command, a 4 KiB line of garbage, `kill` of the console
//! server (init reports the death and the restart, and the prompt works again), `poweroff`.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, Terminal, expect_ending, note, number_after, options, selected, start};

const PROMPT: &str = "keel> ";

/// `n` printable ASCII bytes from a fixed seed (no spaces, no control characters).
fn garbage(n: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 94) as u8)
        })
        .collect()
}

/// Type `command`, and consume its echo.
fn run(terminal: &mut Terminal, command: &str) {
    terminal.send_line(command);
    terminal.expect_line(command);
}

fn shell(arch: Arch, cpus: u32) {
    if !selected(arch, &format!("shell on {arch} with {cpus} CPUs")) {
        return;
    }
    let mut options = options(arch, &format!("shell-smp{cpus}"), "");
    options.qemu.smp = cpus;
    let mut terminal = start(&options);
    terminal.expect_line("keel: started init (pid 1)");
    let console = terminal.expect_line("init: started console (pid ");
    let console_pid = number_after(&console, "(pid ").expect("the console's pid");
    terminal.expect_line("init: started names (pid ");
    terminal.expect_line("init: started shell (pid ");
    terminal.expect_prompt(PROMPT);

    run(&mut terminal, "help");
    terminal.expect_line("commands:");
    // One line per command, in the table's order.
    for command in [
        "help",
        "ps",
        "top [seconds]",
        "mem",
        "caps <pid>",
        "kill <pid>",
        "echo [text]",
        "poweroff",
    ] {
        terminal.expect_line(&format!("  {command} "));
    }
    terminal.expect_prompt(PROMPT);

    run(&mut terminal, "echo hello   keel");
    assert_eq!(terminal.expect_line("hello"), "hello   keel");
    terminal.expect_prompt(PROMPT);

    run(&mut terminal, "ps");
    let header = terminal.expect_line("PID  TID  NAME");
    assert!(header.ends_with("CPU(ms)  LASTCPU"), "{header}");
    // Every server's threads are listed, with a state, a priority and the CPU it last ran
    // on (the kernel's record: one of the CPUs QEMU was given).
    for name in ["init", "console", "names", "shell"] {
        let line = terminal.expect_line(&format!("{name} "));
        assert!(
            ["ready", "running", "blocked"]
                .iter()
                .any(|state| line.contains(state)),
            "{line}"
        );
        let words: Vec<&str> = line.split_whitespace().collect();
        let cpu: u32 = words
            .last()
            .and_then(|word| word.parse().ok())
            .expect("a CPU");
        assert!(cpu < cpus, "{line}");
    }
    terminal.expect_prompt(PROMPT);

    // One refresh of `top`: a row per thread, with counts over that second.
    run(&mut terminal, "top 1");
    let title = terminal.expect_line("top: 1/1, the last ");
    let ms = number_after(&title, "the last ").expect("the interval");
    assert!((900..=5000).contains(&ms), "{title}");
    let header = terminal.expect_line("PID  TID  NAME");
    assert!(
        header.ends_with("CPU%  SWITCHES     IPC  NOTIFY  FAULTS"),
        "{header}"
    );
    for name in ["init", "console", "names", "shell"] {
        let line = terminal.expect_line(&format!("{name} "));
        let numbers: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|word| word.parse().expect("a number"))
            .collect();
        let [percent, switches, _ipc, _notifications, faults] = numbers[..] else {
            panic!("not five counts: {line}");
        };
        assert!(percent <= 100 && faults == 0, "{line}");
        if name == "shell" {
            // The shell woke from its one-second sleep at least once.
            assert!(switches >= 1, "{line}");
        }
    }
    terminal.expect_prompt(PROMPT);

    // `top` alone refreshes until a key: two refreshes, then a key (not echoed, not left
    // for the next command) stops it.
    run(&mut terminal, "top");
    terminal.expect_line("top: 1, the last ");
    terminal.expect_line("top: 2, the last ");
    terminal.send(b"q");
    terminal.expect_line("top: stopped by a key");
    terminal.expect_prompt(PROMPT);
    run(&mut terminal, "echo after top");
    assert_eq!(terminal.expect_line("after"), "after top");
    terminal.expect_prompt(PROMPT);

    // ipcbench times with the kernel's fine clock, not the 10 ms timer.
    run(&mut terminal, "ipcbench 200");
    let line = terminal.expect_line("ipcbench: 200 round trips to names, ");
    let each = number_after(&line, "names, ").expect("the time of one round trip");
    let unit = match arch {
        Arch::X86_64 => " cycles each",
        Arch::Aarch64 => " ns each",
    };
    assert!(each > 0 && line.contains(unit), "{line}");
    terminal.expect_prompt(PROMPT);

    // `cpu`: one row per CPU QEMU was given, indices 0..cpus, and every CPU's timer has
    // ticked (the secondaries' local timers run too).
    run(&mut terminal, "cpu");
    terminal.expect_line("CPU  HWID  TICKS  IPIS");
    let mut indices = Vec::new();
    loop {
        let line = terminal.expect_line("");
        note(format!("{arch} cpu: {line}"));
        if line.contains("CPUs online") {
            assert!(
                line.starts_with(&format!("{arch}: {cpus} CPUs online, ")),
                "{line}"
            );
            // The system has switched threads to get here (init, the servers, the shell).
            let switches = number_after(&line, "online, ").expect("the switch total");
            assert!(
                switches > 0 && line.contains(" thread switches on all of them"),
                "{line}"
            );
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [index, _hardware_id, ticks, _ipis] = words[..] else {
            panic!("not a CPU row: {line}");
        };
        let ticks: u64 = ticks.parse().expect("a tick count");
        assert!(ticks > 0, "cpu {index} has not ticked: {line}");
        indices.push(index.parse::<u32>().expect("a CPU index"));
        assert!(
            indices.len() <= cpus as usize,
            "more rows than CPUs: {line}"
        );
    }
    assert_eq!(indices, (0..cpus).collect::<Vec<_>>());
    terminal.expect_prompt(PROMPT);

    run(&mut terminal, "mem");
    let frames = terminal.expect_line("frames: ");
    let free = number_after(&frames, "frames: ").expect("free frames");
    let used = number_after(&frames, "free, ").expect("used frames");
    let total = number_after(&frames, "used, ").expect("total frames");
    assert!(free > 0 && used > 0 && free + used == total, "{frames}");
    terminal
        .expect_line("  PID  NAME              BUDGET        USED  PAGES  THREADS         CAPS");
    // The shell's row: the budget init's manifest gives it, some of it used.
    let shell_memory = terminal.expect_line(" shell ");
    // `shell  8192 KiB  281 KiB  64  1  7/16`: name, budget, used, pages, threads,
    // capabilities / table slots.
    let fields: Vec<&str> = shell_memory.split_whitespace().collect();
    assert_eq!(fields[0], "shell", "{shell_memory}");
    assert_eq!(&fields[1..3], ["8192", "KiB"], "{shell_memory}");
    let used_kib: u64 = fields[3].parse().expect("the shell's budget use in KiB");
    assert!(used_kib > 0 && used_kib < 8192, "{shell_memory}");
    let pages: u64 = fields[5].parse().expect("the shell's pages");
    assert!(pages > 0 && pages * 4 < used_kib, "{shell_memory}");
    let (held, slots) = fields[7].split_once('/').expect("capabilities / slots");
    let (held, slots): (u64, u64) = (held.parse().unwrap(), slots.parse().unwrap());
    assert!(
        // 16: a table's first size (abi::CAP_TABLE_INITIAL_SLOTS).
        held > 0 && held <= slots && slots >= 16,
        "{shell_memory}"
    );
    terminal.expect_prompt(PROMPT);

    // A spawn whose budget cannot hold the program is refused; the shell goes on.
    run(&mut terminal, "spawn names budget=16K");
    assert_eq!(terminal.expect_line("error: "), "error: spawn: OutOfMemory");
    terminal.expect_prompt(PROMPT);
    run(&mut terminal, "spawn names budget=lots");
    assert_eq!(
        terminal.expect_line("error: "),
        "error: spawn: \"lots\" is not a size (such as 512K or 4M) (usage: spawn <module> [budget=<size>] [args])"
    );
    terminal.expect_prompt(PROMPT);

    run(&mut terminal, "frobnicate now");
    assert_eq!(
        terminal.expect_line("error: "),
        "error: unknown command \"frobnicate\" (type help for the list)"
    );
    terminal.expect_prompt(PROMPT);

    // Bad arguments: one error line each.
    run(&mut terminal, "kill abc");
    assert_eq!(
        terminal.expect_line("error: "),
        "error: kill: \"abc\" is not a number (usage: kill <pid>)"
    );
    terminal.expect_prompt(PROMPT);
    run(&mut terminal, "kill 999");
    assert_eq!(
        terminal.expect_line("error: "),
        "error: kill: no process 999 started by init"
    );
    terminal.expect_prompt(PROMPT);

    // 4 KiB of garbage in one line: one error line, then a prompt that works.
    terminal.send_line(&garbage(4096));
    assert_eq!(
        terminal.expect_line("error: "),
        "error: line too long (4096 bytes, at most 512)"
    );
    terminal.expect_prompt(PROMPT);
    run(&mut terminal, "echo still here");
    assert_eq!(terminal.expect_line("still"), "still here");
    terminal.expect_prompt(PROMPT);

    // Kill the console server: init reports the death and the restart, and the shell's
    // output comes back through the new console.
    run(&mut terminal, &format!("kill {console_pid}"));
    terminal.expect_line("init: console was killed; restarting in ");
    let restarted = terminal.expect_line("init: started console (pid ");
    let new_pid = number_after(&restarted, "(pid ").expect("the new console's pid");
    assert_ne!(new_pid, console_pid);
    terminal.expect_prompt(PROMPT);
    run(&mut terminal, "echo back again");
    assert_eq!(terminal.expect_line("back"), "back again");
    terminal.expect_prompt(PROMPT);

    run(&mut terminal, "poweroff");
    terminal.expect_line("powering off");
    let outcome = terminal.finish();
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn shell_x86_64() {
    shell(Arch::X86_64, tests::default_cpus());
}

#[test]
fn shell_aarch64() {
    shell(Arch::Aarch64, tests::default_cpus());
}

#[test]
fn shell_x86_64_smp4() {
    shell(Arch::X86_64, 4);
}

#[test]
fn shell_aarch64_smp4() {
    shell(Arch::Aarch64, 4);
}
