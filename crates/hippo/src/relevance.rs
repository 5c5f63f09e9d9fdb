//! Calibrated relevance: how likely a search result is to hold what the
//! query asks for, between 0 and 1, from the result's own evidence only.
//!
//! The fused `score` ranks the candidates of one query against each other
//! (its channels are normalised over the candidate pool), so a top result
//! scores high even when nothing stored is about the query. Relevance is a
//! logistic function of the memory's cosine to the query alone, which does
//! not depend on the other candidates or on the size of the store. It was
//! fitted on a labelled development split (a result is relevant when it
//! shows an evidence turn of the question) and judged on three others;
//! `scripts/fit_relevance.py` refits it and prints the coefficients below
//! (its docstring has the command). BM25 separated evidence better on the
//! fit split (AUC 0.86 against 0.69), but its scale follows the store's size
//! (IDF): with it, long messages were over-rated (BEAM ECE 0.31) and small
//! stores under-rated (a 0.78-cosine paraphrase in a four-memory store got
//! 0.008). Ranking does not use relevance; thresholds do (`min_relevance`,
//! Mem0's `threshold`).
//!
//! Fitted on LoCoMo dev (top 10 results of 582 questions); judged with 50
//! hand-written off-topic questions (`eval/off-topic-questions.json`, never
//! fitted on); measured through the server (`fit_relevance.py --check`,
//! 2026-12-07):
//!
//! | split | results | relevant | ECE | at 0.03: evidence kept | at 0.03: off-topic dropped |
//! |---|---|---|---|---|---|
//! | LoCoMo (fit) | 5,652 | 11.0 % | 0.008 | 99.0 % | 99.95 % |
//! | RealTalk | 1,940 | 12.3 % | 0.035 | 88.3 % | 99.85 % |
//! | BEAM 100k | 569 | 15.6 % | 0.043 | 95.5 % | 99.7 % |
//! | MemDaily (Chinese) | 2,815 | 7.6 % | 0.193 | 100 % | 98.9 % |
//!
//! Hence the recommended `min_relevance` of 0.03. Chinese is not calibrated:
//! the English embedder gives Chinese text high cosines to everything, so
//! relevance over-states there and ranks poorly (AUC 0.52). Refit after
//! changing the embedder.

use crate::retrieve::ChannelScores;

/// Intercept and cosine weight of the logistic model, fitted by
/// `scripts/fit_relevance.py` on LoCoMo dev (5,654 results of 582
/// questions, 11 % relevant; the embedder is all-MiniLM-L6-v2, whose
/// cosines these are: another embedder needs a refit).
const COEFFICIENTS: [f64; 2] = [-5.613, 6.765];

/// A threshold that drops nearly every result of a question nothing stored
/// is about and keeps nearly every result that holds evidence (measured in
/// the module docs).
pub const RECOMMENDED_MIN_RELEVANCE: f32 = 0.03;

/// The relevance of a hit with these channel scores: the estimated
/// probability that it holds evidence for the query (0 without a vector
/// counts as cosine 0).
pub fn relevance(scores: &ChannelScores) -> f32 {
    let cosine = f64::from(scores.vector.unwrap_or(0.0));
    let z = COEFFICIENTS[0] + COEFFICIENTS[1] * cosine;
    (1.0 / (1.0 + (-z).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cosine(c: f32) -> ChannelScores {
        ChannelScores {
            vector: Some(c),
            ..ChannelScores::default()
        }
    }

    #[test]
    fn a_close_match_clears_the_threshold_and_unrelated_text_does_not() {
        // Cosines of all-MiniLM-L6-v2: a paraphrase, and an off-topic pair.
        assert!(relevance(&cosine(0.78)) > 0.3);
        assert!(relevance(&cosine(0.10)) < RECOMMENDED_MIN_RELEVANCE);
    }

    proptest! {
        /// In range, and never lower for a closer match.
        #[test]
        fn relevance_is_a_probability_that_grows_with_the_cosine(
            a in -1.0f32..=1.0,
            b in -1.0f32..=1.0,
        ) {
            let (ra, rb) = (relevance(&cosine(a)), relevance(&cosine(b)));
            prop_assert!((0.0..=1.0).contains(&ra));
            if a <= b {
                prop_assert!(ra <= rb);
            }
        }
    }
}
