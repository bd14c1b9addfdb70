//! The console's line discipline: turns the bytes received on the serial line into edited
//! lines and events, and says what to echo.
//!
//! What a person types is echoed as it arrives; Backspace (`^H`) and DEL erase the last
//! character (a whole UTF-8 sequence); Ctrl-U erases the line; Ctrl-C drops the line and
//! raises [`Event::Interrupt`] for the foreground program; CR, LF and CR LF each end one
//! line. Terminal escape sequences (arrow keys: `ESC [ A`) are skipped whole, other control
//! bytes ignored. A line longer than the limit is not kept: its end yields
//! [`Event::TooLong`], so a megabyte of garbage costs a bounded buffer and one error.

use alloc::vec::Vec;

/// The default longest line, in bytes.
pub const LINE_MAX: usize = 512;

const CTRL_C: u8 = 0x03;
const BACKSPACE: u8 = 0x08;
const TAB: u8 = b'\t';
const CTRL_U: u8 = 0x15;
const ESCAPE: u8 = 0x1b;
const DELETE: u8 = 0x7f;
/// What erases one character on the terminal: back, blank, back.
const ERASE: &[u8] = b"\x08 \x08";

/// What a received byte completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole line, without its terminator (bytes: it may not be UTF-8).
    Line(Vec<u8>),
    /// Ctrl-C: the line so far is dropped; interrupt the foreground program.
    Interrupt,
    /// A line ended that was longer than the limit: `length` bytes were typed, none kept.
    TooLong { length: usize },
}

/// Where an escape sequence stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After `ESC`.
    Started,
    /// Inside `ESC [ …` until its final byte.
    Csi,
}

/// The line being edited.
#[derive(Debug)]
pub struct LineDiscipline {
    line: Vec<u8>,
    max: usize,
    /// Bytes typed beyond `max` on this line (the line is lost once this is non-zero).
    overflow: usize,
    /// The previous byte was CR, so an LF right after it ends nothing.
    after_cr: bool,
    escape: Escape,
}

impl Default for LineDiscipline {
    fn default() -> Self {
        Self::new(LINE_MAX)
    }
}

impl LineDiscipline {
    /// A discipline keeping lines of at most `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            line: Vec::with_capacity(max),
            max,
            overflow: 0,
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// The line typed so far (for redrawing it after output from elsewhere).
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Take one received byte: append what must be echoed to `echo`, and return the event
    /// it completes, if any.
    pub fn input(&mut self, byte: u8, echo: &mut Vec<u8>) -> Option<Event> {
        let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
        match self.escape {
            Escape::Started => {
                self.escape = if byte == b'[' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return None;
            }
            Escape::Csi => {
                // Parameters and intermediates are 0x20..=0x3f; a final byte ends it. A
                // control byte ends it too, and is handled as itself.
                if (0x20..=0x3f).contains(&byte) {
                    return None;
                }
                self.escape = Escape::None;
                if (0x40..=0x7e).contains(&byte) {
                    return None;
                }
            }
            Escape::None => {}
        }
        match byte {
            b'\n' if after_cr => None,
            b'\r' | b'\n' => {
                echo.extend_from_slice(b"\r\n");
                Some(self.end_line())
            }
            CTRL_C => {
                echo.extend_from_slice(b"^C\r\n");
                self.clear();
                Some(Event::Interrupt)
            }
            BACKSPACE | DELETE => {
                self.erase_one(echo);
                None
            }
            CTRL_U => {
                while !self.line.is_empty() || self.overflow > 0 {
                    self.erase_one(echo);
                }
                None
            }
            ESCAPE => {
                self.escape = Escape::Started;
                None
            }
            TAB | 0x20..=0x7e | 0x80..=0xff => {
                if self.overflow == 0 && self.line.len() < self.max {
                    self.line.push(byte);
                    echo.push(byte);
                } else {
                    // why: the buffer is full; count the byte so the error can say how
                    // long the line was, but keep nothing and echo nothing.
                    self.overflow = self.overflow.saturating_add(1);
                }
                None
            }
            // Other control bytes (NUL, bell, Ctrl-D, …) have no meaning here.
            _ => None,
        }
    }

    /// Erase the last character: a whole UTF-8 sequence, or one counted overflow byte (which
    /// was never echoed).
    fn erase_one(&mut self, echo: &mut Vec<u8>) {
        if self.overflow > 0 {
            self.overflow -= 1;
            return;
        }
        if self.line.is_empty() {
            return;
        }
        // A continuation byte is 0b10xx_xxxx: pop them and then their lead byte.
        while let Some(byte) = self.line.pop() {
            if byte & 0xc0 != 0x80 {
                break;
            }
        }
        echo.extend_from_slice(ERASE);
    }

    fn end_line(&mut self) -> Event {
        let event = if self.overflow > 0 {
            Event::TooLong {
                length: self.line.len().saturating_add(self.overflow),
            }
        } else {
            Event::Line(core::mem::replace(
                &mut self.line,
                Vec::with_capacity(self.max),
            ))
        };
        self.clear();
        event
    }

    fn clear(&mut self) {
        self.line.clear();
        self.overflow = 0;
        self.escape = Escape::None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `bytes`; return the events and everything echoed.
    fn feed(discipline: &mut LineDiscipline, bytes: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut echo = Vec::new();
        let events = bytes
            .iter()
            .filter_map(|&byte| discipline.input(byte, &mut echo))
            .collect();
        (events, echo)
    }

    fn line(text: &str) -> Event {
        Event::Line(text.as_bytes().to_vec())
    }

    #[test]
    fn typed_text_is_echoed_and_enter_ends_the_line() {
        let mut discipline = LineDiscipline::default();
        let (events, echo) = feed(&mut discipline, b"help\r");
        assert_eq!(events, [line("help")]);
        assert_eq!(echo, b"help\r\n");
        assert!(discipline.pending().is_empty());
    }

    #[test]
    fn cr_lf_and_lf_each_end_one_line() {
        let mut discipline = LineDiscipline::default();
        let (events, _) = feed(&mut discipline, b"a\r\nb\nc\r\rd\n\n");
        assert_eq!(
            events,
            [
                line("a"),
                line("b"),
                line("c"),
                line(""),
                line("d"),
                line("")
            ]
        );
    }

    #[test]
    fn backspace_and_delete_erase_one_character() {
        let mut discipline = LineDiscipline::default();
        let (events, echo) = feed(&mut discipline, b"lss\x7f\x08s\r");
        assert_eq!(events, [line("ls")]);
        assert_eq!(echo, b"lss\x08 \x08\x08 \x08s\r\n");
    }

    #[test]
    fn erasing_an_empty_line_does_nothing() {
        let mut discipline = LineDiscipline::default();
        let (events, echo) = feed(&mut discipline, b"\x7f\x7f\x08ok\r");
        assert_eq!(events, [line("ok")]);
        assert_eq!(echo, b"ok\r\n");
    }

    #[test]
    fn backspace_erases_a_whole_utf8_character() {
        let mut discipline = LineDiscipline::default();
        let (events, _) = feed(&mut discipline, "né€\x7f\x7f\r".as_bytes());
        assert_eq!(events, [line("n")]);
    }

    #[test]
    fn ctrl_u_kills_the_line() {
        let mut discipline = LineDiscipline::default();
        let (events, echo) = feed(&mut discipline, b"rm -rf\x15ps\r");
        assert_eq!(events, [line("ps")]);
        assert!(echo.starts_with(b"rm -rf"));
        assert_eq!(echo.windows(3).filter(|w| *w == ERASE).count(), 6);
    }

    #[test]
    fn ctrl_c_drops_the_line_and_interrupts() {
        let mut discipline = LineDiscipline::default();
        let (events, echo) = feed(&mut discipline, b"sleep 100\x03echo hi\r");
        assert_eq!(events, [Event::Interrupt, line("echo hi")]);
        assert!(echo.starts_with(b"sleep 100^C\r\n"));
    }

    #[test]
    fn escape_sequences_are_skipped_whole() {
        let mut discipline = LineDiscipline::default();
        // Up arrow, a cursor report with parameters, Alt-x, then text.
        let (events, echo) = feed(&mut discipline, b"\x1b[A\x1b[12;40Rab\x1bxc\r");
        assert_eq!(events, [line("abc")]);
        assert_eq!(echo, b"abc\r\n");
    }

    #[test]
    fn other_control_bytes_are_ignored() {
        let mut discipline = LineDiscipline::default();
        let (events, echo) = feed(&mut discipline, b"\0a\x07\x04b\x1a\r");
        assert_eq!(events, [line("ab")]);
        assert_eq!(echo, b"ab\r\n");
    }

    #[test]
    fn a_line_at_the_limit_is_kept() {
        let mut discipline = LineDiscipline::new(8);
        let (events, _) = feed(&mut discipline, b"12345678\r");
        assert_eq!(events, [line("12345678")]);
    }

    #[test]
    fn a_too_long_line_is_one_error_and_the_next_line_works() {
        let mut discipline = LineDiscipline::new(8);
        let (events, echo) = feed(&mut discipline, b"123456789abc\rok\r");
        assert_eq!(events, [Event::TooLong { length: 12 }, line("ok")]);
        // Nothing beyond the limit is echoed.
        assert_eq!(echo, b"12345678\r\nok\r\n");
    }

    #[test]
    fn erasing_back_under_the_limit_recovers_the_line() {
        let mut discipline = LineDiscipline::new(4);
        let (events, _) = feed(&mut discipline, b"abcdef\x7f\x7f\x7f\r");
        assert_eq!(events, [line("abc")]);
    }

    #[test]
    fn four_kib_of_garbage_gives_one_error_per_line_and_no_panic() {
        let mut discipline = LineDiscipline::default();
        // Deterministic noise over every byte value except the line ends and Ctrl-C/U.
        let mut state = 0x2545_f491_u32;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                match (state >> 24) as u8 {
                    b'\r' | b'\n' | CTRL_C | CTRL_U | BACKSPACE | DELETE | ESCAPE => b'#',
                    byte => byte,
                }
            })
            .collect();
        let kept = garbage.iter().filter(|&&b| b == TAB || b >= 0x20).count();
        assert!(kept > LINE_MAX);
        let (events, echo) = feed(&mut discipline, &garbage);
        assert!(events.is_empty());
        assert!(echo.len() <= LINE_MAX);
        let (events, _) = feed(&mut discipline, b"\r");
        assert_eq!(events, [Event::TooLong { length: kept }]);
        let (events, _) = feed(&mut discipline, b"help\r");
        assert_eq!(events, [line("help")]);
    }

    #[test]
    fn every_byte_value_in_every_state_is_handled() {
        // Each byte after each possible preceding byte: no panic, and the buffer stays
        // within the limit.
        let mut discipline = LineDiscipline::new(16);
        let mut echo = Vec::new();
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                discipline.input(first, &mut echo);
                discipline.input(second, &mut echo);
                assert!(discipline.pending().len() <= 16);
            }
            echo.clear();
        }
    }
}
