//! `console`: the serial console's driver and server, in user space.
//!
//! Capabilities (from `init`, `rt::service::slots`): the UART's interrupt line, its
//! registers (x86_64: 16550 I/O ports through `port_in`/`port_out`; AArch64: PL011 MMIO
//! mapped with `mmio_map`), and receive rights on two endpoints:
//! - output (`CONSOLE_WRITE`): the main thread puts each client's text (clients are told
//!   apart by their badge) through `ucore::output`: whole lines per client, a prompt kept
//!   open and redrawn (with what was typed) below another client's line;
//! - input (`CONSOLE_READ`): the input thread answers the reader (the shell) with the next
//!   event of the line discipline (`ucore::line`: echo, erase, Ctrl-U, Ctrl-C). It drains
//!   the receive FIFO, acknowledges the interrupt (`irq_ack`) and waits on the IRQ
//!   notification until an event is complete. `CONSOLE_KEYS` never waits: it drops what
//!   was typed and not read and says how much (`top` runs until a key).
//!
//! - the kernel log: once the log thread calls `log_bind`, the kernel keeps its log lines
//!   for the console, which prints them like a client's.
//!
//! Weak spots: typed bytes are only taken (and echoed) while a reader waits, so typing
//! ahead relies on the UART's FIFO and QEMU's flow control; every output byte is one or
//! two system calls on x86_64 (port I/O through the kernel).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use abi::{Error, Handle, MessageInfo, PAGE_SIZE};
use rt::ipc::{self, IpcBuffer};
use rt::proc;
use rt::service::{self, INPUT_INTERRUPT, INPUT_LINE, INPUT_TOO_LONG, label, slot, slots};
use rt::sync::SpinLock;
use ucore::line::{Event, LineDiscipline};
use ucore::output::{Output, TooManyClients};

/// Where the PL011's registers are mapped (AArch64).
const MMIO_ADDRESS: u64 = 0x0000_2000_0000_0000;
/// The input thread's stack.
const INPUT_STACK: u64 = 0x0000_2100_0000_0000;
const INPUT_STACK_BYTES: u64 = 16 * PAGE_SIZE;
/// The log thread's stack.
const LOG_STACK: u64 = 0x0000_2200_0000_0000;
/// The client the kernel log counts as in `ucore::output` (no badge `init` mints).
const KERNEL_BADGE: u64 = u64::MAX;
/// The notification bit of the UART's interrupt.
const IRQ_BIT: u64 = 1;

/// The UART's registers.
enum Uart {
    /// 16550 at I/O port `base`.
    Ports { ports: Handle, base: u64 },
    /// PL011, mapped.
    Mmio(proc::Mmio),
}

// 16550 registers and bits.
const THR_RBR: u64 = 0;
const IER: u64 = 1;
const LSR: u64 = 5;
const MCR: u64 = 4;
const IER_RECEIVE: u64 = 1;
const MCR_DTR_RTS_OUT2: u64 = 0b1011;
const LSR_DATA: u32 = 1 << 0;
const LSR_THR_EMPTY: u32 = 1 << 5;
// PL011 registers and bits.
const DR: u64 = 0x00;
const FR: u64 = 0x18;
const IMSC: u64 = 0x38;
const ICR: u64 = 0x44;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const RECEIVE_INTERRUPTS: u32 = (1 << 4) | (1 << 6);

impl Uart {
    fn open() -> Result<Self, Error> {
        let device = slot(slots::CONSOLE_DEVICE);
        let (kind, _) = ipc::cap_identify(device)?;
        if kind == abi::ObjectType::IoPorts {
            let uart = Uart::Ports {
                ports: device,
                base: 0x3f8,
            };
            uart.set(MCR, MCR_DTR_RTS_OUT2)?;
            uart.set(IER, IER_RECEIVE)?;
            Ok(uart)
        } else {
            // The capability covers whole pages from the UART's base (QEMU `virt`: the
            // base is page-aligned).
            let mmio = proc::Mmio::map(device, MMIO_ADDRESS, PAGE_SIZE)?;
            let imsc = mmio.read32(IMSC).ok_or(Error::InvalidArgument)?;
            mmio.write32(IMSC, imsc | RECEIVE_INTERRUPTS);
            Ok(Uart::Mmio(mmio))
        }
    }

    fn set(&self, register: u64, value: u64) -> Result<(), Error> {
        match self {
            Uart::Ports { ports, base } => proc::port_out(*ports, base + register, 1, value),
            Uart::Mmio(_) => Ok(()),
        }
    }

    fn put(&self, byte: u8) {
        match self {
            Uart::Ports { ports, base } => {
                while proc::port_in(*ports, base + LSR, 1).is_ok_and(|lsr| lsr & LSR_THR_EMPTY == 0)
                {
                }
                let _ = proc::port_out(*ports, base + THR_RBR, 1, u64::from(byte));
            }
            Uart::Mmio(mmio) => {
                while mmio.read32(FR).is_some_and(|fr| fr & FR_TXFF != 0) {}
                mmio.write32(DR, u32::from(byte));
            }
        }
    }

    fn get(&self) -> Option<u8> {
        match self {
            Uart::Ports { ports, base } => {
                let lsr = proc::port_in(*ports, base + LSR, 1).ok()?;
                if lsr & LSR_DATA == 0 {
                    return None;
                }
                // why: a 1-byte read.
                proc::port_in(*ports, base + THR_RBR, 1)
                    .ok()
                    .map(|value| value as u8)
            }
            Uart::Mmio(mmio) => {
                if mmio.read32(FR)? & FR_RXFE != 0 {
                    return None;
                }
                // why: the data byte is bits 0..8 of DR.
                mmio.read32(DR).map(|value| value as u8)
            }
        }
    }

    /// Whether a received byte waits.
    fn has_data(&self) -> bool {
        match self {
            Uart::Ports { ports, base } => {
                proc::port_in(*ports, base + LSR, 1).is_ok_and(|lsr| lsr & LSR_DATA != 0)
            }
            Uart::Mmio(mmio) => mmio.read32(FR).is_some_and(|fr| fr & FR_RXFE == 0),
        }
    }

    /// Clear the receive interrupt at the device (PL011: receive timeout).
    fn clear(&self) {
        if let Uart::Mmio(mmio) = self {
            mmio.write32(ICR, RECEIVE_INTERRUPTS);
        }
    }
}

/// The terminal: the UART, the clients' output (`ucore::output`: whole lines per client,
/// a prompt kept open) and the line being typed. One lock, so echo and client lines never
/// cut into each other.
struct Screen {
    uart: Uart,
    output: Output<u64>,
    discipline: LineDiscipline,
}

impl Screen {
    fn put_all(&self, bytes: &[u8]) {
        for &byte in bytes {
            self.uart.put(byte);
        }
    }

    /// Client `badge` wrote `bytes`: its complete lines go out, and its unended text (a
    /// prompt) is shown as the open line.
    fn write(&mut self, badge: u64, bytes: &[u8]) {
        let mut terminal = Vec::new();
        let emitted = match self.output.write(badge, bytes, &mut terminal) {
            Ok(emitted) => emitted,
            Err(TooManyClients) => {
                // Every slot holds another client's unended text: show this text as it is.
                terminal.extend_from_slice(bytes);
                Default::default()
            }
        };
        self.output.flush(badge, &mut terminal);
        if emitted.redraw_input {
            terminal.extend_from_slice(self.discipline.pending());
        }
        self.put_all(&terminal);
    }
}

static SCREEN: SpinLock<Option<Screen>> = SpinLock::new(None);

fn main(_: u64) -> i64 {
    let uart = match Uart::open() {
        Ok(uart) => uart,
        Err(_) => return 1,
    };
    *SCREEN.lock() = Some(Screen {
        uart,
        output: Output::new(),
        discipline: LineDiscipline::default(),
    });
    let Ok(buffer) = service::ipc_buffer(0) else {
        return 2;
    };
    for (entry, stack) in [
        (input_thread as extern "C" fn(u64) -> !, INPUT_STACK),
        (log_thread, LOG_STACK),
    ] {
        if rt::memory_map(stack, INPUT_STACK_BYTES, abi::MAP_WRITE).is_err()
            || proc::thread_create(entry, stack + INPUT_STACK_BYTES, 0, abi::PRIORITY_NORMAL)
                .is_err()
        {
            return 3;
        }
    }
    serve_output(&buffer)
}

/// The output endpoint's loop.
fn serve_output(buffer: &IpcBuffer) -> i64 {
    let endpoint = slot(slots::CONSOLE_OUT_SERVE);
    let mut bytes = Vec::with_capacity(service::BYTES_MAX);
    let mut answer = (MessageInfo::default(), [0u64; 4]);
    loop {
        let received = match ipc::reply_recv(endpoint, answer.0, answer.1) {
            Ok(received) => received,
            // Only `recv`'s own errors come back (a dead caller is skipped): the endpoint
            // capability is wrong, which does not get better.
            Err(error) => return 100 + i64::from(error.code()),
        };
        answer = match received.info.label() {
            label::CONSOLE_WRITE => {
                bytes.clear();
                service::get_bytes(buffer, received.info, received.words[0], &mut bytes);
                if let Some(screen) = SCREEN.lock().as_mut() {
                    screen.write(received.badge, &bytes);
                }
                (MessageInfo::default(), [0, bytes.len() as u64, 0, 0])
            }
            _ => (
                MessageInfo::default(),
                [u64::from(Error::InvalidArgument.code()), 0, 0, 0],
            ),
        };
    }
}

/// The kernel log's thread: takes the log (`log_bind`) and prints it as another client,
/// so kernel lines and server lines never cut into each other.
extern "C" fn log_thread(_: u64) -> ! {
    let device = slot(slots::CONSOLE_DEVICE);
    let Ok(notification) = ipc::notification_create() else {
        rt::exit(120)
    };
    if proc::log_bind(device, notification, 1).is_err() {
        rt::exit(121)
    }
    let mut chunk = [0u8; 512];
    loop {
        match proc::log_read(device, &mut chunk) {
            Ok(count) if count > 0 => {
                if let Some(screen) = SCREEN.lock().as_mut() {
                    screen.write(KERNEL_BADGE, &chunk[..count]);
                }
            }
            _ => {
                let _ = ipc::wait(notification);
            }
        }
    }
}

/// The input endpoint's thread.
extern "C" fn input_thread(_: u64) -> ! {
    let code = match input_loop() {
        Ok(()) => 0,
        Err(error) => 100 + i64::from(error.code()),
    };
    rt::exit(code)
}

fn input_loop() -> Result<(), Error> {
    let buffer = service::ipc_buffer(1)?;
    let notification = ipc::notification_create()?;
    let irq = slot(slots::CONSOLE_IRQ);
    proc::irq_bind(irq, notification, IRQ_BIT)?;
    let endpoint = slot(slots::CONSOLE_IN_SERVE);
    let mut events: VecDeque<Event> = VecDeque::new();
    let mut echo = Vec::new();
    loop {
        let request = ipc::recv(endpoint)?;
        if request.info.label() == label::CONSOLE_KEYS {
            let keys = take_keys(&mut events);
            proc::irq_ack(irq)?;
            let _ = ipc::reply(MessageInfo::default(), [keys, 0, 0, 0]);
            continue;
        }
        if request.info.label() != label::CONSOLE_READ {
            let _ = ipc::reply(
                MessageInfo::default(),
                [u64::from(Error::InvalidArgument.code()), 0, 0, 0],
            );
            continue;
        }
        let event = loop {
            if let Some(event) = events.pop_front() {
                break event;
            }
            // Drain what has arrived, then let the line interrupt again and wait for it.
            if let Some(screen) = SCREEN.lock().as_mut() {
                while let Some(byte) = screen.uart.get() {
                    if let Some(event) = screen.discipline.input(byte, &mut echo) {
                        screen.output.input_line_ended();
                        events.push_back(event);
                    }
                    screen.put_all(&echo);
                    echo.clear();
                }
                screen.uart.clear();
            }
            if !events.is_empty() {
                continue;
            }
            proc::irq_ack(irq)?;
            // A byte that arrived after the drain may have raised no new edge (or had its
            // interrupt cleared above): look once more before sleeping.
            let waiting = SCREEN
                .lock()
                .as_ref()
                .is_some_and(|screen| screen.uart.has_data());
            if !waiting {
                ipc::wait(notification)?;
            }
        };
        let words = match &event {
            Event::Line(line) => {
                let count = service::put_bytes(&buffer, line);
                (count, [INPUT_LINE, line.len() as u64, 0, 0])
            }
            Event::Interrupt => (0, [INPUT_INTERRUPT, 0, 0, 0]),
            Event::TooLong { length } => (0, [INPUT_TOO_LONG, *length as u64, 0, 0]),
        };
        let info = MessageInfo::new(0, words.0, 0).unwrap_or_default();
        // A reader that died meanwhile loses its line; the next reader gets the next one.
        let _ = ipc::reply(info, words.1);
    }
}

/// `CONSOLE_KEYS`: drop the events not yet read and every byte waiting in the UART,
/// unechoed; how many there were.
fn take_keys(events: &mut VecDeque<Event>) -> u64 {
    let mut keys = events.len() as u64;
    events.clear();
    if let Some(screen) = SCREEN.lock().as_mut() {
        while screen.uart.get().is_some() {
            keys += 1;
        }
        screen.uart.clear();
    }
    keys
}

rt::entry!(main);
