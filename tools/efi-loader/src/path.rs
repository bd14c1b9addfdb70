//! Absolute, normalized file paths, as Limine reports them in `struct limine_file`.
//!
//! Limine resolves an internal module's path against the directory of the kernel and
//! reports the result without `.` components, without `..` components (each removes the
//! component before it; at the root it stays at the root) and without repeated slashes.
//! A kernel that asks for `./limine.conf` next to a kernel at `/kernel` is told
//! `/limine.conf`.

use alloc::string::String;
use alloc::vec::Vec;

/// `path` made absolute against the directory `directory` (itself absolute) and
/// normalized. An absolute `path` ignores `directory`; an empty one names `directory`.
pub fn absolute(path: &str, directory: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let base = if path.starts_with('/') { "" } else { directory };
    for component in base.split('/').chain(path.split('/')) {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = String::new();
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The directory part of the absolute file path `path` (`/` for a file at the root).
pub fn directory(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(slash) => &path[..slash],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_directory() {
        assert_eq!(absolute("./limine.conf", "/"), "/limine.conf");
        assert_eq!(absolute("limine.conf", "/"), "/limine.conf");
        assert_eq!(absolute("./init", "/boot"), "/boot/init");
        assert_eq!(absolute("init", "/boot/"), "/boot/init");
        assert_eq!(absolute("../limine.conf", "/boot"), "/limine.conf");
        assert_eq!(absolute("a/./b/../c", "/boot"), "/boot/a/c");
    }

    #[test]
    fn absolute_paths_ignore_the_directory() {
        assert_eq!(absolute("/limine.conf", "/boot"), "/limine.conf");
        assert_eq!(absolute("/./boot//keel", "/x"), "/boot/keel");
        assert_eq!(absolute("//boot///init/", "/"), "/boot/init");
    }

    #[test]
    fn dot_dot_stops_at_the_root() {
        assert_eq!(absolute("../../x", "/boot"), "/x");
        assert_eq!(absolute("..", "/"), "/");
        assert_eq!(absolute("/..", "/boot"), "/");
    }

    #[test]
    fn empty_and_dot_name_the_directory() {
        assert_eq!(absolute("", "/boot"), "/boot");
        assert_eq!(absolute(".", "/boot"), "/boot");
        assert_eq!(absolute("./", "/"), "/");
    }

    #[test]
    fn directory_of_a_file() {
        assert_eq!(directory("/keel"), "/");
        assert_eq!(directory("/boot/keel"), "/boot");
        assert_eq!(directory("/a/b/c"), "/a/b");
    }
}
