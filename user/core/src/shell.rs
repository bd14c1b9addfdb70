//! The shell's command table and parser: a typed line becomes a [`Command`] or a one-line
//! [`ParseError`].
//!
//! One table ([`COMMANDS`]) gives each command's name, usage and summary: `help` prints it
//! and the parser checks argument counts against it, so the two cannot disagree. Words are
//! separated by ASCII whitespace; `echo` prints the rest of the line as typed. Every error
//! renders as one line that quotes at most [`QUOTE_MAX`] characters of the input, escaped,
//! so hostile input cannot break the line or flood the console.

use alloc::vec::Vec;
use core::fmt;

use crate::line::{Event, LINE_MAX};

/// A process id as the kernel names processes.
pub type Pid = u32;

/// The most arguments `spawn` passes to a program.
pub const SPAWN_ARGS_MAX: usize = 8;
/// The longest module name `spawn` accepts.
pub const MODULE_NAME_MAX: usize = 32;
/// The most `ipcbench` rounds.
pub const IPCBENCH_ROUNDS_MAX: u32 = 100_000;
/// `ipcbench` rounds when none are given.
pub const IPCBENCH_ROUNDS_DEFAULT: u32 = 1000;
/// The longest counted `top` run, in seconds (one refresh each).
pub const TOP_SECONDS_MAX: u32 = 60;
/// How many characters of the input an error message quotes.
pub const QUOTE_MAX: usize = 24;

/// One row of the command table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: &'static str,
    /// The arguments, as `help` shows them.
    pub usage: &'static str,
    pub summary: &'static str,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "help",
        usage: "",
        summary: "list the commands",
    },
    CommandInfo {
        name: "ps",
        usage: "",
        summary: "processes and threads: state, priority, CPU time, last CPU",
    },
    CommandInfo {
        name: "top",
        usage: "[seconds]",
        summary: "per-thread CPU, switches, IPC, notifications, faults; each second until a key",
    },
    CommandInfo {
        name: "mem",
        usage: "",
        summary: "free and used frames; each process's memory budget and use",
    },
    CommandInfo {
        name: "caps",
        usage: "<pid>",
        summary: "the capabilities a process holds",
    },
    CommandInfo {
        name: "spawn",
        usage: "<module> [budget=<size>] [args]",
        summary: "start a boot module as a new process (memory budget: 512K, 4M…)",
    },
    CommandInfo {
        name: "kill",
        usage: "<pid>",
        summary: "end a process",
    },
    CommandInfo {
        name: "uptime",
        usage: "",
        summary: "time since boot",
    },
    CommandInfo {
        name: "cpu",
        usage: "",
        summary: "every CPU: ticks, thread switches, IPIs",
    },
    CommandInfo {
        name: "ipcbench",
        usage: "[rounds]",
        summary: "time IPC round trips to the name service",
    },
    CommandInfo {
        name: "echo",
        usage: "[text]",
        summary: "print the text",
    },
    CommandInfo {
        name: "poweroff",
        usage: "",
        summary: "stop the system",
    },
];

/// A parsed command line. Borrowed parts point into the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A blank line: print a new prompt.
    Empty,
    Help,
    Ps,
    /// Refresh once a second until a key is pressed, or at most `seconds` times.
    Top {
        seconds: Option<u32>,
    },
    Mem,
    Caps {
        pid: Pid,
    },
    Spawn {
        module: &'a str,
        /// Its memory budget in bytes (`None`: `init`'s default share).
        budget: Option<u64>,
        args: Vec<&'a str>,
    },
    Kill {
        pid: Pid,
    },
    Uptime,
    Cpu,
    IpcBench {
        rounds: u32,
    },
    Echo {
        text: &'a str,
    },
    Poweroff,
}

/// Why a line is not a command. `Display` is the one line the shell prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// The line is not UTF-8 text.
    NotText,
    /// No command has this name.
    Unknown { name: &'a str },
    /// The command's arguments are wrong: `why` says how.
    Usage {
        command: &'static CommandInfo,
        why: Problem<'a>,
    },
}

/// What is wrong with a command's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem<'a> {
    Missing(&'static str),
    TooMany,
    NotANumber(&'a str),
    OutOfRange(&'a str),
    BadModuleName(&'a str),
    /// `budget=` followed by something that is not a size.
    BadSize(&'a str),
}

/// Up to [`QUOTE_MAX`] characters of `text`, escaped (`"…"` when cut).
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("\"")?;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(QUOTE_MAX) {
            // Escapes control characters (and quotes) so the message stays one line.
            fmt::Display::fmt(&c.escape_debug(), formatter)?;
        }
        if chars.next().is_some() {
            formatter.write_str("…")?;
        }
        formatter.write_str("\"")
    }
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotText => formatter.write_str("error: the line is not UTF-8 text"),
            ParseError::Unknown { name } => write!(
                formatter,
                "error: unknown command {} (type help for the list)",
                Quoted(name)
            ),
            ParseError::Usage { command, why } => {
                write!(formatter, "error: {}: ", command.name)?;
                match why {
                    Problem::Missing(what) => write!(formatter, "missing {what}")?,
                    Problem::TooMany => formatter.write_str("too many arguments")?,
                    Problem::NotANumber(word) => {
                        write!(formatter, "{} is not a number", Quoted(word))?
                    }
                    Problem::OutOfRange(word) => {
                        write!(formatter, "{} is out of range", Quoted(word))?
                    }
                    Problem::BadSize(word) => write!(
                        formatter,
                        "{} is not a size (such as 512K or 4M)",
                        Quoted(word)
                    )?,
                    Problem::BadModuleName(word) => write!(
                        formatter,
                        "{} is not a module name (letters, digits, - and _, at most {MODULE_NAME_MAX})",
                        Quoted(word)
                    )?,
                }
                if command.usage.is_empty() {
                    write!(formatter, " (usage: {})", command.name)
                } else {
                    write!(formatter, " (usage: {} {})", command.name, command.usage)
                }
            }
        }
    }
}

/// The table row of `name`.
pub fn find(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|command| command.name == name)
}

/// The lines `help` prints, one per command: `  name usage  summary`.
pub fn help_lines() -> impl Iterator<Item = HelpLine> {
    COMMANDS.iter().map(HelpLine)
}

/// One line of `help`.
pub struct HelpLine(&'static CommandInfo);

impl fmt::Display for HelpLine {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CommandInfo {
            name,
            usage,
            summary,
        } = self.0;
        let call_width = COMMANDS
            .iter()
            .map(|command| command.name.len() + 1 + command.usage.len())
            .max()
            .unwrap_or(0);
        let call_length = name.len() + 1 + usage.len();
        write!(formatter, "  {name} {usage}")?;
        for _ in call_length..call_width {
            formatter.write_str(" ")?;
        }
        write!(formatter, "  {summary}")
    }
}

/// Parse one typed line (bytes, as the console delivers them).
pub fn parse_bytes(line: &[u8]) -> Result<Command<'_>, ParseError<'_>> {
    match core::str::from_utf8(line) {
        Ok(text) => parse(text),
        Err(_) => Err(ParseError::NotText),
    }
}

/// Parse one line of text.
pub fn parse(line: &str) -> Result<Command<'_>, ParseError<'_>> {
    let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
    let (name, rest) = match line.find(|c: char| c.is_ascii_whitespace()) {
        Some(at) => (&line[..at], line[at..].trim_start()),
        None => (line, ""),
    };
    if name.is_empty() {
        return Ok(Command::Empty);
    }
    let Some(command) = find(name) else {
        return Err(ParseError::Unknown { name });
    };
    let usage = |why| ParseError::Usage { command, why };
    let mut words = rest.split_ascii_whitespace();
    let no_arguments = |result: Command<'static>, words: &mut core::str::SplitAsciiWhitespace| {
        if words.next().is_some() {
            Err(usage(Problem::TooMany))
        } else {
            Ok(result)
        }
    };
    match command.name {
        "help" => no_arguments(Command::Help, &mut words),
        "ps" => no_arguments(Command::Ps, &mut words),
        "mem" => no_arguments(Command::Mem, &mut words),
        "uptime" => no_arguments(Command::Uptime, &mut words),
        "cpu" => no_arguments(Command::Cpu, &mut words),
        "poweroff" => no_arguments(Command::Poweroff, &mut words),
        "echo" => Ok(Command::Echo { text: rest }),
        "caps" | "kill" => {
            let word = words.next().ok_or(usage(Problem::Missing("<pid>")))?;
            if words.next().is_some() {
                return Err(usage(Problem::TooMany));
            }
            let pid = number(word, u64::from(Pid::MAX)).map_err(usage)?;
            // why: `number` checked the bound, so this cannot truncate.
            let pid = pid as Pid;
            Ok(if command.name == "caps" {
                Command::Caps { pid }
            } else {
                Command::Kill { pid }
            })
        }
        "spawn" => {
            let module = words.next().ok_or(usage(Problem::Missing("<module>")))?;
            if !is_module_name(module) {
                return Err(usage(Problem::BadModuleName(module)));
            }
            let mut words = words.peekable();
            let budget = match words.peek().and_then(|word| word.strip_prefix("budget=")) {
                Some(size) => {
                    words.next();
                    Some(
                        crate::size::parse(size)
                            .filter(|&bytes| bytes > 0)
                            .ok_or(usage(Problem::BadSize(size)))?,
                    )
                }
                None => None,
            };
            let mut args = Vec::new();
            for word in words {
                if args.len() == SPAWN_ARGS_MAX {
                    return Err(usage(Problem::TooMany));
                }
                args.push(word);
            }
            Ok(Command::Spawn {
                module,
                budget,
                args,
            })
        }
        "top" => {
            let seconds = match words.next() {
                None => None,
                Some(word) => {
                    let seconds = number(word, u64::from(TOP_SECONDS_MAX)).map_err(usage)?;
                    if seconds == 0 {
                        return Err(usage(Problem::OutOfRange(word)));
                    }
                    // why: at most TOP_SECONDS_MAX, a u32.
                    Some(seconds as u32)
                }
            };
            no_arguments(Command::Empty, &mut words)?;
            Ok(Command::Top { seconds })
        }
        "ipcbench" => {
            let rounds = match words.next() {
                None => IPCBENCH_ROUNDS_DEFAULT,
                Some(word) => {
                    let rounds = number(word, u64::from(IPCBENCH_ROUNDS_MAX)).map_err(usage)?;
                    if rounds == 0 {
                        return Err(usage(Problem::OutOfRange(word)));
                    }
                    // why: at most IPCBENCH_ROUNDS_MAX, a u32.
                    rounds as u32
                }
            };
            no_arguments(Command::Empty, &mut words)?;
            Ok(Command::IpcBench { rounds })
        }
        // Every row of COMMANDS has an arm (tested); a row without one reads as unknown.
        _ => Err(ParseError::Unknown { name }),
    }
}

/// `part` as a whole percentage of `whole` (0 when `whole` is 0), at most 100.
pub fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (part.min(whole) as u128 * 100 / whole as u128) as u64
}

/// Why an input event from the console gives no command. `Display` is the one line the
/// shell prints before its next prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError<'a> {
    Parse(ParseError<'a>),
    /// The line was longer than the console keeps.
    TooLong {
        length: usize,
        max: usize,
    },
}

impl fmt::Display for InputError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Parse(error) => error.fmt(formatter),
            InputError::TooLong { length, max } => write!(
                formatter,
                "error: line too long ({length} bytes, at most {max})"
            ),
        }
    }
}

/// What the shell makes of one event of the console's line discipline: a command to run
/// (Ctrl-C on the prompt is an empty line), or the error line to print.
pub fn interpret(event: &Event) -> Result<Command<'_>, InputError<'_>> {
    match event {
        Event::Line(line) => parse_bytes(line).map_err(InputError::Parse),
        Event::Interrupt => Ok(Command::Empty),
        Event::TooLong { length } => Err(InputError::TooLong {
            length: *length,
            max: LINE_MAX,
        }),
    }
}

/// A decimal number of at most `max`.
fn number(word: &str, max: u64) -> Result<u64, Problem<'_>> {
    if word.is_empty() || !word.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Problem::NotANumber(word));
    }
    word.bytes()
        .try_fold(0u64, |value, digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .filter(|&value| value <= max)
        .ok_or(Problem::OutOfRange(word))
}

/// Whether `name` may name a boot module: 1 to [`MODULE_NAME_MAX`] letters, digits, `-`, `_`.
pub fn is_module_name(name: &str) -> bool {
    (1..=MODULE_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// `uptime`'s text for `ticks` of a `hz` timer: `up 1h 02m 03.45s`.
pub fn format_uptime(ticks: u64, hz: u32) -> Uptime {
    Uptime {
        ticks,
        hz: hz.max(1),
    }
}

/// See [`format_uptime`].
pub struct Uptime {
    ticks: u64,
    hz: u32,
}

impl fmt::Display for Uptime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hz = u64::from(self.hz);
        let seconds = self.ticks / hz;
        let hundredths = (self.ticks % hz) * 100 / hz;
        let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        formatter.write_str("up ")?;
        if hours > 0 {
            write!(
                formatter,
                "{hours}h {minutes:02}m {seconds:02}.{hundredths:02}s"
            )
        } else if minutes > 0 {
            write!(formatter, "{minutes}m {seconds:02}.{hundredths:02}s")
        } else {
            write!(formatter, "{seconds}.{hundredths:02}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    fn error(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("  ps  "), Ok(Command::Ps));
        assert_eq!(parse("mem"), Ok(Command::Mem));
        assert_eq!(parse("caps 3"), Ok(Command::Caps { pid: 3 }));
        assert_eq!(
            parse("spawn testsuite 1 two"),
            Ok(Command::Spawn {
                module: "testsuite",
                budget: None,
                args: alloc::vec!["1", "two"]
            })
        );
        assert_eq!(
            parse("spawn bench"),
            Ok(Command::Spawn {
                module: "bench",
                budget: None,
                args: Vec::new()
            })
        );
        assert_eq!(
            parse("spawn echo budget=2M x"),
            Ok(Command::Spawn {
                module: "echo",
                budget: Some(2 << 20),
                args: alloc::vec!["x"]
            })
        );
        assert!(error("spawn echo budget=lots").contains("\"lots\" is not a size"));
        assert!(error("spawn echo budget=0").contains("is not a size"));
        assert_eq!(parse("kill 12"), Ok(Command::Kill { pid: 12 }));
        assert_eq!(parse("uptime"), Ok(Command::Uptime));
        assert_eq!(parse("cpu"), Ok(Command::Cpu));
        assert_eq!(
            parse("ipcbench"),
            Ok(Command::IpcBench {
                rounds: IPCBENCH_ROUNDS_DEFAULT
            })
        );
        assert_eq!(parse("ipcbench 50"), Ok(Command::IpcBench { rounds: 50 }));
        assert_eq!(parse("top"), Ok(Command::Top { seconds: None }));
        assert_eq!(parse("top 3"), Ok(Command::Top { seconds: Some(3) }));
        assert!(matches!(parse("top 0"), Err(ParseError::Usage { .. })));
        assert!(matches!(parse("top 61"), Err(ParseError::Usage { .. })));
        assert!(matches!(parse("top 1 2"), Err(ParseError::Usage { .. })));
        assert_eq!(percent(25, 100), 25);
        assert_eq!(percent(3, 0), 0);
        assert_eq!(percent(150, 100), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
        assert_eq!(parse("poweroff"), Ok(Command::Poweroff));
    }

    #[test]
    fn the_table_and_the_parser_agree() {
        for command in COMMANDS {
            assert!(
                !matches!(parse(command.name), Err(ParseError::Unknown { .. })),
                "{} is in the table but not parsed",
                command.name
            );
        }
        assert_eq!(help_lines().count(), COMMANDS.len());
    }

    #[test]
    fn echo_keeps_the_rest_of_the_line() {
        assert_eq!(
            parse("echo  hello   keel "),
            Ok(Command::Echo {
                text: "hello   keel"
            })
        );
        assert_eq!(parse("echo"), Ok(Command::Echo { text: "" }));
        assert_eq!(parse("echo\tx"), Ok(Command::Echo { text: "x" }));
    }

    #[test]
    fn blank_lines_are_empty() {
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse(" \t "), Ok(Command::Empty));
        assert_eq!(parse_bytes(b""), Ok(Command::Empty));
    }

    #[test]
    fn unknown_commands_are_one_line_errors() {
        assert_eq!(
            error("frobnicate now"),
            "error: unknown command \"frobnicate\" (type help for the list)"
        );
        // Case matters.
        assert!(matches!(parse("HELP"), Err(ParseError::Unknown { .. })));
    }

    #[test]
    fn bad_arguments_are_one_line_errors() {
        assert_eq!(
            error("kill"),
            "error: kill: missing <pid> (usage: kill <pid>)"
        );
        assert_eq!(
            error("kill abc"),
            "error: kill: \"abc\" is not a number (usage: kill <pid>)"
        );
        assert_eq!(
            error("kill -1"),
            "error: kill: \"-1\" is not a number (usage: kill <pid>)"
        );
        assert_eq!(
            error("caps 99999999999"),
            "error: caps: \"99999999999\" is out of range (usage: caps <pid>)"
        );
        assert_eq!(
            error("caps 1 2"),
            "error: caps: too many arguments (usage: caps <pid>)"
        );
        assert_eq!(error("ps now"), "error: ps: too many arguments (usage: ps)");
        assert_eq!(
            error("spawn"),
            "error: spawn: missing <module> (usage: spawn <module> [budget=<size>] [args])"
        );
        assert!(error("spawn ../etc").contains("is not a module name"));
        assert!(error("spawn a 1 2 3 4 5 6 7 8 9").contains("too many arguments"));
        assert!(error("ipcbench 0").contains("out of range"));
        assert!(error("ipcbench 100001").contains("out of range"));
        assert!(error("ipcbench 5 6").contains("too many arguments"));
        assert_eq!(
            parse("kill 4294967295"),
            Ok(Command::Kill { pid: u32::MAX })
        );
        assert!(error("kill 4294967296").contains("out of range"));
        assert!(error("kill 184467440737095516160").contains("out of range"));
    }

    #[test]
    fn hostile_lines_give_one_short_line() {
        let garbage: String = (0..4096u32)
            .map(|i| char::from_u32(0x21 + (i * 7919) % 0x5e).unwrap())
            .collect();
        for line in [
            garbage.as_str(),
            "\u{1b}[2J\u{7}\r\nboom",
            "kill \"\n\"",
            "caps \u{0}",
            "spawn \u{202e}evil",
        ] {
            if let Err(message) = parse(line).map_err(|error| error.to_string()) {
                assert!(
                    !message.contains(['\n', '\r', '\u{1b}', '\u{0}']),
                    "{message:?}"
                );
                assert!(message.chars().count() < 160, "{message:?}");
            }
        }
        assert_eq!(parse_bytes(&[0xff, 0xfe, b'x']), Err(ParseError::NotText));
        assert_eq!(
            parse_bytes(&[0xff]).unwrap_err().to_string(),
            "error: the line is not UTF-8 text"
        );
    }

    #[test]
    fn four_kib_of_garbage_typed_at_the_console_is_one_error_line() {
        use crate::line::LineDiscipline;
        let mut discipline = LineDiscipline::default();
        let mut echo = Vec::new();
        let garbage: Vec<u8> = (0..4096u32).map(|i| (0x21 + i * 31 % 0x5e) as u8).collect();
        let mut events: Vec<Event> = garbage
            .iter()
            .chain(b"\r")
            .filter_map(|&byte| discipline.input(byte, &mut echo))
            .collect();
        assert_eq!(events.len(), 1);
        let event = events.pop().unwrap();
        assert_eq!(
            interpret(&event).unwrap_err().to_string(),
            "error: line too long (4096 bytes, at most 512)"
        );
        // The next line works.
        let next: Vec<Event> = b"echo ok\r"
            .iter()
            .filter_map(|&byte| discipline.input(byte, &mut echo))
            .collect();
        assert_eq!(interpret(&next[0]), Ok(Command::Echo { text: "ok" }));
        assert_eq!(interpret(&Event::Interrupt), Ok(Command::Empty));
    }

    #[test]
    fn a_stream_of_random_bytes_gives_commands_or_one_line_errors() {
        use crate::line::LineDiscipline;
        let mut discipline = LineDiscipline::new(64);
        let mut echo = Vec::new();
        let mut state = 0x9e37_79b9u32;
        let mut lines = 0;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            // Mostly short words of a few letters, digits and spaces, with every other
            // byte value (line ends, controls, escapes, UTF-8) mixed in.
            let byte = match state >> 28 {
                0..=9 => b"helpkilcaps 0123\r"[(state >> 8) as usize % 17],
                _ => (state >> 8) as u8,
            };
            if let Some(event) = discipline.input(byte, &mut echo) {
                lines += 1;
                if let Err(error) = interpret(&event) {
                    let message = error.to_string();
                    assert!(message.starts_with("error: "), "{message:?}");
                    assert!(!message.contains(['\n', '\r', '\u{1b}']), "{message:?}");
                }
            }
            echo.clear();
        }
        assert!(lines > 1000, "only {lines} lines");
    }

    #[test]
    fn help_lists_every_command_aligned() {
        let lines: Vec<String> = help_lines().map(|line| line.to_string()).collect();
        assert_eq!(lines[0].split_whitespace().next(), Some("help"));
        let column = lines[0].find("list the commands").unwrap();
        for (line, command) in lines.iter().zip(COMMANDS) {
            assert_eq!(line.find(command.summary), Some(column), "{line:?}");
        }
        assert!(
            lines
                .iter()
                .any(|line| line.contains("spawn <module> [budget=<size>] [args]"))
        );
    }

    #[test]
    fn module_names() {
        assert!(is_module_name("testsuite"));
        assert!(is_module_name("my-server_2"));
        assert!(!is_module_name(""));
        assert!(!is_module_name("a/b"));
        assert!(!is_module_name(&"x".repeat(MODULE_NAME_MAX + 1)));
    }

    #[test]
    fn uptime_text() {
        assert_eq!(format_uptime(0, 100).to_string(), "up 0.00s");
        assert_eq!(format_uptime(345, 100).to_string(), "up 3.45s");
        assert_eq!(format_uptime(12_345, 100).to_string(), "up 2m 03.45s");
        assert_eq!(format_uptime(372_345, 100).to_string(), "up 1h 02m 03.45s");
        // A zero frequency is not a division by zero.
        assert_eq!(format_uptime(5, 0).to_string(), "up 5.00s");
        assert!(format_uptime(u64::MAX, 100).to_string().starts_with("up "));
    }
}
