//! In-kernel tests of device interrupts (scenario `kernel`): the console
//! UART raises its interrupt without external input (internal loopback where the UART has
//! it), and the line is claimed through [`crate::hwirq`] exactly as a driver's IRQ
//! capability will: masked on every delivery, delivered again only after unmask, an
//! interrupt that arrived while masked delivered after the unmask. Interrupts on no line,
//! and on a line nobody claimed, are counted and survived.
//!
//! The kernel log shares the UART: between `console_irq_test_begin` and `…_end` nothing is
//! printed; outcomes are collected and printed after the UART is restored.

use alloc::format;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arch_api::{ConsoleIrqSource, Delivery, InterruptSelfTest, Interrupts, Platform};

use crate::hwirq::{self, IrqError, IrqLine, Target};
use crate::testing::ktest::Suite;
use crate::{Cpu, time};

/// The byte sent through the UART: a carriage return, invisible on a terminal where the
/// UART has no loopback and the byte leaves the machine.
const BYTE: u8 = b'\r';
/// Timer ticks to wait for an interrupt that must come (it comes within one).
const DEADLINE: u64 = 50;
/// Timer ticks to wait for an interrupt that must not come.
const SETTLE: u64 = 3;
/// The word the test target is called with.
const WORD: usize = 0x1d;

static TARGET_CALLS: AtomicU64 = AtomicU64::new(0);
static TARGET_WORD: AtomicUsize = AtomicUsize::new(0);

fn target(word: usize) {
    TARGET_CALLS.fetch_add(1, Ordering::Relaxed);
    TARGET_WORD.store(word, Ordering::Relaxed);
}

/// Halt until `done()` or `ticks` timer ticks have passed; returns `done()`.
fn wait_until(ticks: u64, done: impl Fn() -> bool) -> bool {
    let deadline = time::ticks() + ticks;
    while !done() && time::ticks() < deadline {
        Cpu::wait_for_interrupt();
    }
    done()
}

pub fn run(suite: &mut Suite) {
    refused_lines(suite);
    console_uart(suite);
    unexpected_interrupts(suite);
}

fn refused_lines(suite: &mut Suite) {
    let name = "irq invalid and claimed lines are refused";
    let outcome = (|| {
        let count = Cpu::line_count();
        if count == 0 {
            return Err("no interrupt lines (no controller found)");
        }
        if hwirq::claim(count).map(|_| ()) != Err(IrqError::InvalidLine)
            || hwirq::claim(u32::MAX).map(|_| ()) != Err(IrqError::InvalidLine)
        {
            return Err("a line past the controller's last was claimed");
        }
        if Cpu::enable(count, Delivery::MaskUntilUnmask).is_ok() {
            return Err("the controller enabled a line past its last");
        }
        let line = Cpu::console_line().ok_or("no console line")?;
        let held = hwirq::claim(line).map_err(|_| "the console line cannot be claimed")?;
        if hwirq::claim(line).map(|_| ()) != Err(IrqError::InUse) {
            return Err("a held line was claimed twice");
        }
        drop(held);
        hwirq::claim(line).map_err(|_| "a released line cannot be claimed again")?;
        Ok(())
    })();
    suite.check(name, outcome);
}

/// What the UART phase found (collected silently, printed afterwards).
struct Findings {
    delivery: Result<(), &'static str>,
    masking: Result<(), &'static str>,
}

/// The UART sequence twice: with the trigger mode the firmware describes (x86_64 COM1:
/// edge, so the I/O APIC's lazy masking; AArch64 PL011: level), then with the other one.
fn console_uart(suite: &mut Suite) {
    let Some(line) = Cpu::console_line() else {
        suite.check("irq console UART interrupt", Err("no console line"));
        return;
    };
    let Some(firmware_level) = Cpu::set_trigger_for_test(line, None) else {
        suite.check("irq console UART interrupt", Err("no trigger control"));
        return;
    };
    console_uart_with(suite, line, firmware_level);
    if Cpu::set_trigger_for_test(line, Some(!firmware_level)) == Some(!firmware_level) {
        console_uart_with(suite, line, !firmware_level);
    } else {
        suite.check(
            "irq console UART with the other trigger mode",
            Err("the trigger mode could not be changed"),
        );
    }
    let _ = Cpu::set_trigger_for_test(line, None);
}

fn console_uart_with(suite: &mut Suite, console_line: u32, level: bool) {
    let trigger = if level { "level" } else { "edge" };
    let irq = match hwirq::claim(console_line) {
        Ok(irq) => irq,
        Err(_) => {
            suite.check("irq console UART interrupt", Err("cannot claim its line"));
            return;
        }
    };
    irq.set_target(Some(Target {
        function: target,
        word: WORD,
    }));
    let calls_before = TARGET_CALLS.load(Ordering::Relaxed);
    let unexpected_before = Cpu::unexpected_interrupts();
    let unclaimed_before = hwirq::unclaimed();
    let Some(source) = Cpu::console_irq_test_begin() else {
        suite.check(
            "irq console UART interrupt",
            Err("the UART cannot raise its interrupt here"),
        );
        return;
    };
    let line = irq.line();
    let (mut findings, received) = uart_phases(&irq);
    Cpu::console_irq_test_end();
    drop(irq);
    // The UART is the kernel log's again from here on.

    let expected_byte = match source {
        ConsoleIrqSource::ReceiveLoopback => Some(BYTE),
        ConsoleIrqSource::TransmitDone => None,
    };
    if findings.delivery.is_ok() {
        findings.delivery = if received.iter().any(|&byte| byte != expected_byte) {
            Err("the byte read back is not the byte sent")
        } else if TARGET_CALLS.load(Ordering::Relaxed) != calls_before + 4 {
            Err("the line's target was not called once per delivery")
        } else if TARGET_WORD.load(Ordering::Relaxed) != WORD {
            Err("the target was called with another word")
        } else if Cpu::unexpected_interrupts() != unexpected_before
            || hwirq::unclaimed() != unclaimed_before
        {
            Err("an unexpected interrupt was counted (another line, or a masked line delivering)")
        } else {
            Ok(())
        };
    }
    let how = match source {
        ConsoleIrqSource::ReceiveLoopback => "receive interrupt, internal loopback",
        ConsoleIrqSource::TransmitDone => {
            "transmit interrupt: this UART model has no internal loopback"
        }
    };
    suite.check(
        &format!("irq {trigger}-triggered console UART interrupt arrives on line {line} ({how})"),
        findings.delivery,
    );
    suite.check(
        &format!(
            "irq masked {trigger}-triggered line does not deliver, unmask delivers the pending interrupt"
        ),
        findings.masking,
    );
}

/// The silent part: four bytes, each checked for exactly one delivery at the right time.
/// Returns the findings and what each clear read back.
fn uart_phases(irq: &IrqLine) -> (Findings, [Option<u8>; 4]) {
    let mut delivery = Ok(());
    let mut masking = Ok(());
    let delivered = || irq.delivered();
    // 1. Masked since the claim: a byte sent raises nothing until the unmask.
    Cpu::console_irq_test_send(BYTE);
    if wait_until(SETTLE, || delivered() > 0) {
        masking = Err("a line masked since its claim delivered");
    }
    irq.unmask();
    if !wait_until(DEADLINE, || delivered() >= 1) {
        masking = Err("the interrupt raised while masked did not arrive after unmask");
    }
    let first = Cpu::console_irq_test_clear();
    // 2. Acknowledged with the condition cleared: nothing more; a new byte: one delivery.
    irq.unmask();
    if wait_until(SETTLE, || delivered() > 1) {
        delivery = Err("an interrupt arrived after the condition was cleared");
    }
    Cpu::console_irq_test_send(BYTE);
    if !wait_until(DEADLINE, || delivered() >= 2) {
        delivery = Err("no interrupt for a byte sent while the line was unmasked");
    }
    let second = Cpu::console_irq_test_clear();
    // 3. Masked by that delivery (not acknowledged yet): a byte waits for the unmask.
    Cpu::console_irq_test_send(BYTE);
    if wait_until(SETTLE, || delivered() > 2) {
        masking = Err("a line masked by its delivery delivered again before unmask");
    }
    irq.unmask();
    if !wait_until(DEADLINE, || delivered() >= 3) {
        masking = Err("the interrupt pending at unmask did not arrive");
    }
    let third = Cpu::console_irq_test_clear();
    // 4. Acknowledged, then masked explicitly: a byte waits for the unmask.
    irq.unmask();
    irq.mask();
    Cpu::console_irq_test_send(BYTE);
    if wait_until(SETTLE, || delivered() > 3) {
        masking = Err("an explicitly masked line delivered");
    }
    irq.unmask();
    if !wait_until(DEADLINE, || delivered() >= 4) {
        masking = Err("the interrupt raised while explicitly masked did not arrive");
    }
    let fourth = Cpu::console_irq_test_clear();
    irq.unmask();
    if wait_until(SETTLE, || delivered() > 4) {
        delivery = Err("an extra delivery after the last acknowledgement");
    }
    if delivery.is_ok() && irq.take_pending() != 4 {
        delivery = Err("the pending count is not one per delivery");
    }
    (
        Findings { delivery, masking },
        [first, second, third, fourth],
    )
}

fn unexpected_interrupts(suite: &mut Suite) {
    let name = "irq unrouted and unclaimed interrupts are counted, not fatal";
    let outcome = (|| {
        let before = Cpu::unexpected_interrupts();
        if !Cpu::raise_unrouted() {
            return Err("cannot raise an unrouted interrupt");
        }
        wait_until(DEADLINE, || Cpu::unexpected_interrupts() > before);
        wait_until(SETTLE, || false);
        if Cpu::unexpected_interrupts() != before + 1 {
            return Err("the unrouted interrupt was not counted exactly once");
        }
        // A line the controller routes but the core never claimed.
        let console = Cpu::console_line();
        let spare = (1..=3)
            .filter_map(|back| Cpu::line_count().checked_sub(back))
            .find(|&line| Some(line) != console)
            .ok_or("no spare line")?;
        let unclaimed = hwirq::unclaimed();
        Cpu::enable(spare, Delivery::MaskUntilUnmask).map_err(|_| "cannot enable a spare line")?;
        if !Cpu::raise_line(spare) {
            let _ = Cpu::disable(spare);
            return Err("cannot raise the spare line");
        }
        wait_until(DEADLINE, || hwirq::unclaimed() > unclaimed);
        wait_until(SETTLE, || false);
        let _ = Cpu::disable(spare);
        if hwirq::unclaimed() != unclaimed + 1 {
            return Err("the unclaimed line's interrupt was not counted exactly once");
        }
        Ok(())
    })();
    suite.check(name, outcome);
}
