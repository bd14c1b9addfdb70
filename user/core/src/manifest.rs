//! `init`'s manifest: the servers to start, in order, each with the capabilities it is
//! given and what happens when it ends.
//!
//! The format is text, one server per line; `#` starts a comment:
//!
//! ```text
//! # module  restart=<always|on-failure|never>  budget=<size>  caps=<capability>[,<capability>…]
//! console   restart=always  budget=1M  caps=serial
//! names     restart=always  budget=1M
//! shell     restart=always  budget=4M  caps=console,names,processes,system,power
//! ```
//!
//! `restart` defaults to `on-failure`, `caps` to none. `budget` is the server's memory
//! budget, out of `init`'s ([`crate::size`] syntax: `512K`, `4M`); without it the server
//! gets the kernel's default share (`abi::DEFAULT_BUDGET`). A server may only be given an
//! endpoint of a server started before it (`console`, `names`), so the order is checked,
//! not just followed. Every error names its line; nothing is started from a manifest with
//! an error. The manifest itself is bounded ([`MANIFEST_MAX`], [`SERVERS_MAX`]).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::restart::Policy;
use crate::shell::is_module_name;

/// The largest manifest, in bytes.
pub const MANIFEST_MAX: usize = 8192;
/// The most servers one manifest starts.
pub const SERVERS_MAX: usize = 16;

/// A capability `init` can hand a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Capability {
    /// The UART (x86_64: I/O ports `0x3F8..=0x3FF`; AArch64: the PL011's MMIO page from
    /// the device tree) and its IRQ as a notification.
    Serial = 1 << 0,
    /// An endpoint of the `console` server: write text, read lines.
    Console = 1 << 1,
    /// An endpoint of the `names` server.
    Names = 1 << 2,
    /// `init`'s process endpoint: spawn boot modules, kill, list processes and their
    /// capabilities.
    Processes = 1 << 3,
    /// Read the kernel's information: frames, CPUs, ticks.
    System = 1 << 4,
    /// Power the machine off.
    Power = 1 << 5,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Serial,
        Capability::Console,
        Capability::Names,
        Capability::Processes,
        Capability::System,
        Capability::Power,
    ];

    /// The capability's name in a manifest.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Serial => "serial",
            Capability::Console => "console",
            Capability::Names => "names",
            Capability::Processes => "processes",
            Capability::System => "system",
            Capability::Power => "power",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|cap| cap.name() == name)
    }

    /// The server whose endpoint this capability is, if it is one.
    pub const fn provider(self) -> Option<&'static str> {
        match self {
            Capability::Console => Some("console"),
            Capability::Names => Some("names"),
            _ => None,
        }
    }
}

/// A set of capabilities.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Self = Self(0);

    pub const fn contains(self, cap: Capability) -> bool {
        self.0 & cap as u8 != 0
    }

    pub const fn with(self, cap: Capability) -> Self {
        Self(self.0 | cap as u8)
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |&cap| self.contains(cap))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_list()
            .entries(self.iter().map(Capability::name))
            .finish()
    }
}

/// One server of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The boot module to start (and the server's name in reports).
    pub module: String,
    pub restart: Policy,
    pub caps: Capabilities,
    /// Its memory budget in bytes (`None`: the kernel's default share).
    pub budget: Option<u64>,
}

/// A checked manifest: the servers in start order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub servers: Vec<Server>,
}

/// What is wrong with a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// Larger than [`MANIFEST_MAX`].
    TooLarge,
    /// Not UTF-8 text.
    NotText,
    /// Line `line` (from 1) is wrong.
    Line { line: usize, problem: Problem },
}

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    BadModuleName,
    DuplicateModule,
    TooManyServers,
    /// A field that is not `key=value`, or an unknown key.
    UnknownField(String),
    DuplicateField(&'static str),
    BadRestartPolicy(String),
    /// `budget=` that is not a size.
    BadBudget(String),
    UnknownCapability(String),
    DuplicateCapability(&'static str),
    /// The server is given the endpoint of a server that is not started before it.
    StartedLater {
        capability: &'static str,
        provider: &'static str,
    },
}

/// Up to 32 characters, escaped, for an error message.
fn quoted(text: &str) -> String {
    let mut out: String = text.chars().take(32).flat_map(char::escape_debug).collect();
    if text.chars().nth(32).is_some() {
        out.push('…');
    }
    out
}

impl fmt::Display for ManifestError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, problem) = match self {
            ManifestError::TooLarge => {
                return write!(formatter, "manifest larger than {MANIFEST_MAX} bytes");
            }
            ManifestError::NotText => return formatter.write_str("manifest is not UTF-8 text"),
            ManifestError::Line { line, problem } => (line, problem),
        };
        write!(formatter, "manifest line {line}: ")?;
        match problem {
            Problem::BadModuleName => formatter.write_str("bad module name"),
            Problem::DuplicateModule => formatter.write_str("module listed twice"),
            Problem::TooManyServers => write!(formatter, "more than {SERVERS_MAX} servers"),
            Problem::UnknownField(field) => {
                write!(formatter, "unknown field \"{}\"", quoted(field))
            }
            Problem::DuplicateField(key) => write!(formatter, "{key}= given twice"),
            Problem::BadRestartPolicy(value) => write!(
                formatter,
                "restart must be always, on-failure or never, not \"{}\"",
                quoted(value)
            ),
            Problem::BadBudget(value) => write!(
                formatter,
                "budget must be a size such as 512K or 4M, not \"{}\"",
                quoted(value)
            ),
            Problem::UnknownCapability(name) => {
                write!(formatter, "unknown capability \"{}\"", quoted(name))
            }
            Problem::DuplicateCapability(name) => {
                write!(formatter, "capability {name} given twice")
            }
            Problem::StartedLater {
                capability,
                provider,
            } => write!(
                formatter,
                "capability {capability} needs {provider} started before this server"
            ),
        }
    }
}

impl Manifest {
    /// Parse and check a manifest (bytes, as a boot module holds it).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MANIFEST_MAX {
            return Err(ManifestError::TooLarge);
        }
        let text = core::str::from_utf8(bytes).map_err(|_| ManifestError::NotText)?;
        let mut servers: Vec<Server> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |problem| ManifestError::Line { line, problem };
            let content = raw.split('#').next().unwrap_or("");
            let mut words = content.split_ascii_whitespace();
            let Some(module) = words.next() else {
                continue;
            };
            if !is_module_name(module) {
                return Err(fail(Problem::BadModuleName));
            }
            if servers.iter().any(|server| server.module == module) {
                return Err(fail(Problem::DuplicateModule));
            }
            if servers.len() == SERVERS_MAX {
                return Err(fail(Problem::TooManyServers));
            }
            let mut restart = None;
            let mut caps = None;
            let mut budget = None;
            for field in words {
                match field.split_once('=') {
                    Some(("restart", value)) => {
                        if restart.is_some() {
                            return Err(fail(Problem::DuplicateField("restart")));
                        }
                        restart = Some(
                            Policy::from_name(value)
                                .ok_or_else(|| fail(Problem::BadRestartPolicy(value.into())))?,
                        );
                    }
                    Some(("budget", value)) => {
                        if budget.is_some() {
                            return Err(fail(Problem::DuplicateField("budget")));
                        }
                        budget = Some(
                            crate::size::parse(value)
                                .filter(|&bytes| bytes > 0)
                                .ok_or_else(|| fail(Problem::BadBudget(value.into())))?,
                        );
                    }
                    Some(("caps", value)) => {
                        if caps.is_some() {
                            return Err(fail(Problem::DuplicateField("caps")));
                        }
                        caps = Some(parse_caps(value, &servers).map_err(fail)?);
                    }
                    _ => return Err(fail(Problem::UnknownField(field.into()))),
                }
            }
            servers.push(Server {
                module: module.into(),
                restart: restart.unwrap_or(Policy::OnFailure),
                caps: caps.unwrap_or(Capabilities::NONE),
                budget,
            });
        }
        Ok(Self { servers })
    }
}

/// `caps=` of one server; `earlier` are the servers before it.
fn parse_caps(value: &str, earlier: &[Server]) -> Result<Capabilities, Problem> {
    let mut caps = Capabilities::NONE;
    for name in value.split(',') {
        let cap =
            Capability::from_name(name).ok_or_else(|| Problem::UnknownCapability(name.into()))?;
        if caps.contains(cap) {
            return Err(Problem::DuplicateCapability(cap.name()));
        }
        if let Some(provider) = cap.provider()
            && !earlier.iter().any(|server| server.module == provider)
        {
            return Err(Problem::StartedLater {
                capability: cap.name(),
                provider,
            });
        }
        caps = caps.with(cap);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn problem(text: &str) -> (usize, Problem) {
        match Manifest::parse(text.as_bytes()) {
            Err(ManifestError::Line { line, problem }) => (line, problem),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn the_shipped_manifest_is_valid() {
        let manifest = Manifest::parse(include_bytes!("../../init/manifest")).unwrap();
        let modules: Vec<&str> = manifest.servers.iter().map(|s| s.module.as_str()).collect();
        assert_eq!(modules[..2], ["console", "names"]);
        assert!(modules.contains(&"shell"));
        let console = &manifest.servers[0];
        assert!(console.caps.contains(Capability::Serial));
        // Only the console driver touches the UART.
        for server in &manifest.servers[1..] {
            assert!(!server.caps.contains(Capability::Serial), "{server:?}");
        }
    }

    #[test]
    fn servers_in_order_with_defaults() {
        let manifest = Manifest::parse(
            b"# comment\n\nconsole restart=always caps=serial  # the UART\n\
              names budget=512K\n\
              shell caps=console,names,power restart=never\n",
        )
        .unwrap();
        assert_eq!(
            manifest.servers,
            [
                Server {
                    module: "console".into(),
                    restart: Policy::Always,
                    caps: Capabilities::NONE.with(Capability::Serial),
                    budget: None,
                },
                Server {
                    module: "names".into(),
                    restart: Policy::OnFailure,
                    caps: Capabilities::NONE,
                    budget: Some(512 << 10),
                },
                Server {
                    module: "shell".into(),
                    restart: Policy::Never,
                    caps: Capabilities::NONE
                        .with(Capability::Console)
                        .with(Capability::Names)
                        .with(Capability::Power),
                    budget: None,
                },
            ]
        );
        assert_eq!(
            Manifest::parse(b"").unwrap(),
            Manifest {
                servers: Vec::new()
            }
        );
    }

    #[test]
    fn every_error_names_its_line() {
        assert_eq!(problem("console\nconsole"), (2, Problem::DuplicateModule));
        assert_eq!(problem("a/b"), (1, Problem::BadModuleName));
        assert_eq!(
            problem("x\n\ny restart=sometimes"),
            (3, Problem::BadRestartPolicy("sometimes".into()))
        );
        assert_eq!(
            problem("x restart=always restart=never"),
            (1, Problem::DuplicateField("restart"))
        );
        assert_eq!(
            problem("x caps=serial caps=power"),
            (1, Problem::DuplicateField("caps"))
        );
        assert_eq!(
            problem("x priority=3"),
            (1, Problem::UnknownField("priority=3".into()))
        );
        assert_eq!(
            problem("x always"),
            (1, Problem::UnknownField("always".into()))
        );
        assert_eq!(
            problem("x caps=serial,disk"),
            (1, Problem::UnknownCapability("disk".into()))
        );
        assert_eq!(
            problem("x caps="),
            (1, Problem::UnknownCapability("".into()))
        );
        assert_eq!(
            problem("x caps=power,power"),
            (1, Problem::DuplicateCapability("power"))
        );
        assert_eq!(
            problem("x budget=4M budget=8M"),
            (1, Problem::DuplicateField("budget"))
        );
        for bad in ["", "0", "lots", "4T", "-1M"] {
            assert_eq!(
                problem(&alloc::format!("x budget={bad}")),
                (1, Problem::BadBudget(bad.into()))
            );
        }
    }

    #[test]
    fn endpoints_only_of_servers_started_before() {
        assert_eq!(
            problem("shell caps=console\nconsole caps=serial"),
            (
                1,
                Problem::StartedLater {
                    capability: "console",
                    provider: "console"
                }
            )
        );
        assert_eq!(
            problem("names caps=names"),
            (
                1,
                Problem::StartedLater {
                    capability: "names",
                    provider: "names"
                }
            )
        );
        assert!(Manifest::parse(b"names\nshell caps=names").is_ok());
    }

    #[test]
    fn bounded_and_hostile_input() {
        assert_eq!(
            Manifest::parse(&[b'#'; MANIFEST_MAX + 1]),
            Err(ManifestError::TooLarge)
        );
        assert_eq!(Manifest::parse(b"console\xff"), Err(ManifestError::NotText));
        let many: String = (0..=SERVERS_MAX)
            .map(|i| alloc::format!("s{i}\n"))
            .collect();
        assert_eq!(problem(&many), (SERVERS_MAX + 1, Problem::TooManyServers));
        // Error messages stay one short line whatever the input.
        let nasty = alloc::format!("x caps={}\u{1b}[2J\n", "q".repeat(500));
        let message = Manifest::parse(nasty.as_bytes()).unwrap_err().to_string();
        assert!(message.starts_with("manifest line 1: unknown capability"));
        assert!(
            !message.contains(['\n', '\u{1b}']) && message.len() < 120,
            "{message:?}"
        );
        // CR LF line ends are fine.
        assert_eq!(
            Manifest::parse(b"console caps=serial\r\nnames\r\n")
                .unwrap()
                .servers
                .len(),
            2
        );
    }

    #[test]
    fn capability_names_round_trip() {
        for cap in Capability::ALL {
            assert_eq!(Capability::from_name(cap.name()), Some(cap));
        }
        assert_eq!(Capability::from_name("Serial"), None);
        let set = Capabilities::NONE
            .with(Capability::Power)
            .with(Capability::Serial);
        assert_eq!(alloc::format!("{set:?}"), "[\"serial\", \"power\"]");
    }
}
