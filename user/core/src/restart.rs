//! `init`'s restart decisions: whether a server that ended starts again, after how long, and
//! when a crash loop stops it.
//!
//! Each server has a [`Policy`] from the manifest and a [`Restarts`] record. When it ends,
//! [`Restarts::ended`] decides: the delay doubles with each consecutive failure from
//! [`Backoff::initial`] up to [`Backoff::max`], and starts over once a run lasted
//! [`Backoff::stable_after`]; [`Backoff::loop_limit`] ends within [`Backoff::window`] is a
//! crash loop, and the server is stopped and reported rather than restarted for ever.
//! Time is in timer ticks; a clock that seems to run backwards counts as no time passing.

use alloc::vec::Vec;
use core::fmt;

/// When a server that ended is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Whatever the reason it ended.
    Always,
    /// Unless it exited with code 0.
    OnFailure,
    /// Never.
    Never,
}

impl Policy {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "always" => Some(Policy::Always),
            "on-failure" => Some(Policy::OnFailure),
            "never" => Some(Policy::Never),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::OnFailure => "on-failure",
            Policy::Never => "never",
        }
    }
}

/// How a server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit` with this code.
    Code(i64),
    /// The kernel killed it for a fault.
    Faulted,
    /// Someone with its process capability killed it (the shell's `kill`).
    Killed,
}

impl Exit {
    pub const fn is_failure(self) -> bool {
        !matches!(self, Exit::Code(0))
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(0) => formatter.write_str("exited"),
            Exit::Code(code) => write!(formatter, "exited with code {code}"),
            Exit::Faulted => formatter.write_str("crashed"),
            Exit::Killed => formatter.write_str("was killed"),
        }
    }
}

/// The timing of restarts, in timer ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first restart.
    pub initial: u64,
    /// The longest delay.
    pub max: u64,
    /// A run at least this long resets the delay to `initial`.
    pub stable_after: u64,
    /// The span in which `loop_limit` ends make a crash loop.
    pub window: u64,
    /// Ends within `window` that make a crash loop (at least 1).
    pub loop_limit: u32,
}

impl Backoff {
    /// Defaults for a `hz` timer: 100 ms doubling to 5 s; stable after 10 s; 5 ends in
    /// 30 s are a crash loop.
    pub const fn for_hz(hz: u64) -> Self {
        Self {
            initial: hz / 10,
            max: hz * 5,
            stable_after: hz * 10,
            window: hz * 30,
            loop_limit: 5,
        }
    }
}

/// The largest [`Backoff::loop_limit`].
pub const LOOP_LIMIT_MAX: u32 = 64;

/// What `init` does about a server that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay` ticks; this is consecutive restart number `attempt`.
    Restart { delay: u64, attempt: u32 },
    /// Leave it stopped: its policy says so.
    Stop,
    /// Leave it stopped: `ends` ends within `window` ticks.
    CrashLoop { ends: u32, window: u64 },
}

/// One server's restart history.
#[derive(Clone, Debug)]
pub struct Restarts {
    policy: Policy,
    backoff: Backoff,
    started_at: u64,
    /// Failures since the last stable run.
    consecutive: u32,
    /// When the recent ends happened (within the window, at most `loop_limit`).
    recent: Vec<u64>,
}

impl Restarts {
    /// A record for a server not yet started. `loop_limit` is clamped to
    /// `1..=`[`LOOP_LIMIT_MAX`] (it sizes the history).
    pub fn new(policy: Policy, backoff: Backoff) -> Self {
        let backoff = Backoff {
            loop_limit: backoff.loop_limit.clamp(1, LOOP_LIMIT_MAX),
            ..backoff
        };
        Self {
            policy,
            backoff,
            started_at: 0,
            consecutive: 0,
            recent: Vec::with_capacity(backoff.loop_limit as usize),
        }
    }

    /// The server was (re)started at `now`.
    pub fn started(&mut self, now: u64) {
        self.started_at = now;
    }

    /// The server ended at `now` as `exit`: decide what to do.
    pub fn ended(&mut self, now: u64, exit: Exit) -> Decision {
        let restart = match self.policy {
            Policy::Always => true,
            Policy::OnFailure => exit.is_failure(),
            Policy::Never => false,
        };
        if !restart {
            return Decision::Stop;
        }
        let ran = now.saturating_sub(self.started_at);
        if ran >= self.backoff.stable_after {
            self.consecutive = 0;
        }
        let window = self.backoff.window;
        self.recent
            .retain(|&then| now.saturating_sub(then) < window.max(1));
        // why: `retain` above keeps at most `loop_limit - 1` entries (a full list is a
        // crash loop, returned below), so this push stays within the capacity.
        self.recent.push(now);
        // why: the list holds at most `loop_limit` (a u32) entries.
        let ends = self.recent.len() as u32;
        if ends >= self.backoff.loop_limit {
            self.recent.clear();
            return Decision::CrashLoop { ends, window };
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let doublings = self.consecutive - 1;
        let delay = self
            .backoff
            .initial
            .checked_shl(doublings)
            .filter(|delay| delay >> doublings == self.backoff.initial)
            .unwrap_or(u64::MAX)
            .min(self.backoff.max);
        Decision::Restart {
            delay,
            attempt: self.consecutive,
        }
    }
}

/// `init`'s console line for a server that ended: `init: shell crashed; restarting in
/// 200 ms (attempt 2)`.
pub struct Report<'a> {
    pub module: &'a str,
    pub exit: Exit,
    pub decision: Decision,
    /// Ticks per second, to print milliseconds.
    pub hz: u64,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "init: {} {}", self.module, self.exit)?;
        let milliseconds = |ticks: u64| ticks.saturating_mul(1000) / self.hz.max(1);
        match self.decision {
            Decision::Restart { delay, attempt } => write!(
                formatter,
                "; restarting in {} ms (attempt {attempt})",
                milliseconds(delay)
            ),
            Decision::Stop => formatter.write_str("; not restarted (policy)"),
            Decision::CrashLoop { ends, window } => write!(
                formatter,
                "; crash loop ({ends} ends in {} ms), stopped",
                milliseconds(window)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const HZ: u64 = 100;

    fn restarts(policy: Policy) -> Restarts {
        Restarts::new(policy, Backoff::for_hz(HZ))
    }

    #[test]
    fn policies() {
        let mut always = restarts(Policy::Always);
        assert!(matches!(
            always.ended(5, Exit::Code(0)),
            Decision::Restart { .. }
        ));
        let mut on_failure = restarts(Policy::OnFailure);
        assert_eq!(on_failure.ended(5, Exit::Code(0)), Decision::Stop);
        for exit in [Exit::Code(1), Exit::Code(-1), Exit::Faulted, Exit::Killed] {
            let mut on_failure = restarts(Policy::OnFailure);
            assert!(matches!(
                on_failure.ended(5, exit),
                Decision::Restart { .. }
            ));
        }
        let mut never = restarts(Policy::Never);
        assert_eq!(never.ended(5, Exit::Faulted), Decision::Stop);
        for policy in [Policy::Always, Policy::OnFailure, Policy::Never] {
            assert_eq!(Policy::from_name(policy.name()), Some(policy));
        }
        assert_eq!(Policy::from_name("Always"), None);
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut server = restarts(Policy::Always);
        // Far apart (no crash loop), each run short (no reset).
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            server.started(now);
            now += 5;
            match server.ended(now, Exit::Faulted) {
                Decision::Restart { delay, .. } => delays.push(delay),
                other => panic!("{other:?}"),
            }
            // Wait out the window so only the backoff is tested here.
            now += Backoff::for_hz(HZ).window;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 500, 500]);
    }

    #[test]
    fn a_stable_run_resets_the_delay() {
        let mut server = restarts(Policy::Always);
        server.started(0);
        server.ended(5, Exit::Faulted);
        server.started(15);
        assert_eq!(
            server.ended(20, Exit::Faulted),
            Decision::Restart {
                delay: 20,
                attempt: 2
            }
        );
        server.started(40);
        // Ran 10 s: back to the first delay.
        assert_eq!(
            server.ended(40 + 10 * HZ, Exit::Killed),
            Decision::Restart {
                delay: 10,
                attempt: 1
            }
        );
    }

    #[test]
    fn a_crash_loop_is_stopped() {
        let mut server = restarts(Policy::Always);
        let mut now = 0;
        let mut decisions = Vec::new();
        for _ in 0..5 {
            server.started(now);
            now += 1;
            decisions.push(server.ended(now, Exit::Faulted));
            now += 50;
        }
        assert!(
            decisions[..4]
                .iter()
                .all(|d| matches!(d, Decision::Restart { .. }))
        );
        assert_eq!(
            decisions[4],
            Decision::CrashLoop {
                ends: 5,
                window: 30 * HZ
            }
        );
    }

    #[test]
    fn ends_spread_wider_than_the_window_are_no_loop() {
        let mut server = restarts(Policy::Always);
        for index in 0..50u64 {
            let now = index * 8 * HZ;
            server.started(now);
            assert!(matches!(
                server.ended(now + 1, Exit::Faulted),
                Decision::Restart { .. }
            ));
        }
    }

    #[test]
    fn hostile_clocks_and_extremes() {
        // Time running backwards counts as no time: still bounded, still a loop.
        let mut server = restarts(Policy::Always);
        server.started(u64::MAX);
        for _ in 0..4 {
            assert!(matches!(
                server.ended(3, Exit::Faulted),
                Decision::Restart { .. }
            ));
        }
        assert!(matches!(
            server.ended(0, Exit::Faulted),
            Decision::CrashLoop { .. }
        ));
        // Huge delays saturate at the maximum; a zero window and limit are clamped.
        let mut server = Restarts::new(
            Policy::Always,
            Backoff {
                initial: u64::MAX / 2,
                max: u64::MAX,
                stable_after: u64::MAX,
                window: 0,
                loop_limit: 0,
            },
        );
        assert_eq!(
            server.ended(1, Exit::Faulted),
            Decision::CrashLoop { ends: 1, window: 0 }
        );
        let mut server = Restarts::new(
            Policy::Always,
            Backoff {
                initial: u64::MAX / 2,
                max: u64::MAX,
                stable_after: u64::MAX,
                window: 1,
                loop_limit: u32::MAX,
            },
        );
        let mut last = 0;
        for now in 0..100 {
            if let Decision::Restart { delay, .. } = server.ended(now * 10, Exit::Faulted) {
                assert!(delay >= last);
                last = delay;
            }
        }
        assert_eq!(last, u64::MAX);
    }

    #[test]
    fn reports_are_one_line() {
        let report = |exit, decision| {
            Report {
                module: "console",
                exit,
                decision,
                hz: HZ,
            }
            .to_string()
        };
        assert_eq!(
            report(
                Exit::Killed,
                Decision::Restart {
                    delay: 20,
                    attempt: 2
                }
            ),
            "init: console was killed; restarting in 200 ms (attempt 2)"
        );
        assert_eq!(
            report(Exit::Code(3), Decision::Stop),
            "init: console exited with code 3; not restarted (policy)"
        );
        assert_eq!(
            report(
                Exit::Faulted,
                Decision::CrashLoop {
                    ends: 5,
                    window: 3000
                }
            ),
            "init: console crashed; crash loop (5 ends in 30000 ms), stopped"
        );
    }
}
