//! `print!`/`println!` for user programs: format into a fixed buffer and send it with
//! `debug_write` as one kernel-log line (no allocation).

use core::fmt::{self, Write};

/// The line being formatted: at most `abi::DEBUG_WRITE_MAX` bytes; longer text is cut.
pub struct Line {
    buffer: [u8; abi::DEBUG_WRITE_MAX as usize],
    length: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self {
            buffer: [0; abi::DEBUG_WRITE_MAX as usize],
            length: 0,
        }
    }

    /// Send the line.
    pub fn flush(&self) {
        let _ = crate::debug_write(&self.buffer[..self.length]);
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.buffer.len() - self.length;
        let take = text.len().min(room);
        self.buffer[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        Ok(())
    }
}

/// Print one line (formatted) to the kernel log.
pub fn print_line(arguments: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_fmt(arguments);
    line.flush();
}

#[macro_export]
macro_rules! println {
    ($($argument:tt)*) => { $crate::print::print_line(format_args!($($argument)*)) };
}
