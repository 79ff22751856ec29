//! Scoring: cosine similarity against the store, logit scale, softmax,
//! top-k without heap allocation, and the open-set decision.

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
}

impl Default for DecisionRule {
    fn default() -> Self {
        DecisionRule { min_score: 0.0, min_similarity: -1.0 }
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
    /// Cosine similarity.
    pub similarity: f32,
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
        let max = self.sims.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let denom: f32 = self.sims.iter().map(|&s| ((s - max) * scale).exp()).sum();

        let mut top: heapless::Vec<Ranked, MAX_TOP> = heapless::Vec::new();
        for (index, &similarity) in self.sims.iter().enumerate() {
            let pos = top.iter().position(|r| similarity > r.similarity).unwrap_or(top.len());
            if pos >= k {
                continue;
            }
            if top.len() == k {
                top.pop();
            }
            let score = ((similarity - max) * scale).exp() / denom;
            top.insert(pos, Ranked { index, score, similarity })
                .map_err(|_| Error::Usage("top-k overflow".into()))?;
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
        let strict = DecisionRule { min_score: 0.99, min_similarity: -1.0 };
        let c = sc.classify(&[0.8, 0.6, 0.0], &s, 2, &strict).expect("ok");
        assert_eq!(c.decision, Decision::Unknown);
        let sim = DecisionRule { min_score: 0.0, min_similarity: 0.97 };
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
        assert!(DecisionRule { min_score: 1.5, min_similarity: 0.0 }.validate().is_err());
    }
}
