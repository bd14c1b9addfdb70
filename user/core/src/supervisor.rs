//! `init`'s supervision table: the manifest's servers, which process runs each, and when a
//! dead one is due to start again.
//!
//! `init` is a loop around this table: start what [`Supervisor::due`] returns (reporting
//! [`Supervisor::started`] or [`Supervisor::start_failed`]), then wait for a death or for
//! [`Supervisor::next_wakeup`], and hand each death to [`Supervisor::died`], which applies the
//! server's [`Restarts`] and returns the [`Report`] line to print. Nothing here makes a
//! system call, so all of it is tested on the host.

use alloc::vec::Vec;
use core::fmt;

use crate::manifest::{Manifest, Server};
use crate::restart::{Backoff, Decision, Exit, Report, Restarts};

/// Where one server stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State<P> {
    /// Not started yet, or due to start now.
    Due,
    /// Running as process `P`.
    Running(P),
    /// Dead; to be started again at tick `at`.
    Waiting { at: u64 },
    /// Dead for good (its policy, or a crash loop).
    Stopped,
}

#[derive(Debug)]
struct Slot<P> {
    server: Server,
    restarts: Restarts,
    state: State<P>,
}

/// The table.
#[derive(Debug)]
pub struct Supervisor<P> {
    slots: Vec<Slot<P>>,
    hz: u64,
}

impl<P: Copy + Eq> Supervisor<P> {
    /// Every server of `manifest` due to start, with the default backoff for a `hz` timer.
    pub fn new(manifest: Manifest, hz: u64) -> Self {
        Self::with_backoff(manifest, hz, Backoff::for_hz(hz))
    }

    pub fn with_backoff(manifest: Manifest, hz: u64, backoff: Backoff) -> Self {
        let slots = manifest
            .servers
            .into_iter()
            .map(|server| Slot {
                restarts: Restarts::new(server.restart, backoff),
                server,
                state: State::Due,
            })
            .collect();
        Self { slots, hz }
    }

    /// The servers to start now, by index, in manifest order (a waiting server becomes due
    /// when `now` reaches its time).
    pub fn due(&mut self, now: u64) -> Vec<usize> {
        let mut due = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let State::Waiting { at } = slot.state
                && now >= at
            {
                slot.state = State::Due;
            }
            if slot.state == State::Due {
                due.push(index);
            }
        }
        due
    }

    /// Server `index`.
    pub fn server(&self, index: usize) -> Option<&Server> {
        self.slots.get(index).map(|slot| &slot.server)
    }

    pub fn state(&self, index: usize) -> Option<State<P>> {
        self.slots.get(index).map(|slot| slot.state)
    }

    /// The server process `pid` runs, if any.
    pub fn index_of(&self, pid: P) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.state == State::Running(pid))
    }

    /// The process running the server of module `module`.
    pub fn pid_of(&self, module: &str) -> Option<P> {
        self.slots.iter().find_map(|slot| match slot.state {
            State::Running(pid) if slot.server.module == module => Some(pid),
            _ => None,
        })
    }

    /// Server `index` was started as process `pid` at `now`. Returns the line to print.
    pub fn started(&mut self, index: usize, pid: P, now: u64) -> Option<Started<'_, P>> {
        let slot = self.slots.get_mut(index)?;
        slot.restarts.started(now);
        slot.state = State::Running(pid);
        Some(Started {
            module: &slot.server.module,
            pid,
        })
    }

    /// Server `index` could not be started at `now` (no such module, out of memory): it
    /// counts as a failed run.
    pub fn start_failed(&mut self, index: usize, now: u64) -> Option<Report<'_>> {
        let slot = self.slots.get_mut(index)?;
        slot.restarts.started(now);
        Some(Self::apply(slot, self.hz, Exit::Code(-1), now))
    }

    /// Process `pid` ended as `exit` at `now`. `None` when it runs no server (a program the
    /// shell spawned); else the report line, the table already updated.
    pub fn died(&mut self, pid: P, exit: Exit, now: u64) -> Option<Report<'_>> {
        let index = self.index_of(pid)?;
        let hz = self.hz;
        Some(Self::apply(&mut self.slots[index], hz, exit, now))
    }

    fn apply(slot: &mut Slot<P>, hz: u64, exit: Exit, now: u64) -> Report<'_> {
        let decision = slot.restarts.ended(now, exit);
        slot.state = match decision {
            Decision::Restart { delay, .. } => State::Waiting {
                at: now.saturating_add(delay),
            },
            Decision::Stop | Decision::CrashLoop { .. } => State::Stopped,
        };
        Report {
            module: &slot.server.module,
            exit,
            decision,
            hz,
        }
    }

    /// The earliest tick at which a waiting server is due, if one waits.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|slot| match slot.state {
                State::Waiting { at } => Some(at),
                _ => None,
            })
            .min()
    }
}

/// `init`'s line for a start: `init: started console (pid 3)`.
pub struct Started<'a, P> {
    pub module: &'a str,
    pub pid: P,
}

impl<P: fmt::Display> fmt::Display for Started<'_, P> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "init: started {} (pid {})",
            self.module, self.pid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    const HZ: u64 = 100;

    fn supervisor() -> Supervisor<u32> {
        let manifest = Manifest::parse(
            b"console restart=always caps=serial\nnames restart=on-failure\n\
              shell restart=never caps=console,names\n",
        )
        .unwrap();
        Supervisor::new(manifest, HZ)
    }

    /// Start everything due at `now` with pids from `next_pid`; the printed lines.
    fn start_due(table: &mut Supervisor<u32>, now: u64, next_pid: &mut u32) -> Vec<String> {
        let mut lines = Vec::new();
        for index in table.due(now) {
            *next_pid += 1;
            lines.push(table.started(index, *next_pid, now).unwrap().to_string());
        }
        lines
    }

    #[test]
    fn servers_start_in_manifest_order() {
        let mut table = supervisor();
        let mut pid = 0;
        assert_eq!(
            start_due(&mut table, 0, &mut pid),
            [
                "init: started console (pid 1)",
                "init: started names (pid 2)",
                "init: started shell (pid 3)"
            ]
        );
        assert!(table.due(1000).is_empty());
        assert_eq!(table.pid_of("names"), Some(2));
        assert_eq!(table.next_wakeup(), None);
    }

    #[test]
    fn a_killed_console_is_restarted_after_its_delay() {
        let mut table = supervisor();
        let mut pid = 0;
        start_due(&mut table, 0, &mut pid);
        let report = table.died(1, Exit::Killed, 500).unwrap().to_string();
        assert_eq!(
            report,
            "init: console was killed; restarting in 100 ms (attempt 1)"
        );
        assert_eq!(table.state(0), Some(State::Waiting { at: 510 }));
        assert_eq!(table.next_wakeup(), Some(510));
        assert!(table.due(509).is_empty());
        assert_eq!(
            start_due(&mut table, 510, &mut pid),
            ["init: started console (pid 4)"]
        );
        // The old pid names nothing any more.
        assert!(table.died(1, Exit::Faulted, 600).is_none());
        assert_eq!(table.pid_of("console"), Some(4));
    }

    #[test]
    fn policies_decide_who_comes_back() {
        let mut table = supervisor();
        let mut pid = 0;
        start_due(&mut table, 0, &mut pid);
        // names exits cleanly: on-failure leaves it stopped.
        assert_eq!(
            table.died(2, Exit::Code(0), 10).unwrap().to_string(),
            "init: names exited; not restarted (policy)"
        );
        // shell crashes: never restarted.
        assert_eq!(
            table.died(3, Exit::Faulted, 10).unwrap().to_string(),
            "init: shell crashed; not restarted (policy)"
        );
        assert_eq!(table.state(1), Some(State::Stopped));
        assert_eq!(table.state(2), Some(State::Stopped));
        assert!(table.due(1_000_000).is_empty());
    }

    #[test]
    fn a_crash_loop_stops_the_server_and_is_reported() {
        let mut table = supervisor();
        let mut pid = 0;
        let mut now = 0;
        start_due(&mut table, now, &mut pid);
        let mut console = 1;
        let mut last = String::new();
        for _ in 0..5 {
            now += 1;
            last = table.died(console, Exit::Faulted, now).unwrap().to_string();
            if let Some(at) = table.next_wakeup() {
                now = at;
                start_due(&mut table, now, &mut pid);
                console = table.pid_of("console").unwrap();
            }
        }
        assert_eq!(
            last,
            "init: console crashed; crash loop (5 ends in 30000 ms), stopped"
        );
        assert_eq!(table.state(0), Some(State::Stopped));
        assert_eq!(table.next_wakeup(), None);
    }

    #[test]
    fn a_failed_start_backs_off_like_a_crash() {
        let mut table = supervisor();
        let due = table.due(0);
        assert_eq!(due, [0, 1, 2]);
        assert_eq!(
            table.start_failed(0, 0).unwrap().to_string(),
            "init: console exited with code -1; restarting in 100 ms (attempt 1)"
        );
        assert_eq!(table.due(5), [1, 2]);
        assert!(table.start_failed(99, 0).is_none());
        assert!(table.started(99, 1, 0).is_none());
    }
}
