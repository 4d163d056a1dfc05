//! The lock-free set of interrupt lines devices drive.
//!
//! A [`LineSet`] holds one small atomic word per line (GSI): the current level
//! and a sticky "rose" flag. Devices hold [`Line`] handles (`&self` only, no
//! borrow of the router) and raise, lower or pulse them from any context. The
//! router [`LineSet::sample`]s each line at VM exit/entry: it sees the current
//! level and whether the line went up since the previous sample, so a pulse,
//! or a raise followed by a lower between two samples, is never lost. A
//! set-wide "touched" flag says whether any line changed since the router
//! last looked, so an exit that changed nothing samples nothing.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::InterruptLine;

const LEVEL: u8 = 1 << 0;
const ROSE: u8 = 1 << 1;

/// What the router sees of one line when it samples it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineSample {
    /// The line is asserted now.
    pub asserted: bool,
    /// The line went from deasserted to asserted (or was pulsed) at least
    /// once since the previous sample. Several rises coalesce into one.
    pub rose: bool,
}

/// `N` interrupt lines, numbered 0..N (the global system interrupt numbers
/// of the board). Usable from a `static`.
#[derive(Debug)]
pub struct LineSet<const N: usize> {
    state: [AtomicU8; N],
    touched: AtomicBool,
}

impl<const N: usize> Default for LineSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineSet<N> {
    /// All lines deasserted, no edge recorded.
    pub const fn new() -> Self {
        Self {
            state: [const { AtomicU8::new(0) }; N],
            // A new set has not been looked at yet.
            touched: AtomicBool::new(true),
        }
    }

    /// Number of lines.
    pub const fn len(&self) -> usize {
        N
    }

    /// Whether the set has no lines at all.
    pub const fn is_empty(&self) -> bool {
        N == 0
    }

    /// A handle on line `gsi` for a device, or `None` if `gsi >= N`.
    pub fn line(&self, gsi: usize) -> Option<Line<'_, N>> {
        (gsi < N).then_some(Line { set: self, gsi })
    }

    /// Whether some line's level or edge record changed since the previous
    /// call (true for a new set); clears the flag. A caller that then
    /// samples every line misses nothing: a change made after this call
    /// sets the flag again.
    pub fn take_touched(&self) -> bool {
        self.touched.swap(false, Ordering::AcqRel)
    }

    /// Reads line `gsi` and clears its edge record. Out-of-range lines read
    /// as deasserted.
    pub fn sample(&self, gsi: usize) -> LineSample {
        let Some(word) = self.state.get(gsi) else {
            return LineSample::default();
        };
        let before = word.fetch_and(!ROSE, Ordering::AcqRel);
        LineSample {
            asserted: before & LEVEL != 0,
            rose: before & ROSE != 0,
        }
    }

    /// Reads line `gsi` without consuming its edge record.
    pub fn peek(&self, gsi: usize) -> LineSample {
        let before = self
            .state
            .get(gsi)
            .map_or(0, |word| word.load(Ordering::Acquire));
        LineSample {
            asserted: before & LEVEL != 0,
            rose: before & ROSE != 0,
        }
    }

    fn set_level(&self, gsi: usize, asserted: bool) {
        let Some(word) = self.state.get(gsi) else {
            return;
        };
        let before = if asserted {
            // One atomic step, so a sampler never sees the level without
            // the edge that produced it and then the edge again.
            word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (old & LEVEL == 0).then_some(old | LEVEL | ROSE)
            })
            .unwrap_or_else(|unchanged| unchanged)
        } else {
            word.fetch_and(!LEVEL, Ordering::AcqRel)
        };
        if (before & LEVEL != 0) != asserted {
            self.touched.store(true, Ordering::Release);
        }
    }

    fn pulse(&self, gsi: usize) {
        if let Some(word) = self.state.get(gsi) {
            word.fetch_or(ROSE, Ordering::AcqRel);
            self.touched.store(true, Ordering::Release);
        }
    }
}

/// A device's handle on one line of a [`LineSet`].
#[derive(Clone, Copy, Debug)]
pub struct Line<'a, const N: usize> {
    set: &'a LineSet<N>,
    gsi: usize,
}

impl<const N: usize> Line<'_, N> {
    /// The global system interrupt number of this line.
    pub const fn gsi(&self) -> usize {
        self.gsi
    }
}

impl<const N: usize> InterruptLine for Line<'_, N> {
    fn set_level(&self, asserted: bool) {
        self.set.set_level(self.gsi, asserted);
    }

    fn pulse(&self) {
        self.set.pulse(self.gsi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static LINES: LineSet<4> = LineSet::new();

    #[test]
    fn touched_says_whether_any_line_changed_since_it_was_taken() {
        let set = LineSet::<4>::new();
        assert!(set.take_touched(), "a new set was never looked at");
        assert!(!set.take_touched());
        let line = set.line(1).unwrap();
        line.raise();
        assert!(set.take_touched());
        // Raising a raised line changes nothing.
        line.raise();
        assert!(!set.take_touched());
        line.lower();
        assert!(set.take_touched());
        line.lower();
        assert!(!set.take_touched());
        // A pulse leaves the level low but is an edge to deliver.
        line.pulse();
        assert!(set.take_touched());
        assert!(set.sample(1).rose);
        assert!(!set.take_touched());
    }

    #[test]
    fn pulse_is_seen_once_and_leaves_level_low() {
        let set = LineSet::<4>::new();
        let line = set.line(1).unwrap();
        line.pulse();
        assert_eq!(
            set.sample(1),
            LineSample {
                asserted: false,
                rose: true
            }
        );
        assert_eq!(set.sample(1), LineSample::default());
    }

    #[test]
    fn raise_then_lower_between_samples_is_not_lost() {
        let set = LineSet::<4>::new();
        let line = set.line(2).unwrap();
        line.raise();
        line.lower();
        let s = set.sample(2);
        assert!(s.rose && !s.asserted);
    }

    #[test]
    fn level_stays_until_lowered_and_rises_once() {
        let line = LINES.line(3).unwrap();
        line.raise();
        line.raise();
        assert_eq!(
            LINES.sample(3),
            LineSample {
                asserted: true,
                rose: true
            }
        );
        // Still high, no new edge.
        assert_eq!(
            LINES.sample(3),
            LineSample {
                asserted: true,
                rose: false
            }
        );
        line.lower();
        assert_eq!(LINES.sample(3), LineSample::default());
        assert_eq!(line.gsi(), 3);
    }

    #[test]
    fn out_of_range_lines_are_refused_or_idle() {
        let set = LineSet::<2>::new();
        assert!(set.line(2).is_none());
        assert_eq!(set.sample(99), LineSample::default());
        assert_eq!(set.len(), 2);
        assert!(LineSet::<0>::new().is_empty());
    }

    #[test]
    fn lines_are_shared_across_threads() {
        let set = std::sync::Arc::new(LineSet::<1>::new());
        let s2 = set.clone();
        std::thread::spawn(move || s2.line(0).unwrap().pulse())
            .join()
            .unwrap();
        assert!(set.peek(0).rose);
        assert!(set.sample(0).rose);
        assert!(!set.peek(0).rose);
    }
}
