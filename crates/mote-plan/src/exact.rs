//! Exact branch-and-bound over first-fit orderings.
//!
//! Completeness: take an optimal solution and place its units by first fit in the order of their offsets; every
//! unit finds its old offset free (all units placed before it lie below it), so no offset grows. Repeating this
//! reaches a fixpoint that is optimal and is reproduced by first fit in an order where `(offset, index)` strictly
//! increases. The search therefore only enumerates such monotone orders: a child is the lowest fit of an unplaced
//! unit at or above the last offset. Bounds: the current top; every unplaced unit's lowest fit above the last
//! offset; and at every step, the last offset plus all bytes that must lie above it (unplaced units live at that
//! step and the parts of placed ones reaching above it).

use crate::heuristic::{forbidden, lowest_fit, Solution};
use crate::problem::{Problem, UNPLACED};

/// Outcome of [`branch_and_bound`].
pub(crate) struct Outcome {
    /// Best solution seen (the incumbent when nothing better was found).
    pub best: Solution,
    /// Whether the search found a solution strictly better than the incumbent.
    pub improved: bool,
    /// Whether `best` is proven optimal (the search finished within its budget or reached `lower_bound`).
    pub optimal: bool,
}

struct Search<'a> {
    p: &'a Problem,
    offsets: Vec<usize>,
    best: Solution,
    improved: bool,
    lower_bound: usize,
    work: u64,
    budget: u64,
    aborted: bool,
    ivs: Vec<(usize, usize)>,
}

/// Searches for a solution better than `incumbent`. `budget` bounds the number of candidate placements evaluated.
pub(crate) fn branch_and_bound(p: &Problem, incumbent: &Solution, lower_bound: usize, budget: u64) -> Outcome {
    let mut s = Search {
        p,
        offsets: vec![UNPLACED; p.units.len()],
        best: incumbent.clone(),
        improved: false,
        lower_bound,
        work: 0,
        budget,
        aborted: false,
        ivs: Vec::new(),
    };
    if s.best.end > lower_bound {
        s.dfs(None, 0, 0);
    }
    let optimal = !s.aborted || s.best.end <= lower_bound;
    Outcome { best: s.best, improved: s.improved, optimal }
}

impl Search<'_> {
    fn dfs(&mut self, last: Option<(usize, usize)>, end: usize, placed: usize) {
        let p = self.p;
        let n = p.units.len();
        if placed == n {
            if end < self.best.end {
                self.best = Solution { offsets: self.offsets.clone(), end };
                self.improved = true;
            }
            return;
        }
        let last_off = last.map_or(0, |l| l.0);
        let mut bound = end;
        let mut kids: Vec<(usize, usize, usize)> = Vec::with_capacity(n - placed);
        for k in 0..n {
            if self.offsets[k] != UNPLACED {
                continue;
            }
            self.work += 1;
            let unit = &p.units[k];
            forbidden(p, k, &self.offsets, &mut self.ivs);
            let mut o = lowest_fit(&self.ivs, last_off, unit.align);
            if let Some((lo, lu)) = last {
                if o == lo && k < lu {
                    o = lowest_fit(&self.ivs, lo.saturating_add(1), unit.align);
                }
            }
            let top = o.saturating_add(unit.size);
            bound = bound.max(top);
            kids.push((end.max(top), o, k));
        }
        if self.work > self.budget {
            self.aborted = true;
            return;
        }
        for t in 0..p.times.len() {
            let mut above = last_off;
            for (u, &q) in self.offsets.iter().enumerate() {
                let b = p.profile[u][t];
                if q == UNPLACED {
                    above = above.saturating_add(b);
                } else {
                    above = above.saturating_add(q.saturating_add(b).saturating_sub(last_off));
                }
            }
            bound = bound.max(above);
        }
        if bound >= self.best.end {
            return;
        }
        kids.sort_unstable();
        for (child_end, o, k) in kids {
            if child_end >= self.best.end {
                break;
            }
            self.offsets[k] = o;
            self.dfs(Some((o, k)), child_end, placed + 1);
            self.offsets[k] = UNPLACED;
            if self.aborted || self.best.end <= self.lower_bound {
                return;
            }
        }
    }
}
