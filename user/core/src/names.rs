//! The name service's registry: names bound to endpoints, each binding owned by the process
//! that registered it and released when that process dies.
//!
//! The registry is generic over what a name is bound to (`E`: an endpoint handle in the
//! server, anything in tests) and over the owner's identity (`O`: a process id). Names are
//! short and plain (see [`is_valid_name`]); the table and each owner's share of it are
//! bounded, so one client cannot crowd out the rest.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The longest name.
pub const NAME_MAX: usize = 32;
/// The most names in the registry.
pub const REGISTRY_MAX: usize = 128;
/// The most names one owner may hold.
pub const PER_OWNER_MAX: usize = 16;

/// Why a registry operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Not a valid name ([`is_valid_name`]).
    InvalidName,
    /// Another owner holds the name.
    Taken,
    /// No such name.
    NotFound,
    /// The caller does not own the name.
    NotOwner,
    /// The registry is full, or the owner holds its maximum.
    Full,
}

/// One binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<E, O> {
    pub endpoint: E,
    pub owner: O,
}

/// Names to endpoints.
#[derive(Debug)]
pub struct Registry<E, O> {
    names: BTreeMap<String, Binding<E, O>>,
    max: usize,
    per_owner: usize,
}

impl<E: Copy, O: Copy + Eq> Default for Registry<E, O> {
    fn default() -> Self {
        Self::new(REGISTRY_MAX, PER_OWNER_MAX)
    }
}

/// Whether `name` may be registered: 1 to [`NAME_MAX`] bytes of lower-case letters, digits,
/// `-`, `_`, `.` and `/`, starting with a letter.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=NAME_MAX).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|&byte| {
            byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || matches!(byte, b'-' | b'_' | b'.' | b'/')
        })
}

impl<E: Copy, O: Copy + Eq> Registry<E, O> {
    /// A registry of at most `max` names, `per_owner` of them per owner.
    pub fn new(max: usize, per_owner: usize) -> Self {
        Self {
            names: BTreeMap::new(),
            max,
            per_owner,
        }
    }

    /// Bind `name` to `endpoint` for `owner`. An owner may rebind a name it holds (a server
    /// that recreated its endpoint); a name held by another owner is [`NameError::Taken`]
    /// until that owner releases it or dies.
    pub fn register(&mut self, name: &str, endpoint: E, owner: O) -> Result<(), NameError> {
        if !is_valid_name(name) {
            return Err(NameError::InvalidName);
        }
        if let Some(binding) = self.names.get_mut(name) {
            if binding.owner != owner {
                return Err(NameError::Taken);
            }
            binding.endpoint = endpoint;
            return Ok(());
        }
        if self.names.len() >= self.max || self.owned_by(owner) >= self.per_owner {
            return Err(NameError::Full);
        }
        self.names
            .insert(String::from(name), Binding { endpoint, owner });
        Ok(())
    }

    /// The endpoint bound to `name`.
    pub fn lookup(&self, name: &str) -> Result<E, NameError> {
        if !is_valid_name(name) {
            return Err(NameError::InvalidName);
        }
        self.names
            .get(name)
            .map(|binding| binding.endpoint)
            .ok_or(NameError::NotFound)
    }

    /// Remove `name`, which `owner` must hold.
    pub fn release(&mut self, name: &str, owner: O) -> Result<E, NameError> {
        match self.names.get(name) {
            None => Err(NameError::NotFound),
            Some(binding) if binding.owner != owner => Err(NameError::NotOwner),
            Some(_) => self
                .names
                .remove(name)
                .map(|binding| binding.endpoint)
                .ok_or(NameError::NotFound),
        }
    }

    /// `owner` died: remove every name it held and return them (for the log), in order.
    pub fn owner_died(&mut self, owner: O) -> Vec<(String, E)> {
        let mut released = Vec::new();
        self.names.retain(|name, binding| {
            if binding.owner == owner {
                released.push((name.clone(), binding.endpoint));
                false
            } else {
                true
            }
        });
        released
    }

    /// Every binding, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Binding<E, O>)> {
        self.names
            .iter()
            .map(|(name, binding)| (name.as_str(), binding))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn owned_by(&self, owner: O) -> usize {
        self.names
            .values()
            .filter(|binding| binding.owner == owner)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    type Names = Registry<u64, u32>;

    #[test]
    fn register_then_look_up() {
        let mut names = Names::default();
        assert_eq!(names.register("console", 10, 1), Ok(()));
        assert_eq!(names.register("names", 11, 2), Ok(()));
        assert_eq!(names.lookup("console"), Ok(10));
        assert_eq!(names.lookup("names"), Ok(11));
        assert_eq!(names.lookup("shell"), Err(NameError::NotFound));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn a_name_held_by_another_owner_is_taken() {
        let mut names = Names::default();
        names.register("console", 10, 1).unwrap();
        assert_eq!(names.register("console", 99, 2), Err(NameError::Taken));
        assert_eq!(names.lookup("console"), Ok(10));
        // The owner itself may rebind it.
        assert_eq!(names.register("console", 12, 1), Ok(()));
        assert_eq!(names.lookup("console"), Ok(12));
    }

    #[test]
    fn only_the_owner_releases() {
        let mut names = Names::default();
        names.register("console", 10, 1).unwrap();
        assert_eq!(names.release("console", 2), Err(NameError::NotOwner));
        assert_eq!(names.release("console", 1), Ok(10));
        assert_eq!(names.release("console", 1), Err(NameError::NotFound));
        assert!(names.is_empty());
    }

    #[test]
    fn an_owners_names_are_released_when_it_dies() {
        let mut names = Names::default();
        names.register("console", 10, 1).unwrap();
        names.register("console/log", 13, 1).unwrap();
        names.register("names", 11, 2).unwrap();
        let released = names.owner_died(1);
        assert_eq!(
            released,
            [
                (String::from("console"), 10),
                (String::from("console/log"), 13)
            ]
        );
        assert_eq!(names.lookup("console"), Err(NameError::NotFound));
        assert_eq!(names.lookup("names"), Ok(11));
        // A restarted server (a new owner) can take the name again.
        assert_eq!(names.register("console", 20, 3), Ok(()));
        assert_eq!(names.lookup("console"), Ok(20));
        assert!(names.owner_died(1).is_empty());
    }

    #[test]
    fn bad_names_are_refused() {
        let mut names = Names::default();
        let long = "a".repeat(NAME_MAX + 1);
        for bad in [
            "",
            "Console",
            "1st",
            "-x",
            "a b",
            "a\0",
            "é",
            "a\n",
            long.as_str(),
        ] {
            assert_eq!(
                names.register(bad, 1, 1),
                Err(NameError::InvalidName),
                "{bad:?}"
            );
            assert_eq!(names.lookup(bad), Err(NameError::InvalidName), "{bad:?}");
        }
        assert!(is_valid_name(&"a".repeat(NAME_MAX)));
        assert!(is_valid_name("net/tcp.v4_2-x"));
        assert!(names.is_empty());
    }

    #[test]
    fn one_owner_cannot_fill_the_registry() {
        let mut names = Names::new(8, 3);
        for index in 0..3 {
            names.register(&format!("a{index}"), index, 1).unwrap();
        }
        assert_eq!(names.register("a3", 3, 1), Err(NameError::Full));
        // Rebinding a held name still works at the limit.
        assert_eq!(names.register("a0", 7, 1), Ok(()));
        for index in 0..5u64 {
            names
                .register(&format!("b{index}"), index, 10 + index as u32)
                .unwrap();
        }
        assert_eq!(names.len(), 8);
        assert_eq!(names.register("c", 0, 99), Err(NameError::Full));
        names.owner_died(1);
        assert_eq!(names.register("c", 0, 99), Ok(()));
    }

    #[test]
    fn many_hostile_operations_keep_the_bounds() {
        let mut names = Names::new(32, 4);
        let mut state = 0x1234_5678u32;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let name = format!("n{}", state % 64);
            let owner = state >> 8 & 15;
            match state >> 12 & 3 {
                0 | 1 => {
                    let _ = names.register(&name, u64::from(state), owner);
                }
                2 => {
                    let _ = names.release(&name, owner);
                }
                _ => {
                    names.owner_died(owner);
                }
            }
            assert!(names.len() <= 32);
            for owner in 0..16 {
                assert!(names.owned_by(owner) <= 4);
            }
        }
    }
}
