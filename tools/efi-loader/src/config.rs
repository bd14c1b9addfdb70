//! `limine.conf`: the configuration file real Limine reads (Limine 8 syntax and later).
//!
//! The file is a list of lines. Before the first entry come global options; an entry starts
//! with a line `/Name` (more slashes nest it under the previous one, a `+` after the slashes
//! expands a directory in Limine's menu) and owns the `key: value` lines that follow.
//! Lines starting with `#` are comments, `${NAME}=value` defines a macro that `${NAME}`
//! expands to (built in: `${ARCH}`, `${FW_TYPE}`).
//!
//! Keys are case-insensitive. Of the options Limine knows, this loader implements the ones
//! a Limine-protocol kernel needs: `timeout`, `default_entry`, and per entry `protocol`,
//! the kernel path (`path:` for Limine 9 and later, `kernel_path:` for Limine 8, both
//! accepted and required to agree), `cmdline` (alias `kernel_cmdline`), `module_path`
//! each optionally followed by `module_cmdline` (alias `module_string`), `dtb_path`,
//! `kaslr`, `randomise_hhdm_base` (alias `randomize_hhdm_base`; `yes` or `no`, default the
//! value of `kaslr`: `no` fixes the HHDM at the paging mode's lowest higher-half address
//! for reproducible runs) and `comment`. Other keys are ignored with a warning. Every error names the
//! file and the line.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// A problem in the configuration file, located by file and line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// How long the menu waits before booting the default entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    Seconds(u64),
    /// `timeout: no`: wait for a key press.
    Never,
}

/// A file location. Only `boot():/path` (the volume the loader itself came from) is
/// supported; `hash` is the optional `#<blake2b>` suffix Limine verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// The path within the volume, with its leading slash.
    pub path: String,
    /// The 128-hex-digit BLAKE2b-512 digest the file must have, when given.
    pub hash: Option<String>,
}

/// A module of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec {
    pub uri: Uri,
    pub cmdline: String,
    pub line: usize,
}

/// A module as written in an entry; `cmdline` is `None` until a `module_cmdline` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryModule {
    pub uri: Uri,
    pub cmdline: Option<String>,
    pub line: usize,
}

/// One `/Name` entry as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The number of leading slashes (1 for a top-level entry).
    pub depth: usize,
    pub line: usize,
    pub protocol: Option<String>,
    /// `path:` (Limine 9+).
    pub path: Option<(Uri, usize)>,
    /// `kernel_path:` (Limine 8).
    pub kernel_path: Option<(Uri, usize)>,
    pub cmdline: Option<String>,
    pub modules: Vec<EntryModule>,
    pub dtb_path: Option<(Uri, usize)>,
    pub kaslr: bool,
    /// `randomise_hhdm_base:` when given.
    pub randomise_hhdm_base: Option<bool>,
}

/// The parsed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub file: String,
    pub timeout: Timeout,
    /// 1-based, counted over all entries in file order.
    pub default_entry: usize,
    pub entries: Vec<Entry>,
    pub warnings: Vec<Diagnostic>,
}

/// What the loader boots: the selected entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// The configuration file, for messages.
    pub file: String,
    pub name: String,
    pub line: usize,
    pub kernel: Uri,
    /// The line that names the kernel.
    pub kernel_line: usize,
    pub cmdline: String,
    pub modules: Vec<ModuleSpec>,
    pub dtb_path: Option<(Uri, usize)>,
    pub kaslr: bool,
    /// Whether the HHDM base is randomised.
    pub randomise_hhdm_base: bool,
}

impl BootEntry {
    /// `message` located at `line` of the configuration file.
    pub fn at(&self, line: usize, message: impl fmt::Display) -> String {
        format!("{}:{line}: {message}", self.file)
    }
}

/// Global options Limine knows that change only its menu or terminal; accepted silently
/// would mislead, so they get a warning that names them as not supported here.
const LIMINE_GLOBALS: &[&str] = &[
    "quiet",
    "serial",
    "serial_baudrate",
    "verbose",
    "randomise_memory",
    "randomize_memory",
    "hash_mismatch_panic",
    "wallpaper",
    "wallpaper_style",
    "backdrop",
    "editor_enabled",
    "editor_highlighting",
    "editor_validation",
    "graphics",
    "interface_resolution",
    "interface_branding",
    "interface_branding_colour",
    "interface_branding_color",
    "interface_help_hidden",
    "remember_last_entry",
    "term_palette",
    "term_palette_bright",
    "term_background",
    "term_foreground",
    "term_background_bright",
    "term_foreground_bright",
    "term_margin",
    "term_margin_gradient",
    "term_font",
    "term_font_size",
    "term_font_scale",
    "term_font_spacing",
];

/// Entry options Limine knows for other protocols or for its display, ignored here.
const LIMINE_ENTRY_KEYS: &[&str] = &[
    "resolution",
    "textmode",
    "randomise_hhdm",
    "randomize_hhdm",
    "paging_mode",
    "image_path",
    "driver",
    "module_cmdline_ignored",
];

/// Parse `text`, the contents of `file`. `arch` is the value of the `${ARCH}` macro.
pub fn parse(file: &str, text: &str, arch: &str) -> Result<Config, Diagnostic> {
    Parser::new(file, arch).run(text)
}

struct Parser<'a> {
    file: &'a str,
    macros: Vec<(String, String)>,
    config: Config,
    default_entry_line: usize,
}

fn split_key(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some((key, value.trim()))
}

impl<'a> Parser<'a> {
    fn new(file: &'a str, arch: &str) -> Self {
        Parser {
            file,
            macros: alloc::vec![
                ("ARCH".to_string(), arch.to_string()),
                ("FW_TYPE".to_string(), "UEFI".to_string()),
            ],
            config: Config {
                file: file.to_string(),
                timeout: Timeout::Seconds(5),
                default_entry: 1,
                entries: Vec::new(),
                warnings: Vec::new(),
            },
            default_entry_line: 1,
        }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line,
            message: message.into(),
        }
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        let warning = self.error(line, message);
        self.config.warnings.push(warning);
    }

    fn expand(&self, line_number: usize, text: &str) -> Result<String, Diagnostic> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.error(line_number, "unterminated macro reference `${`"))?;
            let name = &after[..end];
            let value = self
                .macros
                .iter()
                .find(|(macro_name, _)| macro_name == name)
                .map(|(_, value)| value.as_str())
                .ok_or_else(|| self.error(line_number, format!("undefined macro `${{{name}}}`")))?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn run(mut self, text: &str) -> Result<Config, Diagnostic> {
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(definition) = line.strip_prefix("${") {
                let (name, value) = definition.split_once("}=").ok_or_else(|| {
                    self.error(
                        line_number,
                        "malformed macro definition, expected `${NAME}=value`",
                    )
                })?;
                if name.is_empty() {
                    return Err(self.error(line_number, "macro definition without a name"));
                }
                let value = self.expand(line_number, value)?;
                self.macros.retain(|(existing, _)| existing != name);
                self.macros.push((name.to_string(), value));
                continue;
            }
            let line = self.expand(line_number, line)?;
            if line.starts_with('/') {
                self.entry_header(line_number, &line)?;
                continue;
            }
            let (key, value) = split_key(&line).ok_or_else(|| {
                self.error(
                    line_number,
                    format!("expected `key: value`, an entry `/Name` or a comment, found `{line}`"),
                )
            })?;
            let key = key.to_ascii_lowercase();
            if self.config.entries.is_empty() {
                self.global(line_number, &key, value)?;
            } else {
                self.entry_option(line_number, &key, value)?;
            }
        }
        if self.config.entries.is_empty() {
            return Err(self.error(
                text.lines().count().max(1),
                "no entries (an entry starts with a `/Name` line)",
            ));
        }
        if self.config.default_entry > self.config.entries.len() {
            let count = self.config.entries.len();
            let line = self.default_entry_line;
            return Err(self.error(
                line,
                format!(
                    "default_entry {} but the file has only {count} entries",
                    self.config.default_entry
                ),
            ));
        }
        Ok(self.config)
    }

    fn entry_header(&mut self, line_number: usize, line: &str) -> Result<(), Diagnostic> {
        let depth = line.bytes().take_while(|&b| b == b'/').count();
        let name = line[depth..].trim_start_matches('+').trim();
        if name.is_empty() {
            return Err(self.error(line_number, "entry without a name"));
        }
        if let Some(last) = self.config.entries.last()
            && depth > last.depth + 1
        {
            return Err(self.error(
                line_number,
                format!(
                    "entry `{name}` is nested {depth} deep under a depth-{} entry",
                    last.depth
                ),
            ));
        }
        if depth > 1 && self.config.entries.is_empty() {
            return Err(self.error(
                line_number,
                format!("sub-entry `{name}` before any top-level entry"),
            ));
        }
        self.config.entries.push(Entry {
            name: name.to_string(),
            depth,
            line: line_number,
            protocol: None,
            path: None,
            kernel_path: None,
            cmdline: None,
            modules: Vec::new(),
            dtb_path: None,
            kaslr: true,
            randomise_hhdm_base: None,
        });
        Ok(())
    }

    fn global(&mut self, line_number: usize, key: &str, value: &str) -> Result<(), Diagnostic> {
        match key {
            "timeout" => {
                self.config.timeout = if value.eq_ignore_ascii_case("no") {
                    Timeout::Never
                } else {
                    Timeout::Seconds(value.parse().map_err(|_| {
                        self.error(
                            line_number,
                            format!("timeout must be a number of seconds or `no`, found `{value}`"),
                        )
                    })?)
                };
            }
            "default_entry" => {
                let entry: usize = value.parse().map_err(|_| {
                    self.error(
                        line_number,
                        format!("default_entry must be a positive number, found `{value}`"),
                    )
                })?;
                if entry == 0 {
                    return Err(self.error(line_number, "default_entry counts from 1"));
                }
                self.config.default_entry = entry;
                self.default_entry_line = line_number;
            }
            "protocol"
            | "path"
            | "kernel_path"
            | "cmdline"
            | "kernel_cmdline"
            | "module_path"
            | "module_cmdline"
            | "module_string"
            | "dtb_path"
            | "kaslr"
            | "randomise_hhdm_base"
            | "randomize_hhdm_base"
            | "comment" => {
                return Err(self.error(
                    line_number,
                    format!("`{key}` outside any entry (entries start with `/Name`)"),
                ));
            }
            _ if LIMINE_GLOBALS.contains(&key) => {
                self.warn(
                    line_number,
                    format!("global option `{key}` is not supported by this loader; ignored"),
                );
            }
            _ => self.warn(
                line_number,
                format!("unknown global option `{key}`; ignored"),
            ),
        }
        Ok(())
    }

    fn entry_option(
        &mut self,
        line_number: usize,
        key: &str,
        value: &str,
    ) -> Result<(), Diagnostic> {
        let file = self.file;
        let error = |message: String| Diagnostic {
            file: file.to_string(),
            line: line_number,
            message,
        };
        let entry_name = self
            .config
            .entries
            .last()
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let duplicate = |key: &str| error(format!("`{key}` given twice in entry `{entry_name}`"));
        let entry = self
            .config
            .entries
            .last_mut()
            .expect("called with an entry");
        match key {
            "protocol" => {
                if entry.protocol.is_some() {
                    return Err(duplicate(key));
                }
                if value.is_empty() {
                    return Err(error("`protocol:` without a value".into()));
                }
                entry.protocol = Some(value.to_ascii_lowercase());
            }
            "path" | "kernel_path" => {
                let uri = parse_uri(value).map_err(|m| error(format!("{key}: {m}")))?;
                let slot = if key == "path" {
                    &mut entry.path
                } else {
                    &mut entry.kernel_path
                };
                if slot.is_some() {
                    return Err(duplicate(key));
                }
                *slot = Some((uri, line_number));
                if let (Some((path, _)), Some((kernel_path, _))) = (&entry.path, &entry.kernel_path)
                    && path != kernel_path
                {
                    return Err(error(format!(
                        "`path:` ({}) and `kernel_path:` ({}) name different files; Limine 9+ reads the first, Limine 8 the second",
                        path.path, kernel_path.path
                    )));
                }
            }
            "cmdline" | "kernel_cmdline" => {
                if entry.cmdline.is_some() {
                    return Err(error(format!(
                        "kernel command line given twice in entry `{entry_name}` (`cmdline` and `kernel_cmdline` are one option)"
                    )));
                }
                entry.cmdline = Some(value.to_string());
            }
            "module_path" => {
                let uri = parse_uri(value).map_err(|m| error(format!("module_path: {m}")))?;
                entry.modules.push(EntryModule {
                    uri,
                    cmdline: None,
                    line: line_number,
                });
            }
            "module_cmdline" | "module_string" => {
                let module = entry
                    .modules
                    .last_mut()
                    .ok_or_else(|| error(format!("`{key}` without a preceding `module_path`")))?;
                if module.cmdline.is_some() {
                    return Err(error(format!(
                        "second `{key}` for the module of line {}",
                        module.line
                    )));
                }
                module.cmdline = Some(value.to_string());
            }
            "dtb_path" => {
                if entry.dtb_path.is_some() {
                    return Err(duplicate(key));
                }
                let uri = parse_uri(value).map_err(|m| error(format!("dtb_path: {m}")))?;
                entry.dtb_path = Some((uri, line_number));
            }
            "kaslr" => {
                entry.kaslr = match value.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => {
                        return Err(error(format!(
                            "kaslr must be `yes` or `no`, found `{value}`"
                        )));
                    }
                };
            }
            "randomise_hhdm_base" | "randomize_hhdm_base" => {
                entry.randomise_hhdm_base = Some(match value.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => {
                        return Err(error(format!(
                            "{key} must be `yes` or `no`, found `{value}`"
                        )));
                    }
                });
            }
            "comment" => {}
            "timeout" | "default_entry" => {
                return Err(error(format!(
                    "global option `{key}` inside entry `{entry_name}` (globals go before the first entry)"
                )));
            }
            _ if LIMINE_ENTRY_KEYS.contains(&key) => {
                let message = format!("option `{key}` is not supported by this loader; ignored");
                self.warn(line_number, message);
            }
            _ => {
                let message = format!("unknown option `{key}` in entry `{entry_name}`; ignored");
                self.warn(line_number, message);
            }
        }
        Ok(())
    }
}

/// Parse a Limine URI. Only the boot volume (`boot():/…`) is supported.
pub fn parse_uri(value: &str) -> Result<Uri, String> {
    if value.is_empty() {
        return Err("empty path".into());
    }
    let (resource, rest) = value
        .split_once("):")
        .ok_or_else(|| format!("`{value}` is not a Limine URI (expected `boot():/path`)"))?;
    let (kind, root) = resource
        .split_once('(')
        .ok_or_else(|| format!("`{value}` is not a Limine URI (expected `boot():/path`)"))?;
    if !kind.eq_ignore_ascii_case("boot") {
        return Err(format!(
            "resource `{kind}()` is not supported by this loader (only `boot():`)"
        ));
    }
    if !root.is_empty() {
        return Err(format!(
            "`boot({root}):` selects another partition; only `boot():` (the loader's own volume) is supported"
        ));
    }
    let (path, hash) = match rest.rsplit_once('#') {
        Some((path, hash)) => {
            if hash.len() != 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("`#{hash}` is not a 128-digit BLAKE2b hash"));
            }
            (path, Some(hash.to_ascii_lowercase()))
        }
        None => (rest, None),
    };
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!("path `{path}` must start with `/` and name a file"));
    }
    Ok(Uri {
        path: path.to_string(),
        hash,
    })
}

impl Config {
    /// The entry to boot: `default_entry`, which must be a Limine-protocol entry with a
    /// kernel path.
    pub fn boot_entry(&self) -> Result<BootEntry, Diagnostic> {
        self.entry(self.default_entry)
    }

    /// Entry `number` (1-based), validated for booting.
    pub fn entry(&self, number: usize) -> Result<BootEntry, Diagnostic> {
        let error = |line: usize, message: String| Diagnostic {
            file: self.file.clone(),
            line,
            message,
        };
        let entry = number
            .checked_sub(1)
            .and_then(|index| self.entries.get(index))
            .ok_or_else(|| error(1, format!("there is no entry {number}")))?;
        let is_directory = self
            .entries
            .get(number)
            .is_some_and(|next| next.depth > entry.depth);
        let protocol = match &entry.protocol {
            Some(protocol) => protocol,
            None if is_directory => {
                return Err(error(
                    entry.line,
                    format!(
                        "entry `{}` is a directory, not a bootable entry",
                        entry.name
                    ),
                ));
            }
            None => {
                return Err(error(
                    entry.line,
                    format!("entry `{}` has no `protocol:`", entry.name),
                ));
            }
        };
        if protocol != "limine" {
            return Err(error(
                entry.line,
                format!(
                    "entry `{}` uses protocol `{protocol}`; this loader boots only `protocol: limine`",
                    entry.name
                ),
            ));
        }
        let (kernel, kernel_line) = entry
            .path
            .as_ref()
            .or(entry.kernel_path.as_ref())
            .cloned()
            .ok_or_else(|| {
                error(
                    entry.line,
                    format!(
                        "entry `{}` has no kernel (`path:` or `kernel_path:`)",
                        entry.name
                    ),
                )
            })?;
        Ok(BootEntry {
            file: self.file.clone(),
            name: entry.name.clone(),
            line: entry.line,
            kernel,
            kernel_line,
            cmdline: entry.cmdline.clone().unwrap_or_default(),
            modules: entry
                .modules
                .iter()
                .map(|module| ModuleSpec {
                    uri: module.uri.clone(),
                    cmdline: module.cmdline.clone().unwrap_or_default(),
                    line: module.line,
                })
                .collect(),
            dtb_path: entry.dtb_path.clone(),
            kaslr: entry.kaslr,
            randomise_hhdm_base: entry.randomise_hhdm_base.unwrap_or(entry.kaslr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/limine.conf";

    fn parse_ok(text: &str) -> Config {
        parse(FILE, text, "x86-64").unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> Diagnostic {
        parse(FILE, text, "x86-64").expect_err("should fail")
    }

    const KEEL: &str = "\
# Keel boot configuration
timeout: 0

/Keel
    protocol: limine
    path: boot():/boot/kernel
    kernel_path: boot():/boot/kernel
    cmdline: test=boot
    module_path: boot():/boot/init
    module_cmdline: init
    module_path: boot():/boot/console
";

    #[test]
    fn parses_the_keel_configuration() {
        let config = parse_ok(KEEL);
        assert_eq!(config.timeout, Timeout::Seconds(0));
        assert!(config.warnings.is_empty());
        let entry = config.boot_entry().unwrap();
        assert_eq!(entry.name, "Keel");
        assert_eq!(entry.line, 4);
        assert_eq!(
            entry.kernel,
            Uri {
                path: "/boot/kernel".into(),
                hash: None
            }
        );
        assert_eq!(entry.cmdline, "test=boot");
        assert_eq!(entry.modules.len(), 2);
        assert_eq!(entry.modules[0].uri.path, "/boot/init");
        assert_eq!(entry.modules[0].cmdline, "init");
        assert_eq!(entry.modules[0].line, 9);
        assert_eq!(entry.modules[1].uri.path, "/boot/console");
        assert_eq!(entry.modules[1].cmdline, "");
        assert!(entry.kaslr);
        assert!(entry.randomise_hhdm_base, "randomised by default");
    }

    #[test]
    fn the_hhdm_base_is_fixed_by_its_option_or_by_kaslr() {
        let fixed = parse_ok("/A\nprotocol: limine\npath: boot():/k\nrandomise_hhdm_base: no\n");
        let entry = fixed.boot_entry().unwrap();
        assert!(entry.kaslr && !entry.randomise_hhdm_base);
        let no_kaslr = parse_ok("/A\nprotocol: limine\npath: boot():/k\nkaslr: no\n");
        assert!(!no_kaslr.boot_entry().unwrap().randomise_hhdm_base);
        let both = parse_ok(
            "/A\nprotocol: limine\npath: boot():/k\nkaslr: no\nRANDOMIZE_HHDM_BASE: yes\n",
        );
        assert!(both.boot_entry().unwrap().randomise_hhdm_base);
        assert!(fixed.warnings.is_empty() && both.warnings.is_empty());
    }

    #[test]
    fn either_kernel_path_spelling_alone_works() {
        let limine8 = parse_ok("/A\nprotocol: limine\nkernel_path: boot():/k\n");
        assert_eq!(limine8.boot_entry().unwrap().kernel.path, "/k");
        let limine9 = parse_ok("/A\nPROTOCOL: Limine\nPath: boot():/k\nkernel_cmdline: a b\n");
        let entry = limine9.boot_entry().unwrap();
        assert_eq!(entry.kernel.path, "/k");
        assert_eq!(entry.cmdline, "a b");
    }

    #[test]
    fn macros_comments_defaults_and_nesting() {
        let config = parse_ok(
            "${ROOT}=boot():/boot\ntimeout: no\ndefault_entry: 3\n/Dir\n//Old\nprotocol: linux\n//+New\n  # comment\nprotocol: limine\npath: ${ROOT}/${ARCH}/kernel\nkaslr: no\ndtb_path: boot():/virt.dtb\ncomment: hi\n",
        );
        assert_eq!(config.timeout, Timeout::Never);
        let entry = config.boot_entry().unwrap();
        assert_eq!(entry.name, "New");
        assert_eq!(entry.kernel.path, "/boot/x86-64/kernel");
        assert!(!entry.kaslr);
        assert_eq!(
            entry.dtb_path.clone().unwrap(),
            (
                Uri {
                    path: "/virt.dtb".into(),
                    hash: None
                },
                12
            )
        );
        assert_eq!(entry.kernel_line, 10);
        assert_eq!(entry.at(10, "x"), "/limine.conf:10: x");
        let directory = config.entry(1).unwrap_err();
        assert_eq!(directory.line, 4);
        assert!(directory.message.contains("directory"), "{directory}");
        let linux = config.entry(2).unwrap_err();
        assert!(linux.message.contains("protocol `linux`"), "{linux}");
    }

    #[test]
    fn unknown_keys_warn_with_their_line() {
        let config = parse_ok(
            "verbose: yes\nfrobnicate: 1\n/A\nprotocol: limine\npath: boot():/k\nresolution: 800x600\nwidget: 3\n",
        );
        let lines: Vec<usize> = config.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 2, 6, 7]);
        assert!(
            config.warnings[1]
                .to_string()
                .starts_with("/limine.conf:2: unknown global option `frobnicate`")
        );
        assert!(config.warnings[3].message.contains("`widget`"));
    }

    #[test]
    fn hash_suffix_is_kept() {
        let hash = "ab".repeat(64);
        let entry = parse_ok(&format!("/A\nprotocol: limine\npath: boot():/k#{hash}\n"))
            .boot_entry()
            .unwrap();
        assert_eq!(entry.kernel.hash.as_deref(), Some(hash.as_str()));
    }

    fn assert_error(text: &str, line: usize, needle: &str) {
        let error = parse_err(text);
        assert_eq!(error.line, line, "{error}");
        assert_eq!(error.file, FILE);
        assert!(
            error.message.contains(needle),
            "`{error}` should mention `{needle}`"
        );
        assert!(error.to_string().starts_with(&format!("{FILE}:{line}: ")));
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_error(
            "timeout: 0\n/A\nprotocol limine\n",
            3,
            "expected `key: value`",
        );
        assert_error("timeout: soon\n/A\n", 1, "timeout must be");
        assert_error("default_entry: 0\n/A\n", 1, "counts from 1");
        assert_error("default_entry: x\n/A\n", 1, "positive number");
        assert_error(
            "default_entry: 2\n/A\nprotocol: limine\n",
            1,
            "only 1 entries",
        );
        assert_error("# nothing\ntimeout: 1\n", 2, "no entries");
        assert_error("/\nprotocol: limine\n", 1, "entry without a name");
        assert_error("/A\n///B\n", 2, "nested 3 deep");
        assert_error("protocol: limine\n/A\n", 1, "outside any entry");
        assert_error(
            "/A\ntimeout: 3\n",
            2,
            "global option `timeout` inside entry",
        );
        assert_error("/A\nprotocol: limine\nprotocol: limine\n", 3, "given twice");
        assert_error("/A\nprotocol:\n", 2, "without a value");
        assert_error(
            "/A\npath: boot():/a\nkernel_path: boot():/b\n",
            3,
            "different files",
        );
        assert_error(
            "/A\ncmdline: a\nkernel_cmdline: b\n",
            3,
            "command line given twice",
        );
        assert_error(
            "/A\nmodule_cmdline: x\n",
            2,
            "without a preceding `module_path`",
        );
        assert_error(
            "/A\nmodule_path: boot():/m\nmodule_cmdline:\nmodule_cmdline: y\n",
            4,
            "second `module_cmdline`",
        );
        assert_error("/A\nkaslr: maybe\n", 2, "kaslr must be");
        assert_error(
            "/A\nrandomise_hhdm_base: 1\n",
            2,
            "randomise_hhdm_base must be",
        );
        assert_error("/A\npath: /boot/kernel\n", 2, "not a Limine URI");
        assert_error(
            "/A\npath: hdd(1:1):/boot/kernel\n",
            2,
            "`hdd()` is not supported",
        );
        assert_error("/A\npath: boot(2):/boot/kernel\n", 2, "another partition");
        assert_error("/A\npath: boot():kernel\n", 2, "must start with `/`");
        assert_error("/A\npath: boot():/k#1234\n", 2, "BLAKE2b");
        assert_error("/A\nmodule_path:\n", 2, "empty path");
        assert_error("/A\npath: ${NOPE}/k\n", 2, "undefined macro");
        assert_error("/A\npath: ${ARCH\n", 2, "unterminated macro");
        assert_error("${X\n/A\n", 1, "malformed macro");
    }

    #[test]
    fn entries_that_cannot_boot_name_their_line() {
        let config = parse_ok("/A\ncomment: nothing\n/B\nprotocol: limine\n");
        let no_protocol = config.entry(1).unwrap_err();
        assert_eq!(
            (
                no_protocol.line,
                no_protocol.message.contains("no `protocol:`")
            ),
            (1, true)
        );
        let no_kernel = config.entry(2).unwrap_err();
        assert_eq!(no_kernel.line, 3);
        assert!(no_kernel.message.contains("no kernel"));
        assert!(config.entry(3).is_err());
    }
}
