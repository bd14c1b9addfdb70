//! Scenario `echo-input`: the test types into the guest's serial input and reads the
//! kernel's answers, prompts without a newline included — the harness the shell tests
//! drive. The kernel polls the UART (16550 on x86_64, PL011 on AArch64) and prints
//! each line back. One boot per architecture.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, expect_ending, options, selected, start};

const PROMPT: &str = "echo> ";

fn echo_input(arch: Arch) {
    if !selected(arch, &format!("echo-input on {arch}")) {
        return;
    }
    let mut terminal = start(&options(arch, "echo-input", "test=echo-input"));
    terminal.expect_prompt(PROMPT);
    terminal.send_line("hello keel");
    assert_eq!(
        terminal.expect_line("echo-input: got"),
        "echo-input: got \"hello keel\" (10 bytes)"
    );
    // Two lines in one write, CR LF and LF endings: both arrive, in order, whole.
    terminal.expect_prompt(PROMPT);
    terminal.send(b"first line\r\nsecond\n");
    assert_eq!(
        terminal.expect_line("echo-input: got"),
        "echo-input: got \"first line\" (10 bytes)"
    );
    assert_eq!(
        terminal.expect_line("echo-input: got"),
        "echo-input: got \"second\" (6 bytes)"
    );
    // Longer than the UART's receive FIFO and the kernel's line: reported, not echoed.
    terminal.expect_prompt(PROMPT);
    terminal.send_line(&"x".repeat(200));
    assert_eq!(
        terminal.expect_line("echo-input: line too long"),
        "echo-input: line too long (200 bytes, at most 64), dropped"
    );
    // Bytes that are not text come back escaped.
    terminal.expect_prompt(PROMPT);
    terminal.send(b"tab\there\x7f\r");
    assert_eq!(
        terminal.expect_line("echo-input: got"),
        "echo-input: got \"tab\\there\\x7f\" (9 bytes)"
    );
    terminal.expect_prompt(PROMPT);
    terminal.send_line("quit");
    terminal.expect_line("ok echo-input (4 lines echoed)");
    terminal.expect_line("1 passed, 0 failed");
    let outcome = terminal.finish();
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn echo_input_x86_64() {
    echo_input(Arch::X86_64);
}

#[test]
fn echo_input_aarch64() {
    echo_input(Arch::Aarch64);
}
