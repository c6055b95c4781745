//! Constructive placements (first fit and best fit over an ordering of the units), the ordering portfolio and the
//! seeded local search over orderings.

use crate::problem::{round_up, Problem, UNPLACED};

/// Offsets per unit (of [`Problem::units`]) and the resulting arena size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Solution {
    pub offsets: Vec<usize>,
    pub end: usize,
}

/// Collects into `ivs`, sorted, the half-open offset ranges where unit `u` would overlap an already placed unit
/// that it conflicts with.
pub(crate) fn forbidden(p: &Problem, u: usize, offsets: &[usize], ivs: &mut Vec<(usize, usize)>) {
    ivs.clear();
    for c in &p.conflicts[u] {
        let q = offsets[c.other];
        if q != UNPLACED {
            // `u` at `o` is fine iff `o + below <= q` or `o >= q + above`.
            ivs.push(((q + 1).saturating_sub(c.below), q.saturating_add(c.above)));
        }
    }
    ivs.sort_unstable();
}

/// Lowest multiple of `align` that is `>= min` and outside every range of `ivs` (sorted by start).
pub(crate) fn lowest_fit(ivs: &[(usize, usize)], min: usize, align: usize) -> usize {
    let mut c = round_up(min, align);
    for &(lo, hi) in ivs {
        if hi <= c {
            continue;
        }
        if lo > c {
            break;
        }
        c = round_up(hi, align);
    }
    c
}

/// Places the units in `order`, each at the lowest aligned offset that fits (TFLite Micro's placement rule).
pub(crate) fn first_fit(p: &Problem, order: &[usize]) -> Solution {
    let mut offsets = vec![UNPLACED; p.units.len()];
    let mut end = 0;
    let mut ivs = Vec::new();
    for &u in order {
        forbidden(p, u, &offsets, &mut ivs);
        let o = lowest_fit(&ivs, 0, p.units[u].align);
        offsets[u] = o;
        end = end.max(o.saturating_add(p.units[u].size));
    }
    Solution { offsets, end }
}

/// Places the units in `order`, each at the fitting position that grows the arena least, then leaves the smallest
/// gap above it, then is lowest.
pub(crate) fn best_fit(p: &Problem, order: &[usize]) -> Solution {
    let mut offsets = vec![UNPLACED; p.units.len()];
    let mut end = 0;
    let mut ivs = Vec::new();
    for &u in order {
        forbidden(p, u, &offsets, &mut ivs);
        let (size, align) = (p.units[u].size, p.units[u].align);
        let candidates = std::iter::once(0).chain(ivs.iter().map(|iv| round_up(iv.1, align)));
        let mut best: Option<(usize, usize, usize)> = None;
        for c in candidates {
            if ivs.iter().any(|&(lo, hi)| lo <= c && c < hi) {
                continue;
            }
            let slack = ivs.iter().filter(|iv| iv.0 > c).map(|iv| iv.0 - c - 1).min().unwrap_or(usize::MAX);
            let key = (end.max(c.saturating_add(size)), slack, c);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        // Position 0 or the (aligned) top of the highest conflicting unit always fits.
        let o = best.map_or_else(|| lowest_fit(&ivs, 0, align), |b| b.2);
        offsets[u] = o;
        end = end.max(o.saturating_add(size));
    }
    Solution { offsets, end }
}

/// The order of TFLite Micro's greedy planner: size descending, ties by first use, then index.
pub(crate) fn greedy_order(p: &Problem) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.units.len()).collect();
    order.sort_by_key(|&u| (std::cmp::Reverse(p.units[u].size), p.units[u].first, u));
    order
}

/// The portfolio of orderings tried by [`crate::Strategy::BestFit`]; the first is [`greedy_order`].
pub(crate) fn orderings(p: &Problem) -> Vec<Vec<usize>> {
    let n = p.units.len();
    let units = &p.units;
    let len = |u: usize| (units[u].last - units[u].first) as u128 + 1;
    // Sum of the sizes a unit conflicts with, and the peak live bytes over its lifetime.
    let degree: Vec<u128> =
        (0..n).map(|u| p.conflicts[u].iter().map(|c| units[c.other].size as u128).sum::<u128>()).collect();
    let live: Vec<u128> = (0..p.times.len()).map(|t| (0..n).map(|u| p.profile[u][t] as u128).sum::<u128>()).collect();
    let peak: Vec<u128> = (0..n)
        .map(|u| (0..p.times.len()).filter(|&t| p.profile[u][t] > 0).map(|t| live[t]).max().unwrap_or(0))
        .collect();
    let sorted = |key: &dyn Fn(usize) -> (u128, u128, u128)| {
        let mut o: Vec<usize> = (0..n).collect();
        o.sort_by_key(|&u| (key(u), u));
        o
    };
    let size = |u: usize| units[u].size as u128;
    let first = |u: usize| units[u].first as u128;
    vec![
        greedy_order(p),
        sorted(&|u| (u128::MAX - size(u).saturating_mul(len(u)), u128::MAX - size(u), first(u))),
        sorted(&|u| (u128::MAX - len(u), u128::MAX - size(u), first(u))),
        sorted(&|u| (first(u), u128::MAX - size(u), 0)),
        sorted(&|u| (u128::MAX - degree[u], u128::MAX - size(u), first(u))),
        sorted(&|u| (u128::MAX - peak[u], u128::MAX - size(u), first(u))),
    ]
}

/// The units ordered by their offsets in `s` (ties by index). First fit in this order never does worse than `s`:
/// each unit finds its old offset free, since everything placed before it lies below it.
pub(crate) fn order_by_offsets(s: &Solution) -> Vec<usize> {
    let mut o: Vec<usize> = (0..s.offsets.len()).collect();
    o.sort_by_key(|&u| (s.offsets[u], u));
    o
}

/// xorshift64*: a small deterministic generator, so plans never depend on anything but the input.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough value in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Local search over first-fit orderings, starting from `start`: random swaps and moves, with a bias to moving a
/// unit that touches the top of the arena earlier. Moves that do not grow the arena are accepted (plateau walk).
/// Stops after `iters` evaluations or when `target` (a lower bound) is reached.
pub(crate) fn local_search(p: &Problem, start: &Solution, iters: usize, target: usize, seed: u64) -> Solution {
    let n = p.units.len();
    let mut best = start.clone();
    if n < 2 || best.end <= target {
        return best;
    }
    let mut perm = order_by_offsets(start);
    let mut cur = first_fit(p, &perm);
    if cur.end < best.end {
        best = cur.clone();
    }
    let mut rng = Rng::new(seed);
    let mut cand = perm.clone();
    for _ in 0..iters {
        if best.end <= target {
            break;
        }
        cand.clone_from(&perm);
        match rng.below(3) {
            0 => {
                let (i, j) = (rng.below(n), rng.below(n));
                cand.swap(i, j);
            }
            1 => {
                let (i, j) = (rng.below(n), rng.below(n));
                let u = cand.remove(i);
                cand.insert(j, u);
            }
            _ => {
                // A unit on top of the arena, moved to a random earlier position.
                let tops: Vec<usize> =
                    (0..n).filter(|&i| cur.offsets[perm[i]].saturating_add(p.units[perm[i]].size) == cur.end).collect();
                if let Some(&i) = tops.get(rng.below(tops.len().max(1))) {
                    let j = rng.below(i + 1);
                    let u = cand.remove(i);
                    cand.insert(j, u);
                }
            }
        }
        let s = first_fit(p, &cand);
        if s.end <= cur.end {
            std::mem::swap(&mut perm, &mut cand);
            cur = s;
            if cur.end < best.end {
                best = cur.clone();
            }
        }
    }
    best
}
