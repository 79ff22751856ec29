//! Scoring: cosine similarity against the store, logit scale, the few-shot
//! cache, softmax, top-k without heap allocation, and the open-set decision.
//!
//! Few-shot (in the spirit of Tip-Adapter): each stored shot `k` of class `c`
//! adds `shot_weight * exp(-shot_sharpness * (1 - cos(frame, k)))` to the
//! logit `logit_scale * (cos(frame, text_c) + offset_c)` of its class, where
//! `offset_c` is the store's seen/unseen calibration offset (0 without one).
//! With no shots the logits, and so the result, are exactly the zero-shot ones.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{EntryKind, PromptStore};

/// The most entries a [`Classification`] can rank.
pub const MAX_TOP: usize = 16;

/// Rules that turn scores into a decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DecisionRule {
    /// Minimum softmax probability of the winner for a match; below it the frame is `unknown`.
    pub min_score: f32,
    /// Minimum cosine similarity of the winner for a match; below it the frame is `unknown`.
    pub min_similarity: f32,
    /// Weight of the few-shot cache against the text logits (0 turns shots off).
    pub shot_weight: f32,
    /// Sharpness of the shot affinity: higher values let only very close shots count.
    pub shot_sharpness: f32,
}

/// Default [`DecisionRule::shot_weight`], chosen on seen concepts of the default model (`docs/fewshot.md`).
pub const DEFAULT_SHOT_WEIGHT: f32 = 4.0;
/// Default [`DecisionRule::shot_sharpness`], chosen with [`DEFAULT_SHOT_WEIGHT`].
pub const DEFAULT_SHOT_SHARPNESS: f32 = 10.0;

impl Default for DecisionRule {
    fn default() -> Self {
        DecisionRule {
            min_score: 0.0,
            min_similarity: -1.0,
            shot_weight: DEFAULT_SHOT_WEIGHT,
            shot_sharpness: DEFAULT_SHOT_SHARPNESS,
        }
    }
}

impl DecisionRule {
    /// Checks both thresholds are in range.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(Error::Usage(format!("min_score {} is outside 0..=1", self.min_score)));
        }
        if !(-1.0..=1.0).contains(&self.min_similarity) {
            return Err(Error::Usage(format!("min_similarity {} is outside -1..=1", self.min_similarity)));
        }
        if !(0.0..=1000.0).contains(&self.shot_weight) {
            return Err(Error::Usage(format!("shot_weight {} is outside 0..=1000", self.shot_weight)));
        }
        if !(0.0..=1000.0).contains(&self.shot_sharpness) {
            return Err(Error::Usage(format!("shot_sharpness {} is outside 0..=1000", self.shot_sharpness)));
        }
        Ok(())
    }
}

/// What a frame was judged to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "decision", content = "index")]
pub enum Decision {
    /// A class won clearly: its row index.
    Match(usize),
    /// A background entry won: nothing of interest.
    Background(usize),
    /// Nothing matched well enough.
    Unknown,
}

impl Decision {
    /// `match`, `background` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Match(_) => "match",
            Decision::Background(_) => "background",
            Decision::Unknown => "unknown",
        }
    }
}

/// One ranked entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Row index in the store.
    pub index: usize,
    /// Softmax probability over all entries.
    pub score: f32,
    /// Cosine similarity to the entry's text embedding (for an image-only
    /// class, to the mean of its shots), without the calibration offset.
    pub similarity: f32,
    /// What the entry's shots added to its logit (0 without shots).
    pub shots: f32,
}

/// The result of scoring one embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Best entries, best first.
    pub top: heapless::Vec<Ranked, MAX_TOP>,
    /// The decision under the rule used.
    pub decision: Decision,
}

/// Scores embeddings against a store, reusing its buffers.
#[derive(Debug, Clone, Default)]
pub struct Scorer {
    sims: Vec<f32>,
    shot_sims: Vec<f32>,
    logits: Vec<f32>,
}

impl Scorer {
    /// A scorer with empty buffers (sized on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Ranks the `k` best entries of `store` for the unit vector `embedding` and decides.
    pub fn classify(
        &mut self,
        embedding: &[f32],
        store: &PromptStore,
        k: usize,
        rule: &DecisionRule,
    ) -> Result<Classification> {
        if embedding.len() != store.dim() {
            return Err(Error::Usage(format!(
                "embedding has {} values but {} holds {}-dimensional prompts",
                embedding.len(),
                store.path().display(),
                store.dim()
            )));
        }
        let k = k.clamp(1, MAX_TOP).min(store.len());
        self.sims.resize(store.len(), 0.0);
        store.dot_all(embedding, &mut self.sims);
        let scale = store.header().logit_scale;
        self.logits.clear();
        self.logits
            .extend(self.sims.iter().enumerate().map(|(i, s)| (s + store.similarity_offset(i)) * scale));
        if rule.shot_weight > 0.0 && !store.shots().is_empty() {
            self.shot_sims.resize(store.shots().len(), 0.0);
            store.dot_shots(embedding, &mut self.shot_sims);
            for (shot, &sim) in store.shots().iter().zip(&self.shot_sims) {
                self.logits[shot.entry as usize] +=
                    rule.shot_weight * (-rule.shot_sharpness * (1.0 - sim)).exp();
            }
        }
        let max = self.logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
        let denom: f32 = self.logits.iter().map(|&l| (l - max).exp()).sum();

        let mut top: heapless::Vec<Ranked, MAX_TOP> = heapless::Vec::new();
        let mut top_logits: heapless::Vec<f32, MAX_TOP> = heapless::Vec::new();
        for (index, (&similarity, &logit)) in self.sims.iter().zip(&self.logits).enumerate() {
            let pos = top_logits.iter().position(|&l| logit > l).unwrap_or(top.len());
            if pos >= k {
                continue;
            }
            if top.len() == k {
                top.pop();
                top_logits.pop();
            }
            let score = (logit - max).exp() / denom;
            let shots = logit - (similarity + store.similarity_offset(index)) * scale;
            let overflow = || Error::Usage("top-k overflow".into());
            top.insert(pos, Ranked { index, score, similarity, shots }).map_err(|_| overflow())?;
            top_logits.insert(pos, logit).map_err(|_| overflow())?;
        }
        let best = top[0];
        let decision = if store.entries()[best.index].kind == EntryKind::Background {
            Decision::Background(best.index)
        } else if best.score < rule.min_score || best.similarity < rule.min_similarity {
            Decision::Unknown
        } else {
            Decision::Match(best.index)
        };
        Ok(Classification { top, decision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ElementType, StoreBuilder};

    fn store() -> PromptStore {
        let mut b = StoreBuilder::new(3, [1; 32], 10.0, ElementType::F32);
        b.push("a", EntryKind::Class, &[1.0, 0.0, 0.0]).expect("a");
        b.push("b", EntryKind::Class, &[0.0, 1.0, 0.0]).expect("b");
        b.push("bg", EntryKind::Background, &[0.0, 0.0, 1.0]).expect("bg");
        b.push("c", EntryKind::Class, &[0.6, 0.8, 0.0]).expect("c");
        PromptStore::from_bytes("s", &b.to_bytes().expect("bytes")).expect("store")
    }

    #[test]
    fn ranks_and_softmaxes() {
        let s = store();
        let mut sc = Scorer::new();
        let c = sc.classify(&[0.8, 0.6, 0.0], &s, 3, &DecisionRule::default()).expect("ok");
        let order: Vec<_> = c.top.iter().map(|r| r.index).collect();
        assert_eq!(order, vec![3, 0, 1]);
        assert_eq!(c.decision, Decision::Match(3));
        // softmax over all four entries with scale 10
        let sims = [0.8f32, 0.6, 0.0, 0.96];
        let denom: f32 = sims.iter().map(|s| (s * 10.0).exp()).sum();
        assert!((c.top[0].score - (9.6f32).exp() / denom).abs() < 1e-6);
        let total: f32 = c.top.iter().map(|r| r.score).sum();
        assert!(total < 1.0);
    }

    #[test]
    fn thresholds_give_unknown_and_background_wins_as_background() {
        let s = store();
        let mut sc = Scorer::new();
        let strict = DecisionRule { min_score: 0.99, ..DecisionRule::default() };
        let c = sc.classify(&[0.8, 0.6, 0.0], &s, 2, &strict).expect("ok");
        assert_eq!(c.decision, Decision::Unknown);
        let sim = DecisionRule { min_similarity: 0.97, ..DecisionRule::default() };
        assert_eq!(sc.classify(&[0.8, 0.6, 0.0], &s, 2, &sim).expect("ok").decision, Decision::Unknown);
        let c = sc.classify(&[0.0, 0.0, 1.0], &s, 1, &strict).expect("ok");
        assert_eq!(c.decision, Decision::Background(2));
        assert_eq!(c.top.len(), 1);
    }

    #[test]
    fn k_is_clamped_and_dimension_checked() {
        let s = store();
        let mut sc = Scorer::new();
        let c = sc.classify(&[1.0, 0.0, 0.0], &s, 100, &DecisionRule::default()).expect("ok");
        assert_eq!(c.top.len(), 4);
        assert!(sc.classify(&[1.0, 0.0], &s, 1, &DecisionRule::default()).is_err());
        assert!(DecisionRule { min_score: 1.5, ..DecisionRule::default() }.validate().is_err());
        assert!(DecisionRule { shot_weight: -1.0, ..DecisionRule::default() }.validate().is_err());
        assert!(DecisionRule::default().validate().is_ok());
    }

    fn with_shots(shots: &[(&str, [f32; 3])]) -> PromptStore {
        let mut b = store().to_builder();
        for (i, (label, e)) in shots.iter().enumerate() {
            b.add_shot(label, e, i as u64).expect("shot");
        }
        PromptStore::from_bytes("s", &b.to_bytes().expect("bytes")).expect("store")
    }

    #[test]
    fn no_shots_or_zero_weight_is_exactly_zero_shot() {
        let rule = DecisionRule::default();
        let q = [0.6, 0.8, 0.0];
        let zero = Scorer::new().classify(&q, &store(), 4, &rule).expect("zero-shot");
        let v2 = PromptStore::from_bytes("s", &store().to_builder().to_bytes().expect("b")).expect("s");
        assert_eq!(Scorer::new().classify(&q, &v2, 4, &rule).expect("v2"), zero);
        let shots = with_shots(&[("a", [0.0, 0.6, 0.8]), ("b", [0.6, 0.8, 0.0])]);
        let off = DecisionRule { shot_weight: 0.0, ..rule };
        assert_eq!(Scorer::new().classify(&q, &shots, 4, &off).expect("off"), zero);
        assert!(zero.top.iter().all(|r| r.shots == 0.0));
    }

    #[test]
    fn shots_add_their_affinity_to_their_class() {
        let q = [0.0, 0.6, 0.8];
        let rule = DecisionRule { shot_weight: 8.0, shot_sharpness: 2.0, ..DecisionRule::default() };
        let zero = Scorer::new().classify(&q, &store(), 4, &rule).expect("zero");
        assert_eq!(zero.decision, Decision::Background(2));
        let s = with_shots(&[("a", [0.0, 0.6, 0.8]), ("a", [0.0, 0.0, 1.0])]);
        let c = Scorer::new().classify(&q, &s, 4, &rule).expect("shots");
        assert_eq!(c.decision, Decision::Match(0));
        let a = c.top.iter().find(|r| r.index == 0).expect("a ranked");
        let expect = 8.0 * (1.0f32 + (-2.0f32 * (1.0 - 0.8)).exp());
        assert!((a.shots - expect).abs() < 1e-4, "{} vs {expect}", a.shots);
        assert_eq!(a.similarity, 0.0);
        assert!(c.top.iter().filter(|r| r.index != 0).all(|r| r.shots == 0.0));
    }

    #[test]
    fn image_only_class_scores_against_its_shot_mean() {
        let s = with_shots(&[("van", [0.0, 0.0, 1.0]), ("van", [0.0, 1.0, 1.0])]);
        assert_eq!(s.len(), 5);
        assert!(!s.entries()[4].text);
        let rule = DecisionRule { shot_weight: 0.0, ..DecisionRule::default() };
        let q = [0.0, 0.38268343, 0.9238795];
        let c = Scorer::new().classify(&q, &s, 2, &rule).expect("ok");
        assert_eq!(c.decision, Decision::Match(4));
        assert!((c.top[0].similarity - 1.0).abs() < 1e-5, "{:?}", c.top[0]);
    }

    #[test]
    fn similarity_offsets_shift_logits_not_similarities() {
        let q = [0.8, 0.6, 0.0];
        let rule = DecisionRule::default();
        let plain = Scorer::new().classify(&q, &store(), 4, &rule).expect("plain");
        assert_eq!(plain.top[0].index, 3);
        let mut b = store().to_builder();
        b.set_similarity_offsets(vec![0.2, 0.0, 0.0, 0.0]).expect("offsets");
        let s = PromptStore::from_bytes("s", &b.to_bytes().expect("bytes")).expect("store");
        assert_eq!(s.similarity_offset(0), 0.2);
        let c = Scorer::new().classify(&q, &s, 4, &rule).expect("calibrated");
        assert_eq!(c.decision, Decision::Match(0));
        assert_eq!(c.top[0].similarity, 0.8);
        assert_eq!(c.top[0].shots, 0.0);
        let sims = [1.0f32, 0.6, 0.0, 0.96];
        let denom: f32 = sims.iter().map(|s| (s * 10.0).exp()).sum();
        assert!((c.top[0].score - 10f32.exp() / denom).abs() < 1e-6);
    }
}
