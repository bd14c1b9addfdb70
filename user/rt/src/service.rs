//! The protocols of Keel's servers and their client side: the console (write
//! whole lines, read edited lines), the name service and `init`'s process service, plus
//! the capability slots `init` gives each program.
//!
//! Bytes travel in message words 4.. (the IPC buffer), little-endian, 8 per word; word 0
//! holds the length. Every program thread that makes such calls maps its own IPC buffer
//! ([`ipc_buffer`]).

use alloc::vec::Vec;
use core::fmt;

use abi::{Error, Handle, MessageInfo, PAGE_SIZE, Rights};

use crate::ipc::{IpcBuffer, Received, call};

/// Where thread `n`'s IPC buffer page lies (below the heap, above the image).
pub const IPC_BUFFER_BASE: u64 = 0x0000_3000_0000_0000;
/// The most bytes one message carries (words 4..512).
pub const BYTES_MAX: usize = (MessageInfo::MAX_WORDS - MessageInfo::REGISTER_WORDS) * 8;

/// Message labels.
pub mod label {
    /// Console, output endpoint: write w0 bytes. Reply w0: bytes written.
    pub const CONSOLE_WRITE: u32 = 1;
    /// Console, input endpoint: the next input event. Reply w0: [`super::INPUT_LINE`],
    /// [`super::INPUT_INTERRUPT`] or [`super::INPUT_TOO_LONG`]; w1: its length.
    pub const CONSOLE_READ: u32 = 2;
    /// Console, input endpoint: never waits; takes and drops every byte typed and every
    /// input event not yet read. Reply w0: how many there were (a key was pressed).
    pub const CONSOLE_KEYS: u32 = 3;
    /// Names: register the endpoint in capability 0 as the name in w0..w4 (32 bytes).
    /// Reply w0: 0 or an `abi::Error` code.
    pub const NAMES_REGISTER: u32 = 1;
    /// Names: look the name in w0..w4 up. Reply: w0 status, capability 0 the endpoint.
    pub const NAMES_LOOKUP: u32 = 2;
    /// Names, from `init` only (badge 0): the client with badge w0 died; its names go.
    pub const NAMES_OWNER_DIED: u32 = 3;
    /// `init`'s process service: kill process w0. Reply w0: status.
    pub const PROCESS_KILL: u32 = 1;
    /// `init`'s process service: start the module named in w0..w4. Reply w0 status, w1 pid.
    pub const PROCESS_SPAWN: u32 = 2;
}

pub const INPUT_LINE: u64 = 0;
pub const INPUT_INTERRUPT: u64 = 1;
pub const INPUT_TOO_LONG: u64 = 2;

/// Capability slots of each program `init` starts (slot 0 is the program's first thread).
pub mod slots {
    pub const CONSOLE_IRQ: u32 = 1;
    pub const CONSOLE_DEVICE: u32 = 2;
    pub const CONSOLE_OUT_SERVE: u32 = 3;
    pub const CONSOLE_IN_SERVE: u32 = 4;
    pub const NAMES_SERVE: u32 = 1;
    /// Clients (the shell, and programs it spawns): the console's two endpoints first.
    pub const CONSOLE_OUT: u32 = 1;
    pub const CONSOLE_IN: u32 = 2;
    pub const SHELL_NAMES: u32 = 3;
    pub const SHELL_PROCESSES: u32 = 4;
    pub const SHELL_SYSTEM: u32 = 5;
    pub const SHELL_POWER: u32 = 6;
}

/// The handle of slot `slot` of a fresh table.
pub const fn slot(slot: u32) -> Handle {
    Handle::new(slot, 1)
}

/// Map and register the IPC buffer of this process's thread number `thread` (0: main).
pub fn ipc_buffer(thread: u64) -> Result<IpcBuffer, Error> {
    IpcBuffer::map(IPC_BUFFER_BASE + thread * PAGE_SIZE)
}

/// Put `bytes` (at most [`BYTES_MAX`]) in message words 4..; returns the message's word
/// count.
pub fn put_bytes(buffer: &IpcBuffer, bytes: &[u8]) -> usize {
    let bytes = &bytes[..bytes.len().min(BYTES_MAX)];
    for (index, chunk) in bytes.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        buffer.set_word(
            MessageInfo::REGISTER_WORDS + index,
            u64::from_le_bytes(word),
        );
    }
    MessageInfo::REGISTER_WORDS + bytes.len().div_ceil(8)
}

/// Append `length` bytes from message words 4.. (bounded by the words that arrived).
pub fn get_bytes(buffer: &IpcBuffer, info: MessageInfo, length: u64, out: &mut Vec<u8>) {
    let arrived = info.words().saturating_sub(MessageInfo::REGISTER_WORDS) * 8;
    let length = (length as usize).min(arrived).min(BYTES_MAX);
    for index in 0..length.div_ceil(8) {
        let word = buffer
            .word(MessageInfo::REGISTER_WORDS + index)
            .to_le_bytes();
        let take = (length - index * 8).min(8);
        out.extend_from_slice(&word[..take]);
    }
}

/// A name (at most 32 bytes) as four words.
pub fn name_words(name: &str) -> [u64; 4] {
    let mut bytes = [0u8; 32];
    let take = name.len().min(32);
    bytes[..take].copy_from_slice(&name.as_bytes()[..take]);
    core::array::from_fn(|index| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
        u64::from_le_bytes(word)
    })
}

/// The name in four words (up to the first NUL), if it is text.
pub fn words_name(words: &[u64; 4], out: &mut [u8; 32]) -> Option<usize> {
    for (index, word) in words.iter().enumerate() {
        out[index * 8..index * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    let length = out.iter().position(|&byte| byte == 0).unwrap_or(32);
    core::str::from_utf8(&out[..length]).ok().map(|_| length)
}

fn status(received: &Received) -> Result<(), Error> {
    match received.words[0] {
        0 => Ok(()),
        // why: servers reply with `abi::Error` codes, which fit 32 bits.
        code => Err(Error::from_code(code as u32).unwrap_or(Error::InvalidArgument)),
    }
}

/// A console client: the console's endpoints and this thread's IPC buffer.
pub struct Console {
    pub out: Handle,
    pub input: Handle,
    pub buffer: IpcBuffer,
}

impl Console {
    /// Write `bytes` (whole lines keep together: one message per [`BYTES_MAX`] bytes).
    /// A console that died mid-request is asked again once after a pause (it is being
    /// restarted).
    pub fn write(&self, bytes: &[u8]) -> Result<(), Error> {
        for chunk in bytes.chunks(BYTES_MAX) {
            let mut tries = 0;
            loop {
                let words = put_bytes(&self.buffer, chunk);
                let info = MessageInfo::new(label::CONSOLE_WRITE, words, 0)
                    .ok_or(Error::InvalidArgument)?;
                match call(self.out, info, [chunk.len() as u64, 0, 0, 0]) {
                    Ok(_) => break,
                    Err(Error::PeerDied) if tries < 50 => {
                        tries += 1;
                        let _ = crate::proc::sleep(2);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// The next input event: its kind (`INPUT_*`), and the line's bytes in `line`.
    pub fn read(&self, line: &mut Vec<u8>) -> Result<(u64, u64), Error> {
        line.clear();
        let info = MessageInfo::new(label::CONSOLE_READ, 0, 0).ok_or(Error::InvalidArgument)?;
        let received = call(self.input, info, [0; 4])?;
        let [kind, length, ..] = received.words;
        if kind == INPUT_LINE {
            get_bytes(&self.buffer, received.info, length, line);
        }
        Ok((kind, length))
    }

    /// Take and drop what was typed and not read (never waits): how many bytes and input
    /// events there were. A program that runs until a key is pressed asks this.
    pub fn take_keys(&self) -> Result<u64, Error> {
        let info = MessageInfo::new(label::CONSOLE_KEYS, 0, 0).ok_or(Error::InvalidArgument)?;
        let received = call(self.input, info, [0; 4])?;
        Ok(received.words[0])
    }

    /// A buffer for formatted output, sent by [`Printer::flush`].
    pub fn printer(&self) -> Printer<'_> {
        Printer {
            console: self,
            text: Vec::new(),
        }
    }
}

/// Formatted text gathered for one write (`write!` / `writeln!` into it; newlines become
/// CR LF at the console).
pub struct Printer<'a> {
    console: &'a Console,
    text: Vec<u8>,
}

impl Printer<'_> {
    /// The console this printer writes to.
    pub fn console(&self) -> &Console {
        self.console
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        let result = self.console.write(&self.text);
        self.text.clear();
        result
    }
}

impl fmt::Write for Printer<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.text.extend_from_slice(text.as_bytes());
        if self.text.len() >= BYTES_MAX {
            self.flush().map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

/// Register `endpoint` (a copy with [`CLIENT_RIGHTS`] travels; the caller keeps its own)
/// under `name` at the name service `names`, through `buffer` (this thread's).
pub fn names_register(
    names: Handle,
    buffer: &IpcBuffer,
    name: &str,
    endpoint: Handle,
) -> Result<(), Error> {
    let copy = crate::ipc::cap_copy(endpoint, CLIENT_RIGHTS)?;
    buffer.set_cap(0, copy);
    let info = MessageInfo::new(label::NAMES_REGISTER, 0, 1).ok_or(Error::InvalidArgument)?;
    let result = call(names, info, name_words(name)).and_then(|received| status(&received));
    // The copy moved to the name service, or is still ours when the call failed.
    let _ = crate::ipc::cap_delete(copy);
    result
}

/// Look `name` up at the name service `names`, through `buffer` (this thread's): the
/// endpoint capability it is registered with (the caller's to delete).
pub fn names_lookup(names: Handle, buffer: &IpcBuffer, name: &str) -> Result<Handle, Error> {
    let info = MessageInfo::new(label::NAMES_LOOKUP, 0, 0).ok_or(Error::InvalidArgument)?;
    let received = call(names, info, name_words(name))?;
    status(&received)?;
    if received.info.caps() != 1 {
        return Err(Error::InvalidArgument);
    }
    Ok(buffer.cap(0))
}

/// Ask `init`'s process service (`endpoint`) to do `label` with `words`.
pub fn process_request(endpoint: Handle, label: u32, words: [u64; 4]) -> Result<u64, Error> {
    let info = MessageInfo::new(label, 0, 0).ok_or(Error::InvalidArgument)?;
    let received = call(endpoint, info, words)?;
    status(&received)?;
    Ok(received.words[1])
}

/// A spawn request to `init`'s process endpoint: the module's name in words 0..4 and its
/// memory budget in bytes in word 4 (0: `init`'s default share), through `buffer`, this
/// thread's IPC buffer. Value: the new process's id.
pub fn spawn_request(
    endpoint: Handle,
    buffer: &IpcBuffer,
    module: &str,
    budget: u64,
) -> Result<u64, Error> {
    let info = MessageInfo::new(label::PROCESS_SPAWN, MessageInfo::REGISTER_WORDS + 1, 0)
        .ok_or(Error::InvalidArgument)?;
    buffer.set_word(MessageInfo::REGISTER_WORDS, budget);
    let received = call(endpoint, info, name_words(module))?;
    status(&received)?;
    Ok(received.words[1])
}

/// Rights a client gets on a server's endpoint.
pub const CLIENT_RIGHTS: Rights = Rights::WRITE.union(Rights::CALL).union(Rights::GRANT);
