//! Property tests: any store the builder accepts reads back with the same
//! entries and shots, rows within the element type's quantisation bound,
//! and writes back unchanged; scoring ranks as a plain sort of the
//! calibrated logits.

use proptest::prelude::*;

use super::{ElementType, EntryKind, PromptStore, StoreBuilder};
use crate::score::{Decision, DecisionRule, Scorer};

/// Entries (kind, embedding) and shots (entry or new image-only class, embedding) of one dimension.
#[derive(Debug, Clone)]
struct Input {
    element: ElementType,
    dim: usize,
    entries: Vec<(EntryKind, Vec<f32>)>,
    shots: Vec<(usize, Vec<f32>)>,
    offsets: Option<Vec<f32>>,
}

fn vector(dim: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-4.0f32..4.0, dim)
        .prop_filter("not zero", |v| v.iter().map(|x| x * x).sum::<f32>() > 1e-3)
}

fn input() -> impl Strategy<Value = Input> {
    let element = prop_oneof![Just(ElementType::F32), Just(ElementType::F16), Just(ElementType::Int8)];
    (element, 1usize..24, 1usize..6).prop_flat_map(|(element, dim, n)| {
        let kind = prop_oneof![3 => Just(EntryKind::Class), 1 => Just(EntryKind::Background)];
        let entries = proptest::collection::vec((kind, vector(dim)), n);
        // Shot targets past the entries name new image-only classes.
        let shots = proptest::collection::vec((0..n + 2, vector(dim)), 0..6);
        let offsets = proptest::option::of(proptest::collection::vec(-0.5f32..0.5, n));
        (entries, shots, offsets).prop_map(move |(entries, shots, offsets)| Input {
            element,
            dim,
            entries,
            shots,
            offsets,
        })
    })
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn label(i: usize) -> String {
    format!("entry {i}")
}

/// The bytes of `input`'s store, or `None` when the shots of an image-only
/// class cancel out: the one case the builder refuses to write (the reader
/// would refuse the store), checked to say so.
fn bytes(input: &Input) -> Option<(StoreBuilder, Vec<u8>)> {
    let b = build(input);
    match b.to_bytes() {
        Ok(bytes) => Some((b, bytes)),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("refusing to write an unreadable store") && text.contains("average to zero"),
                "{text}"
            );
            None
        }
    }
}

/// The builder for `input`, without the shots at backgrounds (which it refuses).
fn build(input: &Input) -> StoreBuilder {
    let mut b = StoreBuilder::new(input.dim, [3; 32], 50.0, input.element);
    for (i, (kind, v)) in input.entries.iter().enumerate() {
        b.push(&label(i), *kind, v).expect("push");
    }
    for (t, (target, v)) in input.shots.iter().enumerate() {
        let background = input.entries.get(*target).is_some_and(|(k, _)| *k == EntryKind::Background);
        if !background {
            b.add_shot(&label(*target), v, t as u64).expect("shot");
        }
    }
    if let Some(o) = &input.offsets {
        let mut o = o.clone();
        o.resize(b.entries().len(), 0.0);
        b.set_similarity_offsets(o).expect("offsets");
    }
    b
}

/// The most a stored value may differ from the unit row's `x` whose largest magnitude is `max`.
fn bound(element: ElementType, x: f32, max: f32) -> f32 {
    match element {
        ElementType::F32 => 1e-6,
        ElementType::F16 => x.abs() * 2f32.powi(-11) + 2f32.powi(-24),
        ElementType::Int8 => max / 254.0 * (1.0 + 1e-5) + 1e-7,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn built_stores_read_back_within_the_quantisation_bound(input in input()) {
        let Some((b, bytes)) = bytes(&input) else { return Ok(()) };
        let s = PromptStore::from_bytes("p.store", &bytes).expect("reads back");
        prop_assert_eq!(s.entries(), b.entries());
        prop_assert_eq!(s.shots(), b.shots());
        for (i, (_, v)) in input.entries.iter().enumerate() {
            let want = unit(v);
            let max = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (got, x) in s.row_f32(i).iter().zip(&want) {
                prop_assert!((got - x).abs() <= bound(input.element, *x, max), "{:?} row {}: {} vs {}", input.element, i, got, x);
            }
        }
        // Writing back what was read changes nothing (int8 rows requantise to themselves within a bit).
        let again = s.to_builder().to_bytes().expect("again");
        if input.element != ElementType::Int8 {
            prop_assert_eq!(&again, &bytes);
        } else {
            let t = PromptStore::from_bytes("q.store", &again).expect("again reads");
            for i in 0..s.len() {
                for (a, b) in s.row_f32(i).iter().zip(t.row_f32(i)) {
                    prop_assert!((a - b).abs() <= 1e-6);
                }
            }
        }
    }

    #[test]
    fn top_k_is_a_stable_sort_of_the_calibrated_logits(input in input(), q in any::<u64>(), k in 1usize..10) {
        let Some((_, bytes)) = bytes(&input) else { return Ok(()) };
        let s = PromptStore::from_bytes("p.store", &bytes).expect("store");
        let query = unit(&(0..input.dim).map(|i| ((q >> (i % 60)) & 7) as f32 - 3.5).collect::<Vec<_>>());
        let rule = DecisionRule { shot_weight: 0.0, ..DecisionRule::default() };
        let c = Scorer::new().classify(&query, &s, k, &rule).expect("classify");
        let mut sims = vec![0f32; s.len()];
        s.dot_all(&query, &mut sims);
        let logits: Vec<f32> = sims.iter().enumerate().map(|(i, x)| (x + s.similarity_offset(i)) * 50.0).collect();
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let got: Vec<usize> = c.top.iter().map(|r| r.index).collect();
        prop_assert_eq!(&got[..], &order[..k.min(s.len())]);
        let denom: f32 = logits.iter().map(|l| (l - logits[order[0]]).exp()).sum();
        for r in &c.top {
            // Calibration moves logits, never the reported similarity.
            prop_assert_eq!(r.similarity, sims[r.index]);
            prop_assert!((r.score - (logits[r.index] - logits[order[0]]).exp() / denom).abs() < 1e-5);
        }
        let best = order[0];
        let expected = if s.entries()[best].kind == EntryKind::Background {
            Decision::Background(best)
        } else if c.top[0].score < rule.min_score || c.top[0].similarity < rule.min_similarity {
            Decision::Unknown
        } else {
            Decision::Match(best)
        };
        prop_assert_eq!(c.decision, expected);
    }
}
