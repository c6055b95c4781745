//! `tokenizer.bin` reading and run.c's encode/decode on small vocabularies built here from known values.

use mote_llm::{Error, Tokenizer, BOS, EOS};
use proptest::prelude::*;

/// Writes a `tokenizer.bin` byte for byte: u32 max_token_length, then per token f32 score, i32 length, bytes.
fn tokenizer_bin(max_token_length: u32, tokens: &[(Vec<u8>, f32)]) -> Vec<u8> {
    let mut out = max_token_length.to_le_bytes().to_vec();
    for (t, score) in tokens {
        out.extend_from_slice(&score.to_le_bytes());
        out.extend_from_slice(&(t.len() as i32).to_le_bytes());
        out.extend_from_slice(t);
    }
    out
}

/// llama2.c's layout: `<unk>`, `<s>`, `</s>` (as tokenizer.py writes them), the 256 byte tokens `<0x00>`..`<0xFF>`
/// (ids 3..=258), then `extra` from id 259 on.
fn llama_like(extra: &[(&str, f32)]) -> Vec<(Vec<u8>, f32)> {
    let mut tokens = vec![(b"<unk>".to_vec(), 0.0), (b"\n<s>\n".to_vec(), 0.0), (b"\n</s>\n".to_vec(), 0.0)];
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>").into_bytes(), 0.0)));
    tokens.extend(extra.iter().map(|(t, s)| (t.as_bytes().to_vec(), *s)));
    tokens
}

fn load(tokens: &[(Vec<u8>, f32)]) -> Tokenizer {
    let max = tokens.iter().map(|(t, _)| t.len()).max().unwrap() as u32;
    Tokenizer::from_bytes(&tokenizer_bin(max, tokens), tokens.len()).unwrap()
}

// The vocabulary most tests use, with the ids the hand-worked expectations below refer to.
const SPACE: u32 = 259;
const T: u32 = 260;
const C: u32 = 265;
const A: u32 = 263;
const E_ACUTE: u32 = 266;
const THE_SPACED: u32 = 271;
const AB: u32 = 272;
const BC: u32 = 273;
const X: u32 = 275;
const Y: u32 = 276;
const YX: u32 = 277;
const NOT_A_BYTE: u32 = 278;

fn vocab_with(ab: f32, bc: f32) -> Tokenizer {
    load(&llama_like(&[
        (" ", -100.0),     // 259
        ("t", -100.0),     // 260
        ("h", -100.0),     // 261
        ("e", -100.0),     // 262
        ("a", -100.0),     // 263
        ("b", -100.0),     // 264
        ("c", -100.0),     // 265
        ("é", -100.0),     // 266
        ("th", -5.0),      // 267
        ("he", -2.0),      // 268
        (" t", -1.0),      // 269
        ("the", -3.0),     // 270
        (" the", -4.0),    // 271
        ("ab", ab),        // 272
        ("bc", bc),        // 273
        ("xy", -1e10),     // 274: at run.c's floor, never merged
        ("x", -100.0),     // 275
        ("y", -100.0),     // 276
        ("yx", -9.99e9),   // 277: just above the floor
        ("<0x4>", -100.0), // 278: not a raw-byte token (one hex digit)
    ]))
}

fn vocab() -> Tokenizer {
    vocab_with(-10.0, -20.0)
}

fn byte(b: u8) -> u32 {
    u32::from(b) + 3
}

#[test]
fn encode_merges_by_score_as_worked_by_hand() {
    let tok = vocab();
    // [" ", t, h, e]: " t" (-1) beats "he" (-2) and "th" (-5); then "he"; then " t"+"he" = " the" (-4).
    // ("the" (-3) would win over " the" if t, h, e were merged first: the order decides.)
    assert_eq!(tok.encode("the", false, false).unwrap(), [THE_SPACED]);
    assert_eq!(tok.encode("the", true, false).unwrap(), [BOS, THE_SPACED]);
    assert_eq!(tok.encode("the", true, true).unwrap(), [BOS, THE_SPACED, EOS]);
    assert_eq!(tok.encode("the", false, true).unwrap(), [THE_SPACED, EOS]);
}

#[test]
fn the_higher_score_merges_first_and_ties_go_left() {
    // "abc": "ab" and "bc" overlap, so only one of them can happen, and "abc" is no token.
    assert_eq!(vocab_with(-10.0, -20.0).encode("abc", false, false).unwrap(), [SPACE, AB, C]);
    assert_eq!(vocab_with(-20.0, -10.0).encode("abc", false, false).unwrap(), [SPACE, A, BC]);
    assert_eq!(vocab_with(-10.0, -10.0).encode("abc", false, false).unwrap(), [SPACE, AB, C]);
}

#[test]
fn merges_at_or_below_run_c_floor_never_happen() {
    let tok = vocab();
    assert_eq!(tok.encode("xy", false, false).unwrap(), [SPACE, X, Y]);
    assert_eq!(tok.encode("yx", false, false).unwrap(), [SPACE, YX]);
}

#[test]
fn unknown_characters_fall_back_to_their_bytes() {
    let tok = vocab();
    // 'z' and 'f' are no tokens; "é" is one (a 2-byte code point found whole).
    assert_eq!(tok.encode("z", false, false).unwrap(), [SPACE, byte(b'z')]);
    assert_eq!(tok.encode("café", false, false).unwrap(), [SPACE, C, A, byte(b'f'), E_ACUTE]);
    // "ü" (C3 BC) and "🙂" (F0 9F 99 82) are not in the vocabulary: one token per byte.
    assert_eq!(tok.encode("ü", false, false).unwrap(), [SPACE, byte(0xC3), byte(0xBC)]);
    assert_eq!(tok.encode("🙂", true, false).unwrap(), [BOS, SPACE, byte(0xF0), byte(0x9F), byte(0x99), byte(0x82)]);
    assert_eq!(tok.encode("a\0", false, false).unwrap(), [SPACE, A, byte(0)]);
}

#[test]
fn stray_and_overlong_utf8_bytes_group_as_run_c_groups_them() {
    let tok = load(&llama_like(&[(" ", 0.0), ("\u{80}", 0.0)]));
    // Two stray continuation bytes form one group (not a token): two byte tokens.
    assert_eq!(tok.encode_bytes(&[0x80, 0x80], false, false).unwrap(), [SPACE, byte(0x80), byte(0x80)]);
    // A lead byte takes at most 3 continuation bytes; the 4th starts a new group.
    let five = [0xE2, 0x80, 0x80, 0x80, 0x80];
    assert_eq!(
        tok.encode_bytes(&five, false, false).unwrap(),
        [SPACE, 3 + 0xE2, 3 + 0x80, 3 + 0x80, 3 + 0x80, 3 + 0x80]
    );
    // A group is looked up whole: U+0080 (C2 80) is token 260.
    assert_eq!(tok.encode_bytes(&[0xC2, 0x80], false, false).unwrap(), [SPACE, 260]);
}

#[test]
fn empty_text_has_no_dummy_prefix() {
    let tok = vocab();
    assert_eq!(tok.encode("", false, false).unwrap(), Vec::<u32>::new());
    assert_eq!(tok.encode("", true, false).unwrap(), [BOS]);
    assert_eq!(tok.encode("", false, true).unwrap(), [EOS]);
    assert_eq!(tok.encode("", true, true).unwrap(), [BOS, EOS]);
    // Whitespace alone is text: dummy prefix, then its own " ".
    assert_eq!(tok.encode(" ", false, false).unwrap(), [SPACE, SPACE]);
}

#[test]
fn bos_takes_part_in_merges_as_in_run_c() {
    // run.c merges over the whole token list, BOS included (EOS comes after the merges).
    let tok = load(&llama_like(&[(" ", 0.0), ("a", 0.0), ("\n<s>\n ", -1.0), ("a\n</s>\n", 5.0)]));
    assert_eq!(tok.encode("a", true, true).unwrap(), [261, 260, EOS]);
    assert_eq!(tok.encode("a", false, true).unwrap(), [SPACE, 260, EOS]);
}

#[test]
fn decode_strips_the_space_after_bos_and_reads_raw_bytes() {
    let tok = vocab();
    assert_eq!(tok.decode(BOS, THE_SPACED).unwrap(), b"the");
    assert_eq!(tok.decode(T, THE_SPACED).unwrap(), b" the");
    assert_eq!(tok.decode(BOS, SPACE).unwrap(), b"");
    assert_eq!(tok.decode(BOS, byte(b'\n')).unwrap(), b"\n");
    assert_eq!(tok.decode(SPACE, byte(0xC3)).unwrap(), [0xC3]);
    assert_eq!(tok.decode(SPACE, byte(0x00)).unwrap(), [0x00]);
    assert_eq!(tok.decode(SPACE, NOT_A_BYTE).unwrap(), b"<0x4>");
    assert_eq!(tok.decode(SPACE, BOS).unwrap(), b"\n<s>\n");
    assert!(matches!(tok.decode(BOS, 100_000), Err(Error::TokenOutOfRange { token: 100_000, vocab_size: 279 })));
    // Lowercase hex reads as a byte too (run.c's %X).
    let lower = load(&[(b"<unk>".to_vec(), 0.0), (b"<0xab>".to_vec(), 0.0)]);
    assert_eq!(lower.decode(0, 1).unwrap(), [0xAB]);
}

#[test]
fn decode_text_round_trips_encode() {
    let tok = vocab();
    for text in ["the", "abc", "café ü 🙂 z", " the", "two  spaces ", "\n\t", "xy yx", "<0x41>", "", "a\0b"] {
        for (bos, eos) in [(false, false), (true, false), (true, true), (false, true)] {
            let ids = tok.encode(text, bos, eos).unwrap();
            assert_eq!(tok.decode_text(&ids).unwrap(), text.as_bytes(), "{text:?} -> {ids:?}");
        }
    }
}

#[test]
fn reads_back_what_it_writes_and_keeps_non_utf8_tokens() {
    let mut tokens = llama_like(&[(" ", -1.5), ("ab", 2.25)]);
    tokens.push((vec![0xFF, 0xFE, b'x'], -7.0));
    let bin = tokenizer_bin(9, &tokens);
    let tok = Tokenizer::from_bytes(&bin, tokens.len()).unwrap();
    assert_eq!(tok.vocab_size(), 262);
    assert_eq!(tok.max_token_length(), 9);
    assert_eq!(tok.token(261), Some(&[0xFF, 0xFE, b'x'][..]));
    assert_eq!(tok.score(260), Some(2.25));
    assert_eq!(tok.id_of(b"<0x41>"), Some(0x41 + 3));
    assert_eq!(tok.decode(BOS, 261).unwrap(), [0xFF, 0xFE, b'x']);
    assert_eq!(tok.to_bytes(), bin);
    let rebuilt = Tokenizer::new(tokens.iter().map(|(t, _)| t.clone()).collect(), tokens.iter().map(|t| t.1).collect());
    assert_eq!(rebuilt.unwrap().max_token_length(), 6); // "<0x00>": the longest token
}

#[test]
fn duplicate_tokens_resolve_to_the_lowest_id() {
    let tok = load(&[(b"<unk>".to_vec(), 0.0), (b" ".to_vec(), 0.0), (b"a".to_vec(), 0.0), (b"a".to_vec(), 1.0)]);
    assert_eq!(tok.id_of(b"a"), Some(2));
    assert_eq!(tok.encode_bytes(b"a", false, false).unwrap(), [1, 2]);
}

#[test]
fn truncated_files_name_the_field() {
    let tokens = llama_like(&[(" ", 0.0), ("abc", 0.0)]);
    let bin = tokenizer_bin(6, &tokens);
    let n = tokens.len();
    let err = |len: usize| Tokenizer::from_bytes(&bin[..len], n).unwrap_err();
    match err(0) {
        Error::TokenizerTruncated { field, needed: 4, actual: 0, .. } => assert_eq!(field, "max_token_length"),
        e => panic!("{e}"),
    }
    // The last token ("abc", id 260) starts 11 bytes before the end: score, length, then 3 bytes.
    let last = bin.len() - 11;
    let cases =
        [(last + 2, "token 260's score"), (last + 6, "token 260's length"), (bin.len() - 1, "token 260's bytes")];
    for (len, expected) in cases {
        let e = err(len);
        assert!(
            matches!(&e, Error::TokenizerTruncated { field, actual, .. } if field == expected && *actual == len as u64),
            "{e}"
        );
        assert!(e.to_string().starts_with("<bytes>: the file ends inside token 260's"), "{e}");
    }
}

#[test]
fn token_lengths_out_of_range_are_refused() {
    let mut bin = tokenizer_bin(3, &[(b"ab".to_vec(), 0.0)]);
    bin[8..12].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(matches!(
        Tokenizer::from_bytes(&bin, 1),
        Err(Error::TokenLength { index: 0, len: -1, max_token_length: 3, .. })
    ));
    let bin = tokenizer_bin(1, &[(b"ab".to_vec(), 0.0)]);
    let e = Tokenizer::from_bytes(&bin, 1).unwrap_err();
    assert!(matches!(e, Error::TokenLength { index: 0, len: 2, max_token_length: 1, .. }), "{e}");
    assert_eq!(e.to_string(), "<bytes>: token 0's length 2 is outside 0..=1 (the file's max_token_length)");
    // A huge length does not allocate: it is out of range, or past the end of the file.
    let bin = tokenizer_bin(u32::MAX, &[(b"ab".to_vec(), 0.0)]);
    let mut huge = bin.clone();
    huge[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
    assert!(matches!(Tokenizer::from_bytes(&huge, 1), Err(Error::TokenizerTruncated { .. })));
    assert!(Tokenizer::from_bytes(&bin, 1).is_ok());
}

#[test]
fn a_tokenizer_of_another_vocabulary_size_is_refused() {
    let tokens = llama_like(&[(" ", 0.0)]);
    let bin = tokenizer_bin(6, &tokens);
    let e = Tokenizer::from_bytes(&bin, 300).unwrap_err();
    assert!(e.to_string().contains("token 260's score"), "{e}");
    let e = Tokenizer::from_bytes(&bin, 100).unwrap_err();
    assert!(
        matches!(&e, Error::TokenizerTrailing { vocab_size: 100, tokens_in_file, .. } if tokens_in_file == "260 tokens"),
        "{e}"
    );
    let mut garbage = bin.clone();
    garbage.extend_from_slice(&[1, 2, 3]);
    let e = Tokenizer::from_bytes(&garbage, 260).unwrap_err();
    assert!(
        matches!(&e, Error::TokenizerTrailing { extra: 3, tokens_in_file, .. } if tokens_in_file == "at least 260 tokens"),
        "{e}"
    );
    assert!(matches!(Tokenizer::from_bytes(&bin, 0), Err(Error::Invalid(_))));
}

#[test]
fn read_names_the_file() {
    let dir = std::env::temp_dir().join(format!("mote-llm-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tok.bin");
    let tokens = llama_like(&[(" ", 0.0)]);
    std::fs::write(&path, tokenizer_bin(6, &tokens)).unwrap();
    assert_eq!(Tokenizer::read(&path, 260).unwrap().vocab_size(), 260);
    let e = Tokenizer::read(&path, 261).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}: the file ends inside token 260's score", path.display())), "{e}");
    let missing = dir.join("missing.bin");
    let e = Tokenizer::read(&missing, 260).unwrap_err();
    assert!(matches!(&e, Error::Io { file, .. } if *file == missing.display().to_string()), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn encode_errors_when_the_vocabulary_lacks_a_token_it_needs() {
    // No " " token: non-empty text has no dummy prefix to use; empty text needs none.
    let no_space = load(&llama_like(&[("a", 0.0)]));
    assert!(matches!(no_space.encode("a", true, false), Err(Error::NoDummyPrefix)));
    assert_eq!(no_space.encode("", true, false).unwrap(), [BOS]);
    // A vocabulary without byte tokens cannot fall back.
    let small: Vec<(Vec<u8>, f32)> =
        ["<unk>", "<s>", "</s>", " ", "a"].iter().map(|t| (t.as_bytes().to_vec(), 0.0)).collect();
    let small = load(&small);
    assert_eq!(small.encode("a", true, true).unwrap(), [BOS, 3, 4, EOS]);
    let e = small.encode("b", false, false).unwrap_err();
    assert!(matches!(e, Error::ByteFallback { byte: b'b', token: 101, vocab_size: 5 }), "{e}");
    // BOS and EOS must exist.
    let one = load(&[(b" ".to_vec(), 0.0)]);
    assert!(matches!(one.encode("", true, false), Err(Error::TokenOutOfRange { token: BOS, vocab_size: 1 })));
    assert!(matches!(one.encode("", false, true), Err(Error::TokenOutOfRange { token: EOS, vocab_size: 1 })));
    assert!(matches!(Tokenizer::new(vec![b"a".to_vec()], vec![]), Err(Error::Invalid(_))));
    assert!(matches!(Tokenizer::new(vec![], vec![]), Err(Error::Invalid(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), vocab_size in 1usize..40,
                            text in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(tok) = Tokenizer::from_bytes(&bytes, vocab_size) {
            if let Ok(ids) = tok.encode_bytes(&text, true, true) {
                for w in ids.windows(2) {
                    let _ = tok.decode(w[0], w[1]);
                }
            }
            let _ = tok.decode_text(&[0, 1, 2, 3, u32::MAX]);
        }
    }

    #[test]
    fn truncating_a_valid_file_is_an_error(cut in 0usize..2000) {
        let tokens = llama_like(&[(" ", 0.0), ("ab", 1.0)]);
        let bin = tokenizer_bin(6, &tokens);
        let cut = cut.min(bin.len() - 1);
        prop_assert!(Tokenizer::from_bytes(&bin[..cut], tokens.len()).is_err());
    }

    #[test]
    fn any_bytes_round_trip(text in proptest::collection::vec(any::<u8>(), 0..60), bos: bool, eos: bool) {
        let tok = vocab();
        let ids = tok.encode_bytes(&text, bos, eos).unwrap();
        prop_assert_eq!(tok.decode_text(&ids).unwrap(), text);
    }

    #[test]
    fn any_string_round_trips(text in "\\PC{0,30}", bos: bool) {
        let tok = vocab();
        let ids = tok.encode(&text, bos, false).unwrap();
        prop_assert_eq!(tok.decode_text(&ids).unwrap(), text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random small vocabularies (empty, duplicate and non-UTF-8 tokens, NaN and infinite scores) and random text:
    /// encode and decode return, they never panic.
    #[test]
    fn random_vocabularies_never_panic(
        tokens in proptest::collection::vec(
            (proptest::collection::vec(prop_oneof![Just(b' '), Just(b'a'), Just(b'b'), Just(0xC3u8), Just(0xA9u8)], 0..4),
             prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), Just(-1e10f32)]),
            1..300),
        text in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'a'), Just(b'b'), Just(0xC3u8), Just(0xA9u8), any::<u8>()], 0..30),
        bos: bool, eos: bool,
    ) {
        let tok = load(&tokens);
        if let Ok(ids) = tok.encode_bytes(&text, bos, eos) {
            prop_assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            prop_assert!(tok.decode_text(&ids).is_ok());
        }
    }
}

#[test]
fn character_level_vocabulary_has_one_token_per_character() {
    // A character-level model's vocabulary: the specials and byte tokens, then single characters, no merges.
    let chars: Vec<String> = " abcdefghijklmnopqrstuvwxyz.,é".chars().map(String::from).collect();
    let extra: Vec<(&str, f32)> = chars.iter().map(|c| (c.as_str(), 0.0)).collect();
    let tok = load(&llama_like(&extra));
    let id = |c: char| 259 + chars.iter().position(|x| x.starts_with(c)).unwrap() as u32;
    let text = "a café, please.";
    let ids = tok.encode(text, true, false).unwrap();
    let want: Vec<u32> = std::iter::once(BOS).chain(std::iter::once(id(' '))).chain(text.chars().map(id)).collect();
    assert_eq!(ids, want, "BOS, the dummy-prefix space, then one token per character");
    assert_eq!(tok.decode_text(&ids).unwrap(), text.as_bytes(), "the dummy prefix is dropped after BOS");
    // A character outside the vocabulary falls back to its UTF-8 bytes.
    assert_eq!(tok.encode("ü", false, false).unwrap(), vec![id(' '), 0xC3 + 3, 0xBC + 3]);
}

#[test]
fn calibration_text_splits_into_paragraphs_at_empty_and_percent_lines() {
    let chars: Vec<String> = " abcdefghijklmnopqrstuvwxyz".chars().map(String::from).collect();
    let extra: Vec<(&str, f32)> = chars.iter().map(|c| (c.as_str(), 0.0)).collect();
    let tok = load(&llama_like(&extra));
    let text = "ab\ncd\n%\nef\n\n  \ngh\n%\n";
    let seqs = mote_llm::quant::text_sequences(&tok, text, 10, 4).unwrap();
    let decoded: Vec<Vec<u8>> = seqs.iter().map(|s| tok.decode_text(s).unwrap()).collect();
    // Three paragraphs, each BOS first and cut to 4 tokens (BOS, the dummy-prefix space, two characters).
    assert_eq!(decoded, [b"ab".to_vec(), b"ef".to_vec(), b"gh".to_vec()]);
    assert!(seqs.iter().all(|s| s.len() == 4 && s[0] == BOS));
    assert_eq!(mote_llm::quant::text_sequences(&tok, text, 2, 64).unwrap().len(), 2, "at most `limit`");
}
