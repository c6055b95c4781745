//! Validation of the input and its reduction to "units": a unit is a chain of buffers joined by honoured in-place
//! hints, all placed at one offset. Every strategy works on units with positive size.

use crate::{Buffer, HintIssue, PlanError};

/// Marks a unit that has no offset yet.
pub(crate) const UNPLACED: usize = usize::MAX;

/// Buffers sharing one offset: a chain `root <- b1 <- b2 ...` of in-place hints (sizes are non-increasing).
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// Buffer indices, root first.
    pub members: Vec<usize>,
    /// Largest member size.
    pub size: usize,
    /// Largest member alignment.
    pub align: usize,
    /// Union of the members' lifetimes.
    pub first: usize,
    pub last: usize,
}

/// Units `u` (owner of the list) and `other` are live at a common step: with `u` at `o` and `other` at `p`, either
/// `o + below <= p` or `p + above <= o`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conflict {
    pub other: usize,
    /// Bytes `u` needs below `other` (largest member of `u` live together with a member of `other`).
    pub below: usize,
    /// Bytes `other` needs below `u`.
    pub above: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Problem {
    /// Units of positive size.
    pub units: Vec<Unit>,
    /// Per unit, its conflicts, ordered by `other`.
    pub conflicts: Vec<Vec<Conflict>>,
    /// Compressed time axis: distinct first steps of positive-size buffers, ascending. The set of live buffers only
    /// grows at these steps, so maxima over steps are attained at them.
    pub times: Vec<usize>,
    /// `profile[u][t]`: bytes unit `u` occupies (from its offset up) at `times[t]`, 0 when not live.
    pub profile: Vec<Vec<usize>>,
}

/// Rounds `x` up to a multiple of the power of two `a`, saturating at the largest multiple of `a`.
pub(crate) fn round_up(x: usize, a: usize) -> usize {
    let mask = !(a - 1);
    x.checked_add(a - 1).map_or(usize::MAX & mask, |v| v & mask)
}

pub(crate) fn lifetimes_overlap(a: &Buffer, b: &Buffer) -> bool {
    a.first <= b.last && b.first <= a.last
}

/// Checks one hint `buffers[b].in_place_of == Some(a)` on its own (not against other hints).
pub(crate) fn check_hint(buffers: &[Buffer], b: usize, a: usize) -> Result<(), PlanError> {
    let Some(target) = buffers.get(a) else {
        return Err(PlanError::UnknownHintTarget { buffer: b, target: a, count: buffers.len() });
    };
    let this = &buffers[b];
    let issue = if a == b {
        Some(HintIssue::SelfReference)
    } else if target.last != this.first {
        Some(HintIssue::NotAdjacent { target_last: target.last, first: this.first })
    } else if target.first >= this.first {
        Some(HintIssue::TargetNotLiveBefore { target_first: target.first, first: this.first })
    } else if this.size > target.size {
        Some(HintIssue::TooLarge { size: this.size, target_size: target.size })
    } else {
        None
    };
    match issue {
        Some(issue) => Err(PlanError::IllegalHint { buffer: b, target: a, issue }),
        None => Ok(()),
    }
}

/// Validates every buffer and hint; returns, per buffer, the buffer that shares its bytes (if any).
pub(crate) fn validate(buffers: &[Buffer]) -> Result<Vec<Option<usize>>, PlanError> {
    let mut total: usize = 0;
    for (i, b) in buffers.iter().enumerate() {
        if !b.align.is_power_of_two() {
            return Err(PlanError::BadAlign { buffer: i, align: b.align });
        }
        if b.first > b.last {
            return Err(PlanError::BadLifetime { buffer: i, first: b.first, last: b.last });
        }
        // Every offset a strategy produces is at most the sum of sizes and worst-case paddings.
        total = total.checked_add(b.size).and_then(|t| t.checked_add(b.align - 1)).ok_or(PlanError::Overflow)?;
    }
    let mut shared_by: Vec<Option<usize>> = vec![None; buffers.len()];
    for (i, b) in buffers.iter().enumerate() {
        if let Some(a) = b.in_place_of {
            check_hint(buffers, i, a)?;
            if let Some(by) = shared_by[a] {
                return Err(PlanError::IllegalHint {
                    buffer: i,
                    target: a,
                    issue: HintIssue::TargetAlreadyShared { by },
                });
            }
            shared_by[a] = Some(i);
        }
    }
    Ok(shared_by)
}

impl Problem {
    /// Validates `buffers` and builds the units, their conflicts and profiles.
    pub(crate) fn new(buffers: &[Buffer]) -> Result<Problem, PlanError> {
        let shared_by = validate(buffers)?;
        let mut units = Vec::new();
        // Roots are buffers without a hint; following `shared_by` from a root walks its chain. Chains are acyclic
        // because first steps strictly increase along them.
        for (root, b) in buffers.iter().enumerate() {
            if b.in_place_of.is_some() {
                continue;
            }
            let mut members = vec![root];
            let mut cur = root;
            while let Some(next) = shared_by[cur] {
                members.push(next);
                cur = next;
            }
            let size = members.iter().map(|&m| buffers[m].size).max().unwrap_or(0);
            if size == 0 {
                continue; // Offset 0.
            }
            let align = members.iter().map(|&m| buffers[m].align).max().unwrap_or(1);
            let first = members.iter().map(|&m| buffers[m].first).min().unwrap_or(0);
            let last = members.iter().map(|&m| buffers[m].last).max().unwrap_or(0);
            units.push(Unit { members, size, align, first, last });
        }

        let n = units.len();
        let mut conflicts: Vec<Vec<Conflict>> = vec![Vec::new(); n];
        for u in 0..n {
            for v in u + 1..n {
                if units[u].first > units[v].last || units[v].first > units[u].last {
                    continue;
                }
                let (mut wu, mut wv) = (0, 0);
                for &g in &units[u].members {
                    for &h in &units[v].members {
                        let (bg, bh) = (&buffers[g], &buffers[h]);
                        if bg.size > 0 && bh.size > 0 && lifetimes_overlap(bg, bh) {
                            wu = wu.max(bg.size);
                            wv = wv.max(bh.size);
                        }
                    }
                }
                if wu > 0 {
                    conflicts[u].push(Conflict { other: v, below: wu, above: wv });
                    conflicts[v].push(Conflict { other: u, below: wv, above: wu });
                }
            }
        }
        for c in &mut conflicts {
            c.sort_by_key(|c| c.other);
        }

        let mut times: Vec<usize> = buffers.iter().filter(|b| b.size > 0).map(|b| b.first).collect();
        times.sort_unstable();
        times.dedup();
        let profile = units
            .iter()
            .map(|u| {
                times
                    .iter()
                    .map(|&t| {
                        u.members
                            .iter()
                            .map(|&m| &buffers[m])
                            .filter(|b| b.first <= t && t <= b.last)
                            .map(|b| b.size)
                            .max()
                            .unwrap_or(0)
                    })
                    .collect()
            })
            .collect();
        Ok(Problem { units, conflicts, times, profile })
    }
}
