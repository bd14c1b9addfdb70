//! The kernel command line: space-separated `key=value` words and bare flags.
//!
//! The only key the kernel acts on today is `test=<scenario>` (DESIGN.md §8).

/// The parsed command line. Borrows the loader's string; nothing is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmdline<'a> {
    raw: &'a str,
}

impl<'a> Cmdline<'a> {
    pub fn new(raw: &'a str) -> Self {
        Self { raw: raw.trim() }
    }

    /// The command line as given (trimmed).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The value of the last `key=value` word for `key` (later words override earlier ones,
    /// so a user can append to a default command line).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.raw
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            // why: searching from the end finds the last word without walking the rest.
            .next_back()
    }

    /// The scenario selected with `test=<name>`, if any.
    pub fn scenario(&self) -> Option<&'a str> {
        self.get("test").filter(|name| !name.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_has_no_scenario() {
        assert_eq!(Cmdline::new("").scenario(), None);
        assert_eq!(Cmdline::new("   ").as_str(), "");
    }

    #[test]
    fn finds_scenario_among_other_words() {
        let line = Cmdline::new(" quiet test=boot loglevel=3 ");
        assert_eq!(line.scenario(), Some("boot"));
        assert_eq!(line.get("loglevel"), Some("3"));
        assert_eq!(line.get("quiet"), None);
    }

    #[test]
    fn last_word_wins_and_empty_value_is_none() {
        assert_eq!(
            Cmdline::new("test=boot test=kernel").scenario(),
            Some("kernel")
        );
        assert_eq!(Cmdline::new("test=").scenario(), None);
    }

    #[test]
    fn key_must_match_exactly() {
        assert_eq!(Cmdline::new("xtest=boot tests=boot").scenario(), None);
    }
}
