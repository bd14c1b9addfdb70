//! The console's output side: text from many clients put on one terminal so that lines from
//! different clients never interleave within a line.
//!
//! Each client's text is held until it ends a line, then the whole line goes out (LF becomes
//! CR LF; a client's CR is dropped, so no client can overwrite another's line). A client may
//! [`Output::flush`] a line it has not ended — a prompt such as `keel> ` — which then stays
//! *open* on the terminal; when another client's line arrives meanwhile, the open line is
//! erased, the other line printed, and the open line drawn again below it (the console then
//! redraws what the person had typed, see [`Emitted::redraw_input`]). Pending text is bounded
//! per client ([`PENDING_MAX`]: a longer line goes out in pieces) and so is the number of
//! clients ([`CLIENTS_MAX`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// The most clients with text pending at once.
pub const CLIENTS_MAX: usize = 32;
/// The longest pending line per client; at this length it goes out as a line of its own.
pub const PENDING_MAX: usize = 256;

/// Carriage return, then erase to the end of the line (ECMA-48 EL).
const ERASE_LINE: &[u8] = b"\r\x1b[K";

/// Refused: a new client while [`CLIENTS_MAX`] have text pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyClients;

/// What one call put on the terminal, beyond the bytes themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emitted {
    /// The open line was erased and drawn again: the console must write the person's
    /// typed input after it again.
    pub redraw_input: bool,
}

/// The terminal's output, shared by clients `C`.
#[derive(Debug)]
pub struct Output<C> {
    pending: BTreeMap<C, Vec<u8>>,
    /// The line on the terminal that is not ended, and whose it is.
    open: Option<(C, Vec<u8>)>,
}

impl<C: Ord + Copy> Default for Output<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Ord + Copy> Output<C> {
    pub const fn new() -> Self {
        Self {
            pending: BTreeMap::new(),
            open: None,
        }
    }

    /// `client` wrote `bytes`: append every line it completed to `terminal`.
    pub fn write(
        &mut self,
        client: C,
        bytes: &[u8],
        terminal: &mut Vec<u8>,
    ) -> Result<Emitted, TooManyClients> {
        if !self.pending.contains_key(&client) && self.pending.len() >= CLIENTS_MAX {
            return Err(TooManyClients);
        }
        let mut emitted = Emitted::default();
        let mut line = self.pending.remove(&client).unwrap_or_default();
        for &byte in bytes {
            match byte {
                b'\r' => {}
                b'\n' => {
                    emitted.redraw_input |= self.emit_line(client, &line, terminal);
                    line.clear();
                }
                _ => {
                    line.push(byte);
                    if line.len() == PENDING_MAX {
                        emitted.redraw_input |= self.emit_line(client, &line, terminal);
                        line.clear();
                    }
                }
            }
        }
        if !line.is_empty() {
            self.pending.insert(client, line);
        }
        Ok(emitted)
    }

    /// Put `client`'s unended text on the terminal now (a prompt); it stays the open line.
    pub fn flush(&mut self, client: C, terminal: &mut Vec<u8>) {
        let Some(text) = self.pending.remove(&client) else {
            return;
        };
        match &mut self.open {
            Some((owner, open)) if *owner == client => {
                terminal.extend_from_slice(&text);
                if open.len() + text.len() <= PENDING_MAX {
                    open.extend_from_slice(&text);
                }
            }
            Some(_) => {
                // Another client's line is open: end it, then open this one.
                terminal.extend_from_slice(b"\r\n");
                terminal.extend_from_slice(&text);
                self.open = Some((client, text));
            }
            None => {
                terminal.extend_from_slice(&text);
                self.open = Some((client, text));
            }
        }
    }

    /// The person ended the line on the terminal (the console echoed Enter or Ctrl-C): no
    /// line is open any more.
    pub fn input_line_ended(&mut self) {
        self.open = None;
    }

    /// `client` is gone: its unended text goes out as a line, and it no longer counts.
    pub fn client_died(&mut self, client: C, terminal: &mut Vec<u8>) -> Emitted {
        let mut emitted = Emitted::default();
        if let Some(line) = self.pending.remove(&client) {
            emitted.redraw_input = self.emit_line(client, &line, terminal);
        }
        if self
            .open
            .as_ref()
            .is_some_and(|(owner, _)| *owner == client)
        {
            terminal.extend_from_slice(b"\r\n");
            self.open = None;
        }
        emitted
    }

    /// Put one whole line of `client` on the terminal. Returns whether an open line of
    /// another client was redrawn.
    fn emit_line(&mut self, client: C, line: &[u8], terminal: &mut Vec<u8>) -> bool {
        match &self.open {
            Some((owner, _)) if *owner == client => {
                // The client ends its own open line.
                terminal.extend_from_slice(line);
                terminal.extend_from_slice(b"\r\n");
                self.open = None;
                false
            }
            Some((_, open)) => {
                terminal.extend_from_slice(ERASE_LINE);
                terminal.extend_from_slice(line);
                terminal.extend_from_slice(b"\r\n");
                terminal.extend_from_slice(open);
                true
            }
            None => {
                terminal.extend_from_slice(line);
                terminal.extend_from_slice(b"\r\n");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        core::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn whole_lines_from_each_client_never_interleave() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        output.write(1, b"init: starting ", &mut terminal).unwrap();
        output
            .write(2, b"names: ready\nnames: ", &mut terminal)
            .unwrap();
        output
            .write(1, b"names\ninit: starting shell\n", &mut terminal)
            .unwrap();
        output.write(2, b"2 names\n", &mut terminal).unwrap();
        assert_eq!(
            text(&terminal),
            "names: ready\r\ninit: starting names\r\ninit: starting shell\r\nnames: 2 names\r\n"
        );
    }

    #[test]
    fn a_prompt_stays_open_and_is_redrawn_below_other_lines() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        output.write("shell", b"keel> ", &mut terminal).unwrap();
        assert!(terminal.is_empty(), "a partial line waits");
        output.flush("shell", &mut terminal);
        assert_eq!(text(&terminal), "keel> ");
        terminal.clear();
        let emitted = output
            .write("init", b"init: console restarted\n", &mut terminal)
            .unwrap();
        assert!(emitted.redraw_input);
        assert_eq!(text(&terminal), "\r\x1b[Kinit: console restarted\r\nkeel> ");
        // The person presses Enter: the shell's output starts on a fresh line.
        output.input_line_ended();
        terminal.clear();
        let emitted = output.write("shell", b"hello\n", &mut terminal).unwrap();
        assert!(!emitted.redraw_input);
        assert_eq!(text(&terminal), "hello\r\n");
    }

    #[test]
    fn a_client_ends_its_own_open_line() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        output.write(7, b"progress: ", &mut terminal).unwrap();
        output.flush(7, &mut terminal);
        output.write(7, b"50%", &mut terminal).unwrap();
        output.flush(7, &mut terminal);
        output.write(7, b" done\n", &mut terminal).unwrap();
        output.write(8, b"other\n", &mut terminal).unwrap();
        assert_eq!(text(&terminal), "progress: 50% done\r\nother\r\n");
    }

    #[test]
    fn carriage_returns_from_clients_are_dropped() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        output
            .write(1, b"innocent\rEVIL\r\n", &mut terminal)
            .unwrap();
        assert_eq!(text(&terminal), "innocentEVIL\r\n");
    }

    #[test]
    fn long_lines_go_out_in_bounded_pieces() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        output
            .write(1, &[b'x'; PENDING_MAX * 3 + 10], &mut terminal)
            .unwrap();
        assert_eq!(terminal.len(), 3 * (PENDING_MAX + 2));
        assert_eq!(output.pending[&1].len(), 10);
    }

    #[test]
    fn clients_are_bounded_and_released_when_they_die() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        for client in 0..CLIENTS_MAX {
            output.write(client, b"partial", &mut terminal).unwrap();
        }
        assert_eq!(
            output.write(CLIENTS_MAX, b"x", &mut terminal),
            Err(TooManyClients)
        );
        // A client that already has text pending can still write.
        output.write(0, b" more\n", &mut terminal).unwrap();
        output.write(1, b"\n", &mut terminal).unwrap();
        terminal.clear();
        output.client_died(2, &mut terminal);
        assert_eq!(text(&terminal), "partial\r\n");
        assert!(output.write(CLIENTS_MAX, b"x", &mut terminal).is_ok());
    }

    #[test]
    fn a_dead_clients_open_line_is_ended() {
        let mut output = Output::new();
        let mut terminal = Vec::new();
        output.write(1, b"keel> ", &mut terminal).unwrap();
        output.flush(1, &mut terminal);
        output.client_died(1, &mut terminal);
        output
            .write(2, b"init: shell crashed\n", &mut terminal)
            .unwrap();
        assert_eq!(text(&terminal), "keel> \r\ninit: shell crashed\r\n");
    }
}
