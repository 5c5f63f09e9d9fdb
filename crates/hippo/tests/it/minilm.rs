//! The in-process MiniLM embedder against an independent numpy reference
//! (`scripts/reference_embeddings.py`).

use hippo::Embedder;
use serde_json::Value;

#[test]
fn minilm_matches_reference() {
    let reference: Value = serde_json::from_str(include_str!("../data/minilm_reference.json"))
        .expect("reference JSON");
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let model = super::common::minilm();
    assert_eq!(model.dimension(), 384);
    // As one batch (padding to the longest) and one at a time: same vectors.
    let batch = model.embed_batch(&sentences).unwrap();
    for (i, want) in reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let single = model.embed(sentences[i]).unwrap();
        for (j, w) in want.as_array().unwrap().iter().enumerate() {
            let w = w.as_f64().unwrap() as f32;
            assert!(
                (batch[i][j] - w).abs() < 2e-6,
                "sentence {i} dim {j}: batch {} vs reference {w}",
                batch[i][j]
            );
            assert!(
                (single[j] - w).abs() < 2e-6,
                "sentence {i} dim {j}: single {} vs reference {w}",
                single[j]
            );
        }
    }
}

#[test]
fn token_counts_ignore_the_truncation_window() {
    let model = super::common::minilm();
    let long = "word ".repeat(600);
    assert!(model.count_tokens(&long) >= 600);
    assert_eq!(model.max_tokens(), 256);
}
