//! The decision stage: the frames of a burst vote, and `agree` of them must
//! name the same class for a match. Pure: per-frame decisions in, one typed
//! decision out; the daemon does the capturing and the reporting.

use clip_edge_runtime::Decision;
use serde::Serialize;

/// What an event reports (`decision` in `docs/events.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A class won, in enough frames of the burst.
    Match,
    /// Most frames saw a background entry: nothing of interest.
    Background,
    /// Nothing matched well enough.
    Unknown,
}

impl Verdict {
    /// `match`, `background` or `unknown`, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Background => "background",
            Verdict::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a burst's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstDecision {
    /// The class (store row) with the most frames, at least `agree` of them;
    /// a tie goes to the lower row.
    Match {
        /// Its row in the prompt store.
        index: usize,
        /// Frames that matched it.
        votes: u32,
    },
    /// No class had `agree` frames, and more than half the frames matched a background entry.
    Background {
        /// Frames that matched a background entry.
        votes: u32,
    },
    /// Neither.
    Unknown,
}

impl BurstDecision {
    /// What an event reports.
    pub fn verdict(self) -> Verdict {
        match self {
            BurstDecision::Match { .. } => Verdict::Match,
            BurstDecision::Background { .. } => Verdict::Background,
            BurstDecision::Unknown => Verdict::Unknown,
        }
    }

    /// Frames that voted for this decision (none for [`BurstDecision::Unknown`]).
    pub fn votes(self) -> u32 {
        match self {
            BurstDecision::Match { votes, .. } | BurstDecision::Background { votes } => votes,
            BurstDecision::Unknown => 0,
        }
    }

    /// The matched row, for a match.
    pub fn index(self) -> Option<usize> {
        match self {
            BurstDecision::Match { index, .. } => Some(index),
            _ => None,
        }
    }
}

/// The k-of-n vote over the per-frame decisions of one burst (`agree` = k).
pub fn vote(frames: &[Decision], agree: u32) -> BurstDecision {
    let count = |want: &dyn Fn(&Decision) -> bool| frames.iter().filter(|d| want(d)).count() as u32;
    let best = frames
        .iter()
        .filter_map(|d| match d {
            Decision::Match(i) => Some(*i),
            _ => None,
        })
        .map(|i| (i, count(&|d| *d == Decision::Match(i))))
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)));
    let backgrounds = count(&|d| matches!(d, Decision::Background(_)));
    match best {
        Some((index, votes)) if votes >= agree => BurstDecision::Match { index, votes },
        _ if backgrounds as usize * 2 > frames.len() => BurstDecision::Background { votes: backgrounds },
        _ => BurstDecision::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Background as B, Match as M, Unknown as U};

    #[test]
    fn a_burst_of_one_is_that_frame() {
        assert_eq!(vote(&[M(4)], 1), BurstDecision::Match { index: 4, votes: 1 });
        assert_eq!(vote(&[B(7)], 1), BurstDecision::Background { votes: 1 });
        assert_eq!(vote(&[U], 1), BurstDecision::Unknown);
    }

    #[test]
    fn the_majority_class_wins_with_enough_votes() {
        let d = vote(&[M(2), M(5), M(2), U], 2);
        assert_eq!(d, BurstDecision::Match { index: 2, votes: 2 });
        assert_eq!((d.verdict(), d.votes(), d.index()), (Verdict::Match, 2, Some(2)));
        assert_eq!(vote(&[M(2), M(5), M(2), U], 3), BurstDecision::Unknown, "2 of 4 is not 3");
        assert_eq!(vote(&[M(1), M(1), M(1)], 3), BurstDecision::Match { index: 1, votes: 3 });
    }

    #[test]
    fn a_tie_goes_to_the_lower_row() {
        assert_eq!(vote(&[M(6), M(3), M(6), M(3)], 2), BurstDecision::Match { index: 3, votes: 2 });
        assert_eq!(vote(&[M(9), M(0)], 1), BurstDecision::Match { index: 0, votes: 1 });
    }

    #[test]
    fn backgrounds_need_more_than_half_the_frames() {
        assert_eq!(vote(&[B(7), B(8), M(1)], 2), BurstDecision::Background { votes: 2 });
        assert_eq!(vote(&[B(7), B(7), M(1), U], 2), BurstDecision::Unknown, "half is not more than half");
        // A class with enough votes wins over a background majority.
        assert_eq!(vote(&[B(7), B(7), B(7), M(1)], 1), BurstDecision::Match { index: 1, votes: 1 });
    }

    #[test]
    fn unknown_when_nothing_agrees() {
        let d = vote(&[U, U, M(1)], 2);
        assert_eq!(
            (d, d.verdict(), d.votes(), d.index()),
            (BurstDecision::Unknown, Verdict::Unknown, 0, None)
        );
        assert_eq!(vote(&[], 1), BurstDecision::Unknown);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn frame() -> impl Strategy<Value = Decision> {
            prop_oneof![(0usize..5).prop_map(M), (5usize..7).prop_map(B), Just(U)]
        }

        /// The vote as the event schema describes it, by counting every row.
        fn by_hand(frames: &[Decision], agree: u32) -> BurstDecision {
            let votes = |row| frames.iter().filter(|d| **d == M(row)).count() as u32;
            let best = (0..5)
                .map(|row| (row, votes(row)))
                .filter(|&(_, n)| n > 0)
                .max_by_key(|&(row, n)| (n, std::cmp::Reverse(row)));
            let backgrounds = frames.iter().filter(|d| matches!(d, B(_))).count() as u32;
            match best {
                Some((index, votes)) if votes >= agree => BurstDecision::Match { index, votes },
                _ if 2 * backgrounds as usize > frames.len() => {
                    BurstDecision::Background { votes: backgrounds }
                }
                _ => BurstDecision::Unknown,
            }
        }

        proptest! {
            #[test]
            fn the_vote_counts_rows_and_ignores_frame_order(
                frames in proptest::collection::vec(frame(), 0..16),
                agree in 1u32..17,
                rotate in 0usize..16,
            ) {
                let d = vote(&frames, agree);
                prop_assert_eq!(d, by_hand(&frames, agree));
                let mut turned = frames.clone();
                turned.rotate_left(rotate.min(frames.len()));
                turned.reverse();
                prop_assert_eq!(vote(&turned, agree), d);
                // Asking for more agreement never makes a match.
                if d.verdict() != Verdict::Match {
                    prop_assert_ne!(vote(&frames, agree + 1).verdict(), Verdict::Match);
                }
            }
        }
    }

    #[test]
    fn verdicts_serialise_as_the_event_schema_says() {
        let json =
            serde_json::to_string(&[Verdict::Match, Verdict::Background, Verdict::Unknown]).expect("json");
        assert_eq!(json, r#"["match","background","unknown"]"#);
        assert_eq!(Verdict::Background.to_string(), "background");
    }
}
