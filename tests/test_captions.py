"Caption corpora: local formats, mixing, the masked-corpus cache and its key, offline hub errors."
import json, os
import datasets
import numpy as np
import open_clip
import pyarrow as pa, pyarrow.parquet as pq
import pytest
from lincir import captions as C
from lincir.captions import CaptionError, load_captions, masked_corpus, corpus_meta, parse_source
from lincir.keywords import Rule

CAPS = ['a red circle', 'two small dogs on a sofa', 'running quickly', 'the eiffel tower at night']


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def entries(cache): return sorted(p.name for p in (cache / 'captions').iterdir() if not p.name.startswith('.'))


@pytest.fixture
def files(tmp_path):
    d = tmp_path / 'in'; d.mkdir()
    (d / 'c.txt').write_text('\n'.join(CAPS) + '\n')
    (d / 'c.json').write_text(json.dumps([{'text': c, 'n': i} for i, c in enumerate(CAPS)]))
    (d / 'strings.json').write_text(json.dumps(CAPS))
    (d / 'c.jsonl').write_text('\n'.join(json.dumps({'prompt': c}) for c in CAPS))
    (d / 'c.csv').write_text('id,caption\n' + '\n'.join(f'{i},"{c}"' for i, c in enumerate(CAPS)))
    pq.write_table(pa.table({'text': CAPS, 'score': [1.0, 2.0, 3.0, 4.0]}), d / 'c.parquet')
    return d


@pytest.mark.parametrize('name,column', [('c.txt', 'ignored'), ('c.json', 'text'), ('strings.json', 'text'),
                                         ('c.jsonl', 'prompt'), ('c.csv', 'caption'), ('c.parquet', 'text')])
def test_local_formats(files, name, column):
    ds = load_captions(str(files / name), column=column)
    assert ds.column_names == ['caption'] and ds['caption'] == CAPS


def test_non_text_column_is_cast_or_refused(files, tmp_path):
    assert load_captions(str(files / 'c.json'), column='n')['caption'] == ['0', '1', '2', '3']
    (tmp_path / 'lists.jsonl').write_text('{"text": ["a", "b"]}\n')
    with pytest.raises(CaptionError, match='not text'): load_captions(str(tmp_path / 'lists.jsonl'))


def test_mixing_limit_shuffle(files):
    ds = load_captions([str(files / 'c.txt'), str(files / 'c.parquet'), 'shapes:5'], limit=3)
    assert len(ds) == 9 and ds['caption'][:6] == CAPS[:3] * 2
    a = load_captions([str(files / 'c.txt'), 'shapes:20'], shuffle=True, seed=3)['caption']
    assert a == load_captions([str(files / 'c.txt'), 'shapes:20'], shuffle=True, seed=3)['caption']
    assert sorted(a) == sorted(CAPS + list(load_captions('shapes:20', seed=3)['caption'])) and list(a[:4]) != CAPS
    assert load_captions('shapes:20', seed=1)['caption'] != load_captions('shapes:20', seed=2)['caption']


def test_bad_input(files, tmp_path):
    with pytest.raises(CaptionError, match='not found.*nowhere.txt'): load_captions(str(tmp_path / 'nowhere.txt'))
    with pytest.raises(CaptionError, match='prompt'): load_captions(str(files / 'c.jsonl'))  # lists the columns
    with pytest.raises(CaptionError, match="'cap'.*id, caption"): load_captions(str(files / 'c.csv'), column='cap')
    (tmp_path / 'empty.txt').write_text('')
    with pytest.raises(CaptionError, match='empty'): load_captions(str(tmp_path / 'empty.txt'))
    (tmp_path / 'x.xml').write_text('<a/>')
    with pytest.raises(CaptionError, match='supported'): load_captions(str(tmp_path / 'x.xml'))
    with pytest.raises(CaptionError, match='expected a file'): load_captions('not a source')
    with pytest.raises(CaptionError, match='No caption sources'): load_captions([])


def test_only_empty_captions(tiny, tmp_path):
    (tmp_path / 'blank.txt').write_text('$$\n   \n$\n')
    with pytest.raises(CaptionError, match='No usable captions'): masked_corpus(str(tmp_path / 'blank.txt'), tiny)


def test_masked_corpus_rows(tiny, files, tmp_path):
    (tmp_path / 'mixed.txt').write_text('\n'.join(CAPS + ['', '$$$', 'A $Dog$']))
    mc = masked_corpus(str(tmp_path / 'mixed.txt'), tiny)
    assert mc.column_names == ['caption', 'masked', 'rule', 'tokens', 'masked_tokens', 'length']
    assert len(mc) == 5 and mc['caption'][-1] == 'a dog'  # empty captions dropped
    assert mc['rule'] == [Rule.KEYWORDS, Rule.KEYWORDS, Rule.RANDOM_WORD, Rule.KEYWORDS, Rule.KEYWORDS]
    r = mc.with_format('numpy')[:]
    assert r['tokens'].shape == r['masked_tokens'].shape == (5, tiny.context_length)
    assert (r['tokens'] == tiny.tokenize(list(r['caption'])).numpy()).all()
    assert (r['masked_tokens'] == tiny.tokenize(list(r['masked'])).numpy()).all()
    assert (r['masked_tokens'] == tiny.placeholder_id).any(1).all()
    eot = tiny.tokenizer.eot_token_id
    assert (r['length'] == np.maximum((r['tokens'] == eot).argmax(1), (r['masked_tokens'] == eot).argmax(1)) + 1).all()
    meta = corpus_meta(mc)
    assert meta['captions'] == 7 and meta['kept'] == 5 and meta['rules']['skipped'] == 2


def test_cache_hit_does_not_mask_again(tiny, files, cache, monkeypatch):
    calls = []
    real = C.mask_and_tokenize
    monkeypatch.setattr(C, 'mask_and_tokenize', lambda *a, **k: calls.append(1) or real(*a, **k))
    src = [str(files / 'c.txt'), 'shapes:30']
    a = masked_corpus(src, tiny, batch_size=8)
    n = len(calls)
    assert n >= 4 and len(entries(cache)) == 1
    b = masked_corpus(src, tiny, batch_size=8)
    assert len(calls) == n and len(entries(cache)) == 1
    assert a['masked'] == b['masked'] and str(cache) in b.cache_files[0]['filename']
    masked_corpus(src, tiny, batch_size=8, refresh=True)
    assert len(calls) > n and len(entries(cache)) == 1


def test_cache_key_changes_with_settings(tiny, files, cache):
    src = str(files / 'c.txt')
    masked_corpus(src, tiny)
    variants = [dict(seed=1), dict(masking='random'), dict(limit=2), dict(shuffle=True)]
    for i, kw in enumerate(variants): masked_corpus(src, tiny, **kw)
    assert len(entries(cache)) == 1 + len(variants)
    masked_corpus(src, open_clip.get_tokenizer('ViT-B-32'))  # another tokenizer (context 77)
    assert len(entries(cache)) == 2 + len(variants)
    (files / 'c.txt').write_text('a blue square\n')  # the file changed: new content, new key
    mc = masked_corpus(src, tiny)
    assert len(entries(cache)) == 3 + len(variants) and mc['caption'] == ['a blue square']
    masked_corpus('shapes:10', tiny); masked_corpus('shapes:11', tiny)
    assert len(entries(cache)) == 5 + len(variants)


def test_cache_of_the_parserless_tags_is_not_reused(tiny, files, cache, monkeypatch):
    "Corpora masked before the tags came from spaCy's whole pipeline (masking version 2, no parser) have another key."
    from lincir.keywords import MASKING_VERSION
    src = str(files / 'c.txt')
    key = corpus_meta(masked_corpus(src, tiny))['key']['masking']
    assert key['version'] == MASKING_VERSION >= 3 and key['spacy'].endswith('/tok2vec+tagger+parser+attribute_ruler')
    old_id = key['spacy'].rsplit('/', 1)[0]  # what spacy_model_id() said then: model and library versions only
    for version, spacy_id in [(2, old_id), (2, key['spacy']), (MASKING_VERSION, old_id)]:
        with monkeypatch.context() as m:
            m.setattr(C, 'MASKING_VERSION', version); m.setattr(C, 'spacy_model_id', lambda: spacy_id)
            masked_corpus(src, tiny)
    assert len(entries(cache)) == 4  # none of them read the current entry, nor it theirs
    assert corpus_meta(masked_corpus(src, tiny))['key']['masking'] == key and len(entries(cache)) == 4


def test_num_proc_gives_the_same_rows(tiny, tmp_path):
    (tmp_path / 'm.txt').write_text('\n'.join(['running quickly', 'go away now', 'a red circle', 'is it'] * 12))
    src = str(tmp_path / 'm.txt')
    one = masked_corpus(src, tiny, batch_size=5)
    two = masked_corpus(src, tiny, batch_size=7, num_proc=2, refresh=True)
    assert list(one['rule']).count(Rule.RANDOM_WORD) == 36
    assert one['masked'] == two['masked'] and one['tokens'] == two['tokens']


FORKED_AFTER_TORCH = """
import os, sys, warnings, torch
warnings.simplefilter('ignore')
import open_clip
from lincir.captions import masked_corpus
torch.set_num_threads(2)
torch.ones(2000, 2000).sum(1)  # the parent has used torch's OpenMP threads (training, a notebook)
bb = open_clip.get_tokenizer('ViT-B-32')  # 77 tokens: a batch's token arrays are big enough for torch to use threads
a = masked_corpus('shapes:3000', bb, batch_size=1000)
b = masked_corpus('shapes:3000', bb, batch_size=1000, num_proc=2, refresh=True)
assert a['tokens'] == b['tokens']
print('built')
"""


def test_num_proc_after_torch_threads_does_not_hang(tmp_path):
    "Forked masking workers of a process that already ran torch on several threads finish (they used to wait forever)."
    import signal, subprocess, sys
    env = {**os.environ, 'LINCIR_CACHE': str(tmp_path / 'cache'), 'OMP_NUM_THREADS': '2'}
    p = subprocess.Popen([sys.executable, '-c', FORKED_AFTER_TORCH], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try: out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the parent and its hung workers
        p.communicate()
        pytest.fail('masked_corpus(num_proc=2) hung after torch used its thread pool')
    assert p.returncode == 0 and 'built' in out, err[-2000:]


def test_offline_hub_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setattr(datasets, 'load_dataset', lambda *a, **k: pytest.fail('would try the network'))
    assert datasets.config.HF_HUB_OFFLINE  # conftest: HF_HUB_OFFLINE=1
    with pytest.raises(CaptionError, match=r"(?s)'dangne/gcc_caption_only'.*not cached.*local file"):
        load_captions(C.PAPER_CORPORA[0])
    # without the variable, and no network: the same error, without calling the hub
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(C, 'hub_reachable', lambda *a, **k: False)
    with pytest.raises(CaptionError, match='Geonmo/midjourney-prompts-only'): load_captions(C.PAPER_CORPORA[2])


def test_cached_hub_dataset_loads_offline(monkeypatch):
    seen = {}
    def fake_load(name, revision=None, split=None):
        seen.update(name=name, revision=revision, offline=datasets.config.HF_HUB_OFFLINE)
        return datasets.Dataset.from_dict({'text': CAPS, 'other': [0] * 4})
    monkeypatch.setattr(datasets, 'load_dataset', fake_load)
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(C, 'hub_reachable', lambda *a, **k: False)
    monkeypatch.setattr(C, '_hub_cached', lambda name: True)
    ds = load_captions('FredZhang7/stable-diffusion-prompts-2.47M@abc123')
    assert ds['caption'] == CAPS
    assert seen == dict(name='FredZhang7/stable-diffusion-prompts-2.47M', revision='abc123', offline=True)
    assert datasets.config.HF_HUB_OFFLINE is False  # restored


def test_parse_source():
    assert parse_source('shapes') == dict(kind='generator', name='shapes', n=C.GENERATORS['shapes'][1])
    assert parse_source('Geonmo/midjourney-prompts-only')['kind'] == 'hub'
    assert parse_source('data/caps.csv')['kind'] == 'file'
