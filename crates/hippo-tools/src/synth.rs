//! A deterministic generator of synthetic chat for load tests: two-party
//! conversations whose content words follow a Zipf law over a large vocabulary
//! (a head of common English words, a long tail of made-up words), so keyword
//! posting lengths and query selectivity look like real chat at any size.
//! Nothing here is tuned to a benchmark's data.

use std::collections::HashSet;

/// SplitMix64: tiny, fast and good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n
    }
}

const COMMON: &str = "time day week year morning night weekend people friend family kid mom dad \
    sister brother work job office meeting project team boss money house home room kitchen garden \
    car bike train trip travel city town beach mountain lake park dog cat pet food dinner lunch \
    breakfast coffee tea pizza cake recipe book movie show music song concert guitar piano game \
    sport soccer tennis run gym yoga class school college course exam teacher student doctor \
    health sleep weather rain snow summer winter spring autumn holiday birthday party gift wedding \
    photo picture camera painting art museum library store shop market phone computer app website \
    email message news story idea plan goal dream problem question answer help advice support \
    love hope fun stress anxiety happy excited tired busy nervous proud grateful start finish try \
    learn teach cook bake paint write read watch listen play visit move buy sell build fix clean \
    drive walk swim climb hike camp dance sing draw plant grow share feel think remember forget \
    decide choose change meet call talk join leave stay travel volunteer adopt practice";

const FUNCTION: &[&str] = &[
    "the", "a", "to", "and", "i", "you", "it", "was", "is", "so", "that", "my", "we", "with",
    "for", "on", "in", "just", "really", "have", "had", "this", "of", "about", "at", "been", "our",
    "your",
];

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "ten", "su", "vor", "el", "dan", "pi", "qua", "ze", "bro", "lin",
    "mar", "ok", "ti", "fen", "gal", "ru", "sha", "wen", "yo", "ber", "cas", "dor", "ix", "jun",
    "kel", "nov",
];

/// Generates chat turns and matching search queries.
pub struct ChatGenerator {
    rng: Rng,
    vocab: Vec<String>,
    cdf: Vec<f64>,
    names: Vec<String>,
}

/// One generated turn.
pub struct Turn {
    /// Speaker name.
    pub speaker: String,
    /// Text.
    pub text: String,
    /// Content words used (for making queries about this turn).
    pub words: Vec<usize>,
}

impl ChatGenerator {
    /// A generator with `tail` made-up words after the common head.
    pub fn new(seed: u64, tail: usize) -> Self {
        let mut rng = Rng::new(seed);
        let mut seen = HashSet::new();
        let mut vocab: Vec<String> = COMMON
            .split_whitespace()
            .filter(|w| seen.insert(w.to_string()))
            .map(str::to_owned)
            .collect();
        let head = vocab.len();
        while vocab.len() < head + tail {
            let n = 2 + rng.below(3);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        // Zipf with exponent 1.05 over ranks.
        let mut acc = 0.0;
        let cdf = (1..=vocab.len())
            .map(|r| {
                acc += 1.0 / (r as f64).powf(1.05);
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        let cdf = cdf.into_iter().map(|c| c / total).collect();
        let mut names = Vec::new();
        let mut name_seen = HashSet::new();
        while names.len() < 200 {
            let n = 2 + rng.below(2);
            let mut w: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            w[..1].make_ascii_uppercase();
            if name_seen.insert(w.clone()) {
                names.push(w);
            }
        }
        ChatGenerator {
            rng,
            vocab,
            cdf,
            names,
        }
    }

    /// The vocabulary (`Turn::words` index it).
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// The speaker names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn word(&mut self) -> usize {
        let u = self.rng.unit();
        self.cdf
            .partition_point(|&c| c < u)
            .min(self.vocab.len() - 1)
    }

    /// A conversation of `turns` turns between two random speakers.
    pub fn conversation(&mut self, turns: usize) -> Vec<Turn> {
        let a = self.rng.below(self.names.len());
        let b = (a + 1 + self.rng.below(self.names.len() - 1)) % self.names.len();
        (0..turns)
            .map(|i| {
                let speaker = self.names[if i % 2 == 0 { a } else { b }].clone();
                let len = 6 + self.rng.below(18);
                let mut text = String::new();
                let mut words = Vec::new();
                for j in 0..len {
                    if j > 0 {
                        text.push(' ');
                    }
                    if self.rng.unit() < 0.45 {
                        text.push_str(FUNCTION[self.rng.below(FUNCTION.len())]);
                    } else {
                        let w = self.word();
                        words.push(w);
                        text.push_str(&self.vocab[w]);
                    }
                }
                text.push(if self.rng.unit() < 0.2 { '?' } else { '.' });
                Turn {
                    speaker,
                    text,
                    words,
                }
            })
            .collect()
    }

    /// A question about a turn: its speaker and two to four of its content words.
    pub fn query_about(&mut self, turn: &Turn) -> String {
        let mut words: Vec<&str> = Vec::new();
        let n = (2 + self.rng.below(3)).min(turn.words.len());
        for _ in 0..n {
            let w = &self.vocab[turn.words[self.rng.below(turn.words.len())]];
            if !words.contains(&w.as_str()) {
                words.push(w);
            }
        }
        format!("what did {} say about {}?", turn.speaker, words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_zipfian() {
        let mut a = ChatGenerator::new(7, 5_000);
        let mut b = ChatGenerator::new(7, 5_000);
        let ta = a.conversation(200);
        let tb = b.conversation(200);
        assert!(ta.iter().zip(&tb).all(|(x, y)| x.text == y.text));
        // Rank 0 is far more frequent than rank 1000.
        let mut counts = vec![0usize; a.vocab.len()];
        for t in a.conversation(5_000) {
            for w in t.words {
                counts[w] += 1;
            }
        }
        assert!(counts[0] > 20 * counts[1000].max(1));
        let q = a.query_about(&ta[0]);
        assert!(q.starts_with("what did ") && q.contains(&ta[0].speaker));
    }
}
