//! Property tests over random interval instances, a brute-force optimum for small ones, and a statistics report
//! (`cargo test -p mote-plan --test prop -- --nocapture stats`).

use mote_plan::{lower_bound, plan, Buffer, MemoryPlan, Strategy as Plan};
use proptest::prelude::*;
use proptest::strategy::Strategy;

const ALIGNS: [usize; 4] = [1, 4, 8, 16];

fn round_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

fn overlap(a: &Buffer, b: &Buffer) -> bool {
    a.first <= b.last && b.first <= a.last
}

/// Smallest arena over all placements where every buffer sits at 0 or at the (aligned) end of a buffer placed before
/// it, enumerated in increasing (offset, index) order. Pushing every buffer down as far as it goes turns any plan
/// into one of these without growing it, so this is the optimum. Hint-free instances only.
fn brute_force(bufs: &[Buffer]) -> usize {
    let idx: Vec<usize> = (0..bufs.len()).filter(|&i| bufs[i].size > 0).collect();
    let mut offsets = vec![None; bufs.len()];
    let mut best = usize::MAX;
    fn rec(
        bufs: &[Buffer],
        idx: &[usize],
        offsets: &mut Vec<Option<usize>>,
        last: (usize, usize),
        end: usize,
        placed: usize,
        best: &mut usize,
    ) {
        if placed == idx.len() {
            *best = (*best).min(end);
            return;
        }
        for &i in idx {
            if offsets[i].is_some() {
                continue;
            }
            let b = &bufs[i];
            let mut corners: Vec<usize> = std::iter::once(0)
                .chain(idx.iter().filter_map(|&j| offsets[j].map(|o| round_up(o + bufs[j].size, b.align))))
                .collect();
            corners.sort_unstable();
            corners.dedup();
            for c in corners {
                if placed > 0 && (c, i) <= last {
                    continue;
                }
                let top = end.max(c + b.size);
                if top >= *best {
                    continue;
                }
                let fits = idx.iter().all(|&j| match offsets[j] {
                    Some(o) => !overlap(b, &bufs[j]) || c + b.size <= o || o + bufs[j].size <= c,
                    None => true,
                });
                if fits {
                    offsets[i] = Some(c);
                    rec(bufs, idx, offsets, (c, i), top, placed + 1, best);
                    offsets[i] = None;
                }
            }
        }
    }
    rec(bufs, &idx, &mut offsets, (0, 0), 0, 0, &mut best);
    if idx.is_empty() {
        0
    } else {
        best
    }
}

/// 96 cases per property unless `PROPTEST_CASES` says otherwise (the crate's tests stay under 10 s).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
}

fn buffer() -> impl Strategy<Value = Buffer> {
    (prop_oneof![1 => Just(0usize), 9 => 1usize..200], 0usize..4, 0usize..20, 0usize..8)
        .prop_map(|(size, a, first, len)| Buffer::new(size, ALIGNS[a], first, first + len))
}

/// Adds legal in-place hints where `mask` says so: the first buffer last read at this buffer's first step, written
/// before it and not yet shared; the buffer shrinks to fit. Buffers go by first step, so targets are final.
fn add_hints(mut bufs: Vec<Buffer>, mask: &[bool]) -> Vec<Buffer> {
    let mut taken = vec![false; bufs.len()];
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by_key(|&i| bufs[i].first);
    for b in order {
        if !mask.get(b).copied().unwrap_or(false) {
            continue;
        }
        let cand = (0..bufs.len())
            .find(|&a| a != b && !taken[a] && bufs[a].last == bufs[b].first && bufs[a].first < bufs[b].first);
        if let Some(a) = cand {
            taken[a] = true;
            bufs[b].size = bufs[b].size.min(bufs[a].size);
            bufs[b].in_place_of = Some(a);
        }
    }
    bufs
}

fn check_all(bufs: &[Buffer]) -> (MemoryPlan, MemoryPlan) {
    let greedy = plan(bufs, Plan::GreedyBySize).expect("greedy");
    let best = plan(bufs, Plan::Best).expect("best");
    let fit = plan(bufs, Plan::BestFit).expect("best fit");
    for p in [&greedy, &best, &fit] {
        p.verify(bufs).expect("plan verifies");
    }
    let lb = lower_bound(bufs);
    assert!(best.arena_bytes <= greedy.arena_bytes, "best {} > greedy {}", best.arena_bytes, greedy.arena_bytes);
    assert!(fit.arena_bytes <= greedy.arena_bytes);
    assert!(lb <= best.arena_bytes, "lower bound {lb} > best {}", best.arena_bytes);
    (greedy, best)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_instances_verify(bufs in prop::collection::vec(buffer(), 1..40)) {
        let (_, best) = check_all(&bufs);
        prop_assert_eq!(plan(&bufs, Plan::Best).expect("best"), best, "deterministic");
    }

    #[test]
    fn random_instances_with_hints_verify(
        bufs in prop::collection::vec(buffer(), 1..40),
        mask in prop::collection::vec(any::<bool>(), 40),
    ) {
        let bufs = add_hints(bufs, &mask);
        let (_, best) = check_all(&bufs);
        for (b, o) in bufs.iter().zip(&best.offsets) {
            prop_assert_eq!(o.in_place_of, b.in_place_of);
            if let Some(a) = b.in_place_of {
                prop_assert_eq!(o.offset, best.offsets[a].offset);
            }
        }
    }

    #[test]
    fn exact_matches_brute_force(bufs in prop::collection::vec(buffer(), 1..=8)) {
        let opt = brute_force(&bufs);
        let exact = plan(&bufs, Plan::Exact).expect("exact");
        exact.verify(&bufs).expect("exact verifies");
        prop_assert!(exact.optimal);
        prop_assert_eq!(exact.arena_bytes, opt);
        let (_, best) = check_all(&bufs);
        prop_assert_eq!(best.arena_bytes, opt);
        prop_assert!(best.optimal);
    }
}

/// Deterministic instance generator for the report (xorshift64).
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn instance(&mut self, n: usize) -> Vec<Buffer> {
        (0..n)
            .map(|_| {
                let size = if self.below(10) == 0 { 0 } else { 1 + self.below(199) };
                let first = self.below(20);
                Buffer::new(size, ALIGNS[self.below(4)], first, first + self.below(8))
            })
            .collect()
    }
}

#[derive(Default)]
struct Band {
    count: usize,
    better: usize,
    optimal: usize,
    gap_greedy: f64,
    gap_best: f64,
    saved: f64,
}

impl Band {
    fn report(&self, name: &str) {
        let c = self.count.max(1) as f64;
        println!(
            "{name}: {} instances; best < greedy on {} ({:.1}%); best proven optimal on {}; mean gap to lower bound: \
             greedy {:.2}%, best {:.2}%; mean saving of best vs greedy {:.2}%",
            self.count,
            self.better,
            100.0 * self.better as f64 / c,
            self.optimal,
            100.0 * self.gap_greedy / c,
            100.0 * self.gap_best / c,
            100.0 * self.saved / c
        );
    }
}

/// Prints how `Best` compares with greedy and the lower bound on 300 random instances (run with --nocapture).
#[test]
fn stats_best_vs_greedy() {
    let mut g = Gen(0x5EED_1234_ABCD_0001);
    let mut bands = [Band::default(), Band::default(), Band::default()];
    for _ in 0..300 {
        let n = 1 + g.below(39);
        let bufs = g.instance(n);
        let lb = lower_bound(&bufs);
        if lb == 0 {
            continue;
        }
        let (greedy, best) = check_all(&bufs);
        for k in [0, if n <= 12 { 1 } else { 2 }] {
            let band = &mut bands[k];
            band.count += 1;
            band.better += usize::from(best.arena_bytes < greedy.arena_bytes);
            band.optimal += usize::from(best.optimal);
            band.gap_best += (best.arena_bytes - lb) as f64 / lb as f64;
            band.gap_greedy += (greedy.arena_bytes - lb) as f64 / lb as f64;
            band.saved += (greedy.arena_bytes - best.arena_bytes) as f64 / greedy.arena_bytes as f64;
        }
    }
    bands[0].report("all (1..40 buffers)");
    bands[1].report("1..=12 buffers");
    bands[2].report("13..40 buffers");
}
