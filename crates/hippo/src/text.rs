//! Text normalisation for the keyword channel, shared by every store.
//!
//! Stores index [`keyword_text`] of each memory and search with
//! [`query_terms`]. Latin-script text is left to the store's tokenizer
//! (stemming); runs of Chinese/Japanese/Korean characters, which carry no
//! spaces, are rewritten into space-separated unigrams and overlapping
//! bigrams so a word-based tokenizer can match them (the CJK-bigram approach
//! of Lucene's CJKAnalyzer). Queries use bigrams only (unigrams for
//! one-character runs), which keeps them precise, and drop English stopwords.
//! A memory's keyword body (`keyword_body`) is its text plus the date tokens
//! of `crate::temporal`.
//!
//! Invariant: a change to what `keyword_body` produces bumps
//! `KEYWORD_FORMAT`, and stores re-index older documents when they open.

/// True for characters of scripts written without spaces between words.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x31F0..=0x31FF // Katakana phonetic extensions
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // half-width Katakana
        | 0x20000..=0x2FA1F // CJK extensions B-F, compatibility supplement
    )
}

/// Splits `text` into runs: `(is_cjk_run, run)`; non-CJK runs keep their text.
fn runs(text: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let cjk = is_cjk(first);
        let end = rest
            .char_indices()
            .find(|&(_, c)| is_cjk(c) != cjk)
            .map_or(rest.len(), |(i, _)| i);
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some((cjk, run))
    })
}

fn push_cjk_bigrams(out: &mut String, run: &str, with_unigrams: bool) {
    let chars: Vec<char> = run.chars().collect();
    if with_unigrams || chars.len() == 1 {
        for c in &chars {
            out.push(' ');
            out.push(*c);
        }
    }
    for pair in chars.windows(2) {
        out.push(' ');
        out.push(pair[0]);
        out.push(pair[1]);
    }
    out.push(' ');
}

/// Version of what [`keyword_body`] produces; a store re-indexes documents
/// written under an older version when it opens.
pub const KEYWORD_FORMAT: u32 = 4;

/// The keyword document body of a memory: its text (see [`keyword_text`])
/// plus date tokens (see `temporal`) for the day it happened and for every
/// time expression in it, resolved against that day. So "last Sunday" in a
/// message of 2023-05-25 is found by a query about 21 May 2023.
pub fn keyword_body(content: &str, when: chrono::DateTime<chrono::Utc>) -> String {
    let day = when.date_naive();
    let mut out = keyword_text(content);
    for t in crate::temporal::Span::day(day)
        .tokens()
        .into_iter()
        .filter(|t| !t.starts_with('y'))
        .chain(crate::temporal::mention_tokens(content, day))
    {
        out.push(' ');
        out.push_str(&t);
    }
    out
}

/// The text a store indexes for keyword search: `text` with CJK runs expanded
/// into unigrams and bigrams; everything else unchanged.
pub fn keyword_text(text: &str) -> String {
    if !text.chars().any(is_cjk) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() * 3);
    for (cjk, run) in runs(text) {
        if cjk {
            push_cjk_bigrams(&mut out, run, true);
        } else {
            out.push_str(run);
        }
    }
    out
}

/// English function words dropped from queries (not from the index): they
/// match nearly every memory and only add noise to BM25.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "might",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "s",
    "t",
    "d",
    "ll",
    "m",
    "re",
    "ve",
    "don",
    "doesn",
    "didn",
    "isn",
    "wasn",
    "weren",
    "won",
    "also",
    "ever",
    "many",
    "much",
    "kind",
    "kinds",
    "likely",
    "yes",
];

fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// The terms of a keyword query: lower-cased words split on anything that is
/// not a letter or digit (as the index tokenizer does), English stopwords
/// removed unless nothing else remains, CJK runs turned into bigrams;
/// duplicates removed, first occurrence order kept.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut all = Vec::new();
    for (cjk, run) in runs(query) {
        if cjk {
            let mut s = String::new();
            push_cjk_bigrams(&mut s, run, false);
            all.extend(s.split_whitespace().map(|t| (t.to_owned(), false)));
        } else {
            for word in run
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                let w = word.to_lowercase();
                let stop = is_stopword(&w);
                all.push((w, stop));
            }
        }
    }
    let content_words = all.iter().any(|(_, stop)| !stop);
    let mut terms: Vec<String> = Vec::new();
    for (t, stop) in all {
        if (content_words && stop) || terms.contains(&t) {
            continue;
        }
        terms.push(t);
    }
    terms
}

/// Words that carry no information on their own in chat (acknowledgements,
/// greetings, laughter); not stopwords for search, where they may be asked
/// about, but not content for admission.
const FILLERS: &[&str] = &[
    "ok", "okay", "k", "yeah", "yep", "yup", "nope", "lol", "haha", "hahaha", "hehe", "thanks",
    "thank", "thx", "hi", "hello", "hey", "bye", "sure", "cool", "nice", "great", "wow", "hmm",
    "oh", "ah", "um", "uh", "right", "alright", "good", "fine", "please", "welcome", "cheers",
];

/// How many words of `text` carry content: words that are neither English
/// stopwords nor chat fillers; a CJK run counts one word per two characters.
pub fn content_word_count(text: &str) -> usize {
    runs(text)
        .map(|(cjk, run)| {
            if cjk {
                run.chars().count().div_ceil(2)
            } else {
                run.split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .filter(|w| !is_stopword(w) && !FILLERS.contains(&w.as_str()))
                    .count()
            }
        })
        .sum()
}

/// Words that turn a statement around.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "nothing", "nobody", "none", "nor", "neither", "without", "cannot",
    "don", "doesn", "didn", "isn", "wasn", "weren", "won", "wouldn", "shouldn", "couldn", "aren",
    "hasn", "haven", "hadn", "can't", "ain",
];

/// Whether two texts that mean nearly the same (by their vectors) also
/// state the same particulars, so one may be merged into the other: the
/// same numbers, the same polarity (both negated or neither), no differing
/// proper noun (a capitalised word not opening the text), and at most two
/// differing content words ("named" / "called"). Embeddings barely tell
/// "stamp number 2" from "stamp number 3" or "likes tea" from "doesn't like
/// tea"; merging those would lose a fact.
pub fn same_particulars(a: &str, b: &str) -> bool {
    struct Words {
        numbers: std::collections::BTreeSet<String>,
        negated: bool,
        content: std::collections::BTreeSet<String>,
        proper: std::collections::BTreeSet<String>,
    }
    fn words(text: &str) -> Words {
        let mut w = Words {
            numbers: Default::default(),
            negated: false,
            content: Default::default(),
            proper: Default::default(),
        };
        let raw = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|x| !x.is_empty());
        for (i, word) in raw.enumerate() {
            let lower = word.to_lowercase();
            if word.chars().any(|c| c.is_ascii_digit()) {
                w.numbers.insert(lower.clone());
            }
            if NEGATIONS.contains(&lower.as_str()) {
                w.negated = !w.negated;
            }
            if i > 0 && word.chars().next().is_some_and(char::is_uppercase) {
                w.proper.insert(lower.clone());
            }
            if !is_stopword(&lower) && !FILLERS.contains(&lower.as_str()) {
                w.content.insert(lower);
            }
        }
        w
    }
    let (a, b) = (words(a), words(b));
    if a.numbers != b.numbers || a.negated != b.negated {
        return false;
    }
    let differing: Vec<&String> = a.content.symmetric_difference(&b.content).collect();
    differing.len() <= 2
        && !differing
            .iter()
            .any(|w| a.proper.contains(*w) || b.proper.contains(*w))
}

/// Capitalised words that are not names: calendar words (dates are handled
/// by `temporal`) and the pronoun "I".
const NOT_NAMES: &[&str] = &[
    "i",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "mon",
    "tue",
    "tues",
    "wed",
    "thu",
    "thur",
    "thurs",
    "fri",
    "sat",
    "sun",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "let",
];

/// Named entities of `text`, without a model: runs of capitalised words
/// (up to three; "New York") that do not open a sentence, minus calendar
/// words, stopwords and the pronoun "I", in order of first mention. A sentence-opening
/// name is missed here but found again wherever it is mentioned mid-sentence.
pub fn entities(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, out: &mut Vec<String>| {
        if !run.is_empty() {
            let name = run.join(" ");
            if !out.contains(&name) {
                out.push(name);
            }
            run.clear();
        }
    };
    for line in text.lines() {
        let mut sentence_start = true;
        for raw in line.split_whitespace() {
            let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
            // A possessive or contraction ends at the apostrophe ("Ana's",
            // "It's").
            let bare = word
                .strip_suffix("'s")
                .or_else(|| word.strip_suffix("\u{2019}s"))
                .unwrap_or(word);
            let lower = bare.to_lowercase();
            let closing: &[char] = &['"', '\'', ')', ']', '\u{201d}', '\u{2019}'];
            let ends_sentence = word.is_empty()
                || raw
                    .trim_end_matches(closing)
                    .ends_with(['.', '!', '?', ':', ';', '\u{2026}'])
                || raw.ends_with([')', ']']);
            let capitalised = bare.chars().next().is_some_and(char::is_uppercase)
                && bare.chars().skip(1).any(char::is_lowercase)
                && bare.chars().all(|c| c.is_alphabetic() || c == '-')
                && !NOT_NAMES.contains(&lower.as_str())
                && !is_stopword(&lower)
                && !word.starts_with("I'");
            if capitalised && !sentence_start && run.len() < 3 {
                run.push(bare);
                if bare.len() != word.len() || raw.ends_with(',') {
                    flush(&mut run, &mut out);
                }
            } else {
                flush(&mut run, &mut out);
            }
            if ends_sentence {
                flush(&mut run, &mut out);
            }
            sentence_start = ends_sentence;
        }
        flush(&mut run, &mut out);
    }
    out
}

/// Whether `text` mentions `name` as whole words, case-sensitively.
pub fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Rough token count for budget accounting when no tokenizer is at hand:
/// about four characters per token for Latin text, one per CJK character.
pub fn approx_tokens(text: &str) -> usize {
    let cjk = text.chars().filter(|c| is_cjk(*c)).count();
    let other = text.len().saturating_sub(cjk * 3);
    cjk + other.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn particulars_tell_restatements_from_different_facts() {
        assert!(same_particulars(
            "Ana lives in Denver.",
            "ana lives in Denver"
        ));
        assert!(same_particulars(
            "Ana has a dog named Rex",
            "Ana has a dog called Rex."
        ));
        assert!(!same_particulars(
            "Ana collects stamp number 2.",
            "Ana collects stamp number 3."
        ));
        assert!(!same_particulars(
            "Ana is 31 years old",
            "Ana is 32 years old"
        ));
        assert!(!same_particulars("Ana likes tea", "Ana doesn't like tea"));
        assert!(!same_particulars(
            "Ana has a dog named Rex",
            "Ana has a dog named Max"
        ));
        assert!(!same_particulars(
            "Ana likes hiking in the Alps with friends",
            "Ana enjoys swimming in lakes near home"
        ));
    }

    #[test]
    fn entities_are_mid_sentence_capitalised_runs() {
        assert_eq!(
            entities("We moved to New York in May. Then Ana's dog met Rex, and I said hi."),
            vec!["New York", "Ana", "Rex"]
        );
        assert_eq!(
            entities("Hello there. Nothing to see"),
            Vec::<String>::new()
        );
        assert_eq!(
            entities("Wow, I'm glad. 😊 It was fun"),
            Vec::<String>::new()
        );
        assert_eq!(entities("Sure, That's it [image] Here's Max"), vec!["Max"]);
        assert_eq!(entities("Great\nThanks Mel"), vec!["Mel"]);
        assert!(mentions("Ana met Rex.", "Rex"));
        assert!(!mentions("Anastasia", "Ana"));
    }

    #[test]
    fn content_words_skip_stopwords_and_fillers() {
        assert_eq!(content_word_count("ok thanks, haha!"), 0);
        assert_eq!(content_word_count("I moved to Denver in May"), 3);
        assert_eq!(content_word_count("我搬到丹佛"), 3);
    }

    #[test]
    fn latin_text_is_unchanged() {
        assert_eq!(keyword_text("Hello, world!"), "Hello, world!");
    }

    #[test]
    fn cjk_runs_become_unigrams_and_bigrams() {
        let t = keyword_text("我住在東京");
        let toks: Vec<&str> = t.split_whitespace().collect();
        for expected in ["我", "東", "東京", "住在", "在東"] {
            assert!(toks.contains(&expected), "{expected} missing from {toks:?}");
        }
    }

    #[test]
    fn mixed_text_keeps_latin_words() {
        let t = keyword_text("我在Google工作");
        assert!(t.contains("Google"));
        assert!(t.split_whitespace().any(|w| w == "工作"));
    }

    #[test]
    fn query_terms_drop_stopwords_and_split_like_the_index() {
        assert_eq!(
            query_terms("What is Caroline's favourite book?"),
            vec!["caroline", "favourite", "book"]
        );
        assert_eq!(query_terms("who is it"), vec!["who", "is", "it"]);
        assert_eq!(
            query_terms("東京の天気"),
            vec!["東京", "京の", "の天", "天気"]
        );
        assert_eq!(query_terms("犬"), vec!["犬"]);
        assert!(query_terms("  ?!  ").is_empty());
    }
}
