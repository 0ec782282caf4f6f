import json, os, subprocess, sys
import pytest, torch
from safetensors.torch import save_file
from lincir.backbone import (BackboneError, encode_text, load_backbone, placeholder_token_id,
                             tokenize_with_placeholders, used_length, resolve_pretrained)

CAPTIONS = ['a red circle', 'a small blue square next to a green star that is large',
            'the quick brown fox jumps over the lazy dog ' * 3, '']


def test_matches_open_clip_encode_text(tiny):
    tokens = tiny.tokenize(CAPTIONS)
    ref = tiny.model.encode_text(tokens)
    for trunc in (True, False):
        assert (encode_text(tiny, tokens, truncate=trunc) - ref).abs().max() <= 1e-6


def test_truncation_is_exact_and_shorter(tiny):
    short = tiny.tokenize(CAPTIONS[:2])
    assert used_length(tiny, short) < tiny.context_length
    full = tiny.tokenize(CAPTIONS[2:3])  # fills the whole context
    assert used_length(tiny, full) == tiny.context_length
    both = tiny.tokenize(CAPTIONS)
    torch.testing.assert_close(encode_text(tiny, both), encode_text(tiny, both, truncate=False), atol=1e-6, rtol=0)


def test_pseudo_token_replaces_placeholder_embedding(tiny):
    tokens, where = tokenize_with_placeholders(tiny, ['a photo of $ that is red'])
    word = tiny.tokenize(['a photo of red that is red'])  # same length, 'red' in the slot
    red_emb = tiny.text.token_embedding.weight[word[0, where[0].nonzero().item()]][None]
    torch.testing.assert_close(encode_text(tiny, tokens, red_emb), tiny.model.encode_text(word), atol=1e-5, rtol=0)


def test_gradient_reaches_pseudo_only(tiny):
    tokens, _ = tokenize_with_placeholders(tiny, ['a $ that is red', '$ and $'])
    pseudo = torch.randn(2, tiny.width, requires_grad=True)
    encode_text(tiny, tokens, pseudo).sum().backward()
    assert pseudo.grad is not None and (pseudo.grad.abs().sum(1) > 0).all()
    assert all(p.grad is None and not p.requires_grad for p in tiny.model.parameters())


def test_placeholder_id_is_derived(tiny):
    import open_clip
    tok = open_clip.get_tokenizer('ViT-L-14')
    assert placeholder_token_id(tok) == tok.encoder['$</w>']
    assert tiny.placeholder_id == tok.encoder['$</w>']


OFFLINE_LOAD = """import json, socket
tried = []  # every name lookup, and the timeout of every connection attempt
resolve, connect = socket.getaddrinfo, socket.socket.connect
def spy_resolve(host, *a, **k): tried.append(['resolve', host]); return resolve(host, *a, **k)
def spy_connect(self, address): tried.append(['connect', self.gettimeout()]); return connect(self, address)
socket.getaddrinfo, socket.socket.connect = spy_resolve, spy_connect
from lincir.backbone import load_backbone
try: load_backbone('ViT-L-14', 'openai')
except Exception as e: print(type(e).__name__, e)
print(json.dumps(tried))
"""


def test_offline_error_is_fast_and_clear():
    """Without HF_HUB_OFFLINE and without network: a clear error after one try (a name lookup, at most one connection with
    a short timeout), not the hub's retries with its default timeouts (the 25-45 s hang)."""
    env = {k: v for k, v in os.environ.items() if k != 'HF_HUB_OFFLINE'}
    out = subprocess.run([sys.executable, '-c', OFFLINE_LOAD], capture_output=True, text=True, env=env, timeout=60).stdout
    assert 'BackboneError' in out and 'ViT-L-14' in out and "'openai'" in out and 'checkpoint' in out, out
    tried = json.loads(out.strip().splitlines()[-1])
    lookups, connections = [h for k, h in tried if k == 'resolve'], [t for k, t in tried if k == 'connect']
    assert len(lookups) == 1 and len(connections) <= 1 and all(t is not None and t <= 3 for t in connections), tried


def test_unknown_name_lists_close_names():
    with pytest.raises(BackboneError, match='ViT-B-32'):
        load_backbone('ViT-B-23', 'openai')


def test_local_checkpoint_round_trip(tiny, tmp_path):
    path = tmp_path/'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    loaded = load_backbone('lincir-tiny', str(path))
    tokens = tiny.tokenize(CAPTIONS)
    torch.testing.assert_close(encode_text(loaded, tokens), encode_text(tiny, tokens))
    img = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model.encode_image(img), tiny.model.encode_image(img))


def test_random_weights_warn():
    with pytest.warns(UserWarning, match='random weights'):
        load_backbone('lincir-tiny', None)


def test_targetpad_by_hand():
    "SEARLE's targetpad on an 8x4 image: 1 black row above and below (int((8 / 1.25 - 4) / 2)), resize to 6 (a no-op), centre crop 6x6."
    import numpy as np
    from PIL import Image
    from lincir.backbone import TargetPad, targetpad_transform
    a = (np.arange(4 * 8 * 3).reshape(4, 8, 3) * 2 + 10).astype(np.uint8)
    padded = np.zeros((6, 8, 3), np.uint8); padded[1:5] = a
    assert np.array_equal(np.asarray(TargetPad()(Image.fromarray(a))), padded)
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    want = ((padded[:, 1:7] / 255 - mean) / std).transpose(2, 0, 1)  # columns 1-6: round((8 - 6) / 2) = 1
    got = targetpad_transform(6)(Image.fromarray(a)).double().numpy()
    assert np.abs(got - want).max() < 1e-6
    assert TargetPad()(Image.new('RGB', (9, 8))).size == (9, 8)  # ratio 1.125 < 1.25: untouched
    assert TargetPad()(Image.new('RGB', (3, 9))).size == (7, 9)  # tall: 2 columns each side, int((9 / 1.25 - 3) / 2)


def test_preprocess_option(tiny):
    from lincir.backbone import with_preprocess
    tp = with_preprocess(tiny, 'targetpad')
    assert (tp.preprocess_name, tiny.preprocess_name) == ('targetpad', 'clip') and tp.model is tiny.model
    assert "preprocess='targetpad'" in repr(tp) and with_preprocess(tp, 'targetpad') is tp
    with pytest.raises(ValueError, match='targetpad'): with_preprocess(tiny, 'letterbox')
    with pytest.raises(ValueError, match='targetpad'): load_backbone('lincir-tiny', None, preprocess='letterbox')


def test_sandbox_tag_without_weights_names_path(tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_DATA', str(tmp_path))
    with pytest.raises(BackboneError, match='lincir-tiny.safetensors'):
        resolve_pretrained('lincir-tiny', 'sandbox')


FAKE_OPENAI_TAG = r'''
import json, os, sys, warnings
from pathlib import Path
import open_clip, torch
from safetensors.torch import save_file
hub = Path(os.environ['HF_HOME'])/'hub'
repo = open_clip.get_pretrained_cfg('ViT-B-32', 'openai')['hf_hub'].strip('/')      # timm/vit_base_patch32_clip_224.openai
snap = hub/('models--' + repo.replace('/', '--'))/'snapshots'/('0' * 40)
snap.mkdir(parents=True); (snap.parent.parent/'refs').mkdir(); (snap.parent.parent/'refs'/'main').write_text('0' * 40)
torch.manual_seed(0)
sd = open_clip.create_model('ViT-B-32', pretrained=None).state_dict()                 # random weights of the right shapes
save_file({k: v.half().contiguous() for k, v in sd.items()}, str(snap/'open_clip_model.safetensors'))
from lincir.backbone import load_backbone
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    bb = load_backbone('ViT-B-32', 'openai')
same = torch.equal(bb.text.token_embedding.weight, sd['token_embedding.weight'].half().float())
print(json.dumps(dict(act=bb.activations, repr=repr(bb), loaded=same, transform=repr(bb.preprocess),
                      warnings=[str(x.message) for x in w])))
'''


def test_openai_tag_loads_with_quick_gelu_from_an_offline_cache(tmp_path):
    "Weights put where open_clip looks for the `openai` tag (an offline HF cache) load into QuickGELU towers."
    env = dict(os.environ, HF_HOME=str(tmp_path/'hf'), HF_HUB_OFFLINE='1', PYTHONPATH=os.pathsep.join(sys.path))
    env.pop('HF_HUB_CACHE', None)
    r = subprocess.run([sys.executable, '-c', FAKE_OPENAI_TAG], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['loaded'], 'the weights did not come from the fake cache'
    assert out['act'] == {'text': 'QuickGELU', 'image': 'QuickGELU'}, out['act']
    assert "act='QuickGELU'" in out['repr'], out['repr']
    assert not any('QuickGELU mismatch' in m for m in out['warnings']), out['warnings']
    # the tag's transform: bicubic resize of the shorter side to 224, centre crop, OpenAI mean/std
    t = out['transform']
    assert 'bicubic' in t and 'CenterCrop' in t and '0.48145466' in t and '0.26862954' in t, t


def test_gelu_without_a_quick_gelu_tag(vit_b32):
    "load_backbone(name, None), as conftest's `vit_b32` loads them: GELU unless the name says QuickGELU."
    assert vit_b32['ViT-B-32'].activations == {'text': 'GELU', 'image': 'GELU'}
    assert vit_b32['ViT-B-32-quickgelu'].activation == 'QuickGELU'  # the name for local OpenAI files
