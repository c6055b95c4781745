use crate::*;

fn offsets(p: &MemoryPlan) -> Vec<usize> {
    p.offsets.iter().map(|o| o.offset).collect()
}

fn plan_ok(bufs: &[Buffer], s: Strategy) -> MemoryPlan {
    let p = plan(bufs, s).expect("plan");
    p.verify(bufs).expect("verify");
    p
}

const ALL: [Strategy; 4] = [Strategy::GreedyBySize, Strategy::BestFit, Strategy::Exact, Strategy::Best];

#[test]
fn chain_reuses_memory() {
    // A -> B -> C: C can reuse A's bytes.
    let bufs = [Buffer::new(100, 4, 0, 1), Buffer::new(100, 4, 1, 2), Buffer::new(100, 4, 2, 3)];
    for s in ALL {
        let p = plan_ok(&bufs, s);
        assert_eq!(offsets(&p), [0, 100, 0], "{s}");
        assert_eq!(p.arena_bytes, 200);
        assert!(p.optimal);
    }
    assert_eq!(lower_bound(&bufs), 200);
}

#[test]
fn chain_in_place() {
    // Elementwise chain A -> B -> C, each writing over its input: one buffer's worth of bytes.
    let bufs = [Buffer::new(100, 4, 0, 1), Buffer::new(100, 4, 1, 2).sharing(0), Buffer::new(60, 4, 2, 3).sharing(1)];
    assert_eq!(lower_bound(&bufs), 100);
    for s in ALL {
        let p = plan_ok(&bufs, s);
        assert_eq!(offsets(&p), [0, 0, 0]);
        assert_eq!(p.arena_bytes, 100);
        assert_eq!(p.offsets[1].in_place_of, Some(0));
        assert_eq!(p.offsets[2].in_place_of, Some(1));
        assert_eq!(p.offsets[0].in_place_of, None);
    }
}

#[test]
fn residual_add_in_place() {
    // x (read at steps 1 and 2), y = f(x) at step 1, z = x + y at step 2 written over x.
    let bufs = [Buffer::new(64, 16, 0, 2), Buffer::new(64, 16, 1, 2), Buffer::new(64, 16, 2, 3).sharing(0)];
    let p = plan_ok(&bufs, Strategy::Best);
    assert_eq!(offsets(&p), [0, 64, 0]);
    assert_eq!((p.arena_bytes, lower_bound(&bufs)), (128, 128));
    // Without the hint all three are live at step 2.
    let plain: Vec<Buffer> = bufs.iter().map(|b| Buffer { in_place_of: None, ..*b }).collect();
    assert_eq!(plan_ok(&plain, Strategy::Best).arena_bytes, 192);
    assert_eq!(lower_bound(&plain), 192);
}

#[test]
fn in_place_group_takes_the_larger_alignment() {
    let bufs = [Buffer::new(8, 1, 0, 0), Buffer::new(10, 1, 0, 1), Buffer::new(4, 16, 1, 2).sharing(1)];
    for s in ALL {
        let p = plan_ok(&bufs, s);
        assert_eq!(p.offset(1) % 16, 0, "{s}");
        assert_eq!(p.offset(1), p.offset(2));
    }
}

/// Greedy-by-size puts the two 64-byte buffers at 0, which splits the arena so that the 48/32/16-byte buffers
/// must stack above them: 160 bytes. The optimum (the lower bound, 112) puts the 48-byte one at 0 instead.
#[test]
fn greedy_by_size_is_suboptimal_here() {
    let bufs = [
        Buffer::new(48, 16, 0, 1),
        Buffer::new(32, 16, 1, 2),
        Buffer::new(16, 16, 1, 2),
        Buffer::new(64, 16, 0, 0),
        Buffer::new(64, 16, 2, 2),
    ];
    let greedy = plan_ok(&bufs, Strategy::GreedyBySize);
    assert_eq!(offsets(&greedy), [64, 112, 144, 0, 0]);
    assert_eq!((greedy.arena_bytes, greedy.strategy, greedy.optimal), (160, Strategy::GreedyBySize, false));

    let best = plan_ok(&bufs, Strategy::Best);
    assert_eq!(offsets(&best), [0, 64, 96, 48, 0]);
    assert_eq!((best.arena_bytes, best.strategy, best.optimal), (112, Strategy::BestFit, true));

    let exact = plan_ok(&bufs, Strategy::Exact);
    assert_eq!((exact.arena_bytes, exact.strategy, exact.optimal), (112, Strategy::Exact, true));
    assert_eq!(lower_bound(&bufs), 112);
}

#[test]
fn alignment_makes_greedy_pad() {
    // Greedy puts the 5-byte buffer first and pads the 4-aligned one to offset 8; the other order needs 8 bytes.
    let bufs = [Buffer::new(5, 1, 0, 0), Buffer::new(3, 4, 0, 0)];
    let greedy = plan_ok(&bufs, Strategy::GreedyBySize);
    assert_eq!((offsets(&greedy), greedy.arena_bytes), (vec![0, 8], 11));
    let best = plan_ok(&bufs, Strategy::Best);
    assert_eq!((offsets(&best), best.arena_bytes, best.optimal), (vec![3, 0], 8, true));
    assert_eq!(lower_bound(&bufs), 8);
}

#[test]
fn lower_bound_rounds_all_but_the_top_buffer() {
    let bufs = [Buffer::new(5, 4, 0, 0), Buffer::new(5, 4, 0, 0)];
    assert_eq!(lower_bound(&bufs), 13);
    let p = plan_ok(&bufs, Strategy::Best);
    assert_eq!((offsets(&p), p.arena_bytes, p.optimal), (vec![0, 8], 13, true));
}

#[test]
fn zero_sizes_and_empty_input() {
    let empty = plan_ok(&[], Strategy::Best);
    assert_eq!((empty.offsets.len(), empty.arena_bytes, empty.optimal), (0, 0, true));
    assert_eq!(lower_bound(&[]), 0);

    let bufs = [Buffer::new(0, 8, 0, 5), Buffer::new(24, 8, 1, 2), Buffer::new(0, 1, 2, 2), Buffer::new(8, 8, 2, 3)];
    for s in ALL {
        let p = plan_ok(&bufs, s);
        assert_eq!(offsets(&p), [0, 0, 0, 24], "{s}");
        assert_eq!(p.arena_bytes, 32);
    }
}

#[test]
fn sparse_step_numbers() {
    let big = usize::MAX - 1;
    let bufs = [Buffer::new(10, 1, 0, big), Buffer::new(20, 1, big, big + 1), Buffer::new(30, 1, 7, 7)];
    let p = plan_ok(&bufs, Strategy::Best);
    assert_eq!((p.arena_bytes, lower_bound(&bufs)), (40, 40));
}

#[test]
fn deterministic() {
    let bufs: Vec<Buffer> =
        (0..30).map(|i| Buffer::new(1 + (i * 37) % 101, [1, 4, 8, 16][i % 4], i % 7, i % 7 + (i * 5) % 6)).collect();
    let a = plan_ok(&bufs, Strategy::Best);
    let b = plan_ok(&bufs, Strategy::Best);
    assert_eq!(a, b);
    assert!(a.arena_bytes <= plan_ok(&bufs, Strategy::GreedyBySize).arena_bytes);
    assert!(lower_bound(&bufs) <= a.arena_bytes);
}

#[test]
fn input_errors() {
    let e = |bufs: &[Buffer]| plan(bufs, Strategy::Best).expect_err("must fail");
    assert_eq!(e(&[Buffer::new(4, 3, 0, 0)]), PlanError::BadAlign { buffer: 0, align: 3 });
    assert_eq!(e(&[Buffer::new(4, 0, 0, 0)]), PlanError::BadAlign { buffer: 0, align: 0 });
    assert_eq!(e(&[Buffer::new(4, 1, 3, 2)]), PlanError::BadLifetime { buffer: 0, first: 3, last: 2 });
    assert_eq!(e(&[Buffer::new(usize::MAX, 2, 0, 0)]), PlanError::Overflow);
    assert_eq!(
        e(&[Buffer::new(usize::MAX / 2 + 1, 1, 0, 0), Buffer::new(usize::MAX / 2 + 1, 1, 1, 1)]),
        PlanError::Overflow
    );

    let a = Buffer::new(16, 4, 0, 1);
    assert_eq!(
        e(&[a, Buffer::new(8, 4, 1, 2).sharing(5)]),
        PlanError::UnknownHintTarget { buffer: 1, target: 5, count: 2 }
    );
    let illegal = |bufs: &[Buffer], issue: HintIssue| {
        assert_eq!(e(bufs), PlanError::IllegalHint { buffer: 1, target: 0, issue });
    };
    illegal(&[a, Buffer::new(8, 4, 2, 3).sharing(0)], HintIssue::NotAdjacent { target_last: 1, first: 2 });
    illegal(&[a, Buffer::new(32, 4, 1, 2).sharing(0)], HintIssue::TooLarge { size: 32, target_size: 16 });
    illegal(
        &[Buffer::new(16, 4, 1, 1), Buffer::new(8, 4, 1, 2).sharing(0)],
        HintIssue::TargetNotLiveBefore { target_first: 1, first: 1 },
    );
    assert_eq!(
        e(&[a, Buffer::new(8, 4, 1, 2).sharing(1)]),
        PlanError::IllegalHint { buffer: 1, target: 1, issue: HintIssue::SelfReference }
    );
    assert_eq!(
        e(&[a, Buffer::new(8, 4, 1, 2).sharing(0), Buffer::new(8, 4, 1, 3).sharing(0)]),
        PlanError::IllegalHint { buffer: 2, target: 0, issue: HintIssue::TargetAlreadyShared { by: 1 } }
    );
    assert_eq!(
        e(&[a, Buffer::new(32, 4, 1, 2).sharing(0)]).to_string(),
        "buffer 1 cannot share the bytes of buffer 0: 32 bytes do not fit in the target's 16"
    );
}

#[test]
fn verify_rejects_broken_plans() {
    let bufs = [Buffer::new(16, 8, 0, 1), Buffer::new(16, 8, 1, 2), Buffer::new(8, 8, 2, 3).sharing(1)];
    let good = plan_ok(&bufs, Strategy::Best);
    assert_eq!(offsets(&good), [0, 16, 16]);

    let mut p = good.clone();
    p.offsets[1].offset = 8;
    p.offsets[2].offset = 8;
    p.arena_bytes = 24;
    assert_eq!(p.verify(&bufs), Err(PlanError::Overlap { a: 0, b: 1 }));

    let mut p = good.clone();
    p.offsets[0].offset = 4;
    assert_eq!(p.verify(&bufs), Err(PlanError::Misaligned { buffer: 0, offset: 4, align: 8 }));

    let mut p = good.clone();
    p.arena_bytes = 40;
    assert_eq!(p.verify(&bufs), Err(PlanError::ArenaMismatch { claimed: 40, actual: 32 }));

    let mut p = good.clone();
    p.offsets[2].offset = 0;
    assert_eq!(p.verify(&bufs), Err(PlanError::SharingMisplaced { buffer: 2, target: 1 }));

    let mut p = good.clone();
    p.offsets[1].in_place_of = Some(0);
    assert_eq!(p.verify(&bufs), Err(PlanError::UnrequestedSharing { buffer: 1, target: 0 }));

    // Not honouring a hint is fine as long as nothing overlaps.
    let mut p = good.clone();
    p.offsets[2] = ArenaOffset { offset: 0, in_place_of: None };
    assert_eq!(p.verify(&bufs), Ok(()));
    // ... but then the pair may not overlap.
    p.offsets[2].offset = 16;
    assert_eq!(p.verify(&bufs), Err(PlanError::Overlap { a: 1, b: 2 }));

    let mut p = good;
    p.offsets.pop();
    assert_eq!(p.verify(&bufs), Err(PlanError::LengthMismatch { offsets: 2, buffers: 3 }));
}
