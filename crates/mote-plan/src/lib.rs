//! Static arena memory planner: gives every intermediate buffer of a schedule a byte offset in one arena.
//!
//! **Lifetimes.** Steps number the scheduled ops. A [`Buffer`] is written at step `first` and last read at step
//! `last` (inclusive). Two buffers whose lifetimes share a step must not share bytes; all others may.
//!
//! **Alignment.** Each offset is a multiple of the buffer's `align` (a power of two). Sizes are not padded: the
//! arena ends at the largest `offset + size`.
//!
//! **In place.** `in_place_of: Some(a)` says the op writing the buffer at its `first` step is elementwise and may
//! overwrite buffer `a` (a residual Add over its input, a requant over its input). It is legal when `a` is written
//! before and last read exactly at that step, and the buffer is no larger than `a`; legal hints are always
//! honoured (the buffer gets `a`'s offset), illegal ones are an error. Chains `a <- b <- c` share one offset.
//!
//! **Strategies** ([`Strategy`]):
//! - `GreedyBySize`: TFLite Micro's `GreedyMemoryPlanner`: by size descending, each at the lowest aligned offset
//!   free of every lifetime-overlapping buffer placed so far.
//! - `BestFit`: first fit and best fit over several orderings (size, size × lifetime, lifetime, first use, conflict
//!   degree, peak pressure), then a seeded local search over first-fit orderings; keeps the best.
//! - `Exact`: branch and bound over first-fit orderings (complete: some ordering yields an optimum), seeded with the
//!   greedy plan, within a budget of [`EXACT_BUDGET`] candidate placements; proves optimality when it finishes.
//! - `Best`: greedy, then `BestFit`, then `Exact` when at most [`EXACT_MAX_UNITS`] units (buffers after merging
//!   in-place chains) remain; stops as soon as a plan meets the lower bound. Never worse than greedy (greedy's own
//!   plan is returned when nothing beats it).
//!
//! All strategies are deterministic.
//!
//! **Lower bound** ([`lower_bound`]): the maximum over steps of the bytes live at that step, counting an honoured
//! in-place pair once (at the hand-over step the smaller buffer lies inside the larger one). Alignment tightens it a
//! little: at a step where the smallest live alignment is `m`, every live buffer but the topmost occupies at least
//! its size rounded up to `m`. No plan can be smaller, so `lower_bound <= arena_bytes` always; equality proves a
//! plan optimal.
//!
//! ```
//! use mote_plan::{plan, lower_bound, Buffer, Strategy};
//! // x -> y -> z, each read only by the next op: x and z can share bytes.
//! let bufs = [Buffer::new(64, 16, 0, 1), Buffer::new(32, 16, 1, 2), Buffer::new(64, 16, 2, 3)];
//! let p = plan(&bufs, Strategy::Best).unwrap();
//! assert_eq!((p.offset(0), p.offset(1), p.offset(2)), (0, 64, 0));
//! assert_eq!((p.arena_bytes, lower_bound(&bufs)), (96, 96));
//! p.verify(&bufs).unwrap();
//! ```

mod exact;
mod heuristic;
mod problem;
#[cfg(test)]
mod tests;

use std::fmt;

use heuristic::{first_fit, greedy_order, Solution};
use problem::{check_hint, lifetimes_overlap, round_up, validate, Problem};

/// Strategy [`Strategy::Best`] runs the exact search only up to this many units (buffers after merging in-place
/// chains, zero-size ones excluded).
pub const EXACT_MAX_UNITS: usize = 12;

/// Budget of the exact search, in candidate placements evaluated.
pub const EXACT_BUDGET: u64 = 400_000;

/// Evaluations of the local search per unit (capped by [`LOCAL_SEARCH_MAX`]).
const LOCAL_SEARCH_PER_UNIT: usize = 60;
const LOCAL_SEARCH_MAX: usize = 2_000;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A buffer to place: `size` bytes at a multiple of `align`, live from step `first` to step `last` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buffer {
    /// Bytes (0 is allowed and gets offset 0).
    pub size: usize,
    /// Required alignment of the offset; a power of two.
    pub align: usize,
    /// Step that writes the buffer.
    pub first: usize,
    /// Last step that reads it (`>= first`).
    pub last: usize,
    /// In-place hint: this buffer may take the bytes of buffer `a` (see the crate docs for when that is legal).
    pub in_place_of: Option<usize>,
}

impl Buffer {
    /// A buffer without in-place hint.
    pub fn new(size: usize, align: usize, first: usize, last: usize) -> Buffer {
        Buffer { size, align, first, last, in_place_of: None }
    }

    /// The same buffer with the hint "may share the bytes of buffer `target`".
    pub fn sharing(self, target: usize) -> Buffer {
        Buffer { in_place_of: Some(target), ..self }
    }
}

/// Where one buffer lives in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArenaOffset {
    /// Byte offset from the start of the arena.
    pub offset: usize,
    /// `Some(a)` when the buffer's in-place hint is honoured: it sits at buffer `a`'s offset.
    pub in_place_of: Option<usize>,
}

/// Placement strategy; see the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// TFLite Micro's greedy-by-size first fit.
    GreedyBySize,
    /// Ordering portfolio with first/best fit, then local search.
    BestFit,
    /// Branch and bound (budgeted), seeded with the greedy plan.
    Exact,
    /// The best of the above; never worse than `GreedyBySize`.
    Best,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::GreedyBySize => "greedy-by-size",
            Strategy::BestFit => "best-fit",
            Strategy::Exact => "exact",
            Strategy::Best => "best",
        })
    }
}

/// Offsets for every buffer, in input order, and the arena size they need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemoryPlan {
    /// One entry per input buffer.
    pub offsets: Vec<ArenaOffset>,
    /// Largest `offset + size` (0 when there are no bytes to place).
    pub arena_bytes: usize,
    /// The strategy that produced these offsets (for [`Strategy::Best`], the one that won).
    pub strategy: Strategy,
    /// Proven optimal: the exact search finished, or the arena meets [`lower_bound`].
    pub optimal: bool,
}

/// Why an in-place hint "buffer may share the bytes of target" is illegal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HintIssue {
    /// The hint names the buffer itself.
    #[error("a buffer cannot share its own bytes")]
    SelfReference,
    /// The target's last use is not the step that writes the buffer.
    #[error("the target is last read at step {target_last}, not at step {first} that writes this buffer")]
    NotAdjacent { target_last: usize, first: usize },
    /// The target is not written before the step that writes the buffer.
    #[error("the target is written at step {target_first}, not before step {first} that writes this buffer")]
    TargetNotLiveBefore { target_first: usize, first: usize },
    /// The buffer is larger than the target.
    #[error("{size} bytes do not fit in the target's {target_size}")]
    TooLarge { size: usize, target_size: usize },
    /// Another buffer already shares the target's bytes.
    #[error("buffer {by} already shares the target's bytes")]
    TargetAlreadyShared { by: usize },
}

/// Errors of [`plan`] and [`MemoryPlan::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PlanError {
    /// An alignment is not a power of two (0 included).
    #[error("buffer {buffer}: alignment {align} is not a power of two")]
    BadAlign { buffer: usize, align: usize },
    /// `first > last`.
    #[error("buffer {buffer}: first step {first} is after last step {last}")]
    BadLifetime { buffer: usize, first: usize, last: usize },
    /// An in-place hint names a buffer that does not exist.
    #[error("buffer {buffer}: in-place hint names buffer {target}, but there are {count} buffers")]
    UnknownHintTarget { buffer: usize, target: usize, count: usize },
    /// An in-place hint is illegal.
    #[error("buffer {buffer} cannot share the bytes of buffer {target}: {issue}")]
    IllegalHint { buffer: usize, target: usize, issue: HintIssue },
    /// Sizes, alignments or offsets do not fit in `usize`.
    #[error("the arena would not fit in usize")]
    Overflow,
    /// Verification: the plan has a different number of entries than there are buffers.
    #[error("the plan has {offsets} offsets for {buffers} buffers")]
    LengthMismatch { offsets: usize, buffers: usize },
    /// Verification: an offset is not a multiple of its buffer's alignment.
    #[error("buffer {buffer}: offset {offset} is not a multiple of {align}")]
    Misaligned { buffer: usize, offset: usize, align: usize },
    /// Verification: two buffers live at a common step share bytes without an honoured in-place hint.
    #[error("buffers {a} and {b} are live at a common step and overlap in bytes")]
    Overlap { a: usize, b: usize },
    /// Verification: the plan claims in-place sharing the buffer does not ask for.
    #[error("buffer {buffer}: the plan shares buffer {target}'s bytes without such a hint")]
    UnrequestedSharing { buffer: usize, target: usize },
    /// Verification: an honoured in-place pair is not at one offset.
    #[error("buffer {buffer}: shares buffer {target}'s bytes but is not at its offset")]
    SharingMisplaced { buffer: usize, target: usize },
    /// Verification: `arena_bytes` is not the largest `offset + size`.
    #[error("the plan claims {claimed} arena bytes but the buffers end at {actual}")]
    ArenaMismatch { claimed: usize, actual: usize },
}

/// Places `buffers` in one arena with `strategy`. Fails on malformed buffers or illegal in-place hints.
pub fn plan(buffers: &[Buffer], strategy: Strategy) -> Result<MemoryPlan, PlanError> {
    let p = Problem::new(buffers)?;
    let lb = lower_bound(buffers);
    let greedy = first_fit(&p, &greedy_order(&p));
    let (solution, used, optimal) = match strategy {
        Strategy::GreedyBySize => {
            let optimal = greedy.end <= lb;
            (greedy, Strategy::GreedyBySize, optimal)
        }
        Strategy::BestFit => {
            let (s, used) = improve(&p, greedy, lb);
            let optimal = s.end <= lb;
            (s, used, optimal)
        }
        Strategy::Exact => {
            let out = exact::branch_and_bound(&p, &greedy, lb, EXACT_BUDGET);
            (out.best, Strategy::Exact, out.optimal)
        }
        Strategy::Best => {
            let (mut s, mut used) = improve(&p, greedy, lb);
            let mut optimal = s.end <= lb;
            if !optimal && p.units.len() <= EXACT_MAX_UNITS {
                let out = exact::branch_and_bound(&p, &s, lb, EXACT_BUDGET);
                optimal = out.optimal;
                if out.improved {
                    (s, used) = (out.best, Strategy::Exact);
                }
            }
            (s, used, optimal)
        }
    };
    Ok(assemble(buffers, &p, &solution, used, optimal))
}

/// The `BestFit` search starting from the greedy solution; returns greedy's own solution unless strictly beaten.
fn improve(p: &Problem, greedy: Solution, lb: usize) -> (Solution, Strategy) {
    if greedy.end <= lb {
        return (greedy, Strategy::GreedyBySize);
    }
    let mut best = greedy.clone();
    'orders: for order in heuristic::orderings(p) {
        for s in [first_fit(p, &order), heuristic::best_fit(p, &order)] {
            if s.end < best.end {
                best = s;
                if best.end <= lb {
                    break 'orders;
                }
            }
        }
    }
    let iters = (LOCAL_SEARCH_PER_UNIT * p.units.len()).min(LOCAL_SEARCH_MAX);
    let best = heuristic::local_search(p, &best, iters, lb, SEED);
    if best.end < greedy.end {
        (best, Strategy::BestFit)
    } else {
        (greedy, Strategy::GreedyBySize)
    }
}

fn assemble(buffers: &[Buffer], p: &Problem, s: &Solution, strategy: Strategy, optimal: bool) -> MemoryPlan {
    let mut offsets: Vec<ArenaOffset> =
        buffers.iter().map(|b| ArenaOffset { offset: 0, in_place_of: b.in_place_of }).collect();
    for (unit, &o) in p.units.iter().zip(&s.offsets) {
        for &m in &unit.members {
            offsets[m].offset = o;
        }
    }
    let arena_bytes = buffers.iter().zip(&offsets).map(|(b, o)| o.offset.saturating_add(b.size)).max().unwrap_or(0);
    MemoryPlan { offsets, arena_bytes, strategy, optimal }
}

/// Maximum over steps of the bytes live at that step: an honoured in-place pair counts once, and at each step every
/// live buffer but the topmost is rounded up to the smallest alignment live there. Saturates instead of overflowing.
pub fn lower_bound(buffers: &[Buffer]) -> usize {
    // `b` lies inside its hint target at the hand-over step `b.first` (only if the hint is legal on its own).
    let inside: Vec<bool> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| b.in_place_of.is_some_and(|a| check_hint(buffers, i, a).is_ok()))
        .collect();
    let mut times: Vec<usize> = buffers.iter().filter(|b| b.size > 0).map(|b| b.first).collect();
    times.sort_unstable();
    times.dedup();
    let mut bound = 0;
    let mut live: Vec<(usize, usize)> = Vec::new();
    for &t in &times {
        live.clear();
        for (b, &inside) in buffers.iter().zip(&inside) {
            if b.size > 0 && b.first <= t && t <= b.last && !(inside && b.first == t) {
                live.push((b.size, b.align));
            }
        }
        let m = live.iter().map(|&(_, a)| a).filter(|a| a.is_power_of_two()).min().unwrap_or(1);
        let (mut sum, mut pad) = (0usize, 0usize);
        for &(s, _) in &live {
            let r = round_up(s, m);
            sum = sum.saturating_add(r);
            pad = pad.max(r - s);
        }
        bound = bound.max(sum - pad.min(sum));
    }
    bound
}

impl MemoryPlan {
    /// Offset of buffer `i` (panics when out of range, like indexing).
    pub fn offset(&self, i: usize) -> usize {
        self.offsets[i].offset
    }

    /// Re-checks the plan against `buffers`: valid buffers and hints, aligned offsets, honoured in-place pairs at one
    /// offset, no byte overlap between buffers live at a common step (except honoured pairs), and `arena_bytes`.
    pub fn verify(&self, buffers: &[Buffer]) -> Result<(), PlanError> {
        if self.offsets.len() != buffers.len() {
            return Err(PlanError::LengthMismatch { offsets: self.offsets.len(), buffers: buffers.len() });
        }
        validate(buffers)?;
        let mut end = 0;
        for (i, (b, o)) in buffers.iter().zip(&self.offsets).enumerate() {
            if o.offset % b.align != 0 {
                return Err(PlanError::Misaligned { buffer: i, offset: o.offset, align: b.align });
            }
            end = end.max(o.offset.checked_add(b.size).ok_or(PlanError::Overflow)?);
            if let Some(a) = o.in_place_of {
                if b.in_place_of != Some(a) {
                    return Err(PlanError::UnrequestedSharing { buffer: i, target: a });
                }
                if self.offsets[a].offset != o.offset {
                    return Err(PlanError::SharingMisplaced { buffer: i, target: a });
                }
            }
        }
        if end != self.arena_bytes {
            return Err(PlanError::ArenaMismatch { claimed: self.arena_bytes, actual: end });
        }
        let mut order: Vec<usize> = (0..buffers.len()).filter(|&i| buffers[i].size > 0).collect();
        order.sort_by_key(|&i| (buffers[i].first, i));
        for (k, &i) in order.iter().enumerate() {
            for &j in &order[k + 1..] {
                let (bi, bj) = (&buffers[i], &buffers[j]);
                if bj.first > bi.last {
                    break;
                }
                if !lifetimes_overlap(bi, bj) {
                    continue;
                }
                let (oi, oj) = (&self.offsets[i], &self.offsets[j]);
                // Ends cannot overflow: checked above.
                let bytes_overlap = oi.offset < oj.offset + bj.size && oj.offset < oi.offset + bi.size;
                let honoured = oi.in_place_of == Some(j) || oj.in_place_of == Some(i);
                if bytes_overlap && !honoured {
                    return Err(PlanError::Overlap { a: i.min(j), b: i.max(j) });
                }
            }
        }
        Ok(())
    }
}
