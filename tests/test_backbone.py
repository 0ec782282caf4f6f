import os, subprocess, sys, time, warnings
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


def test_offline_error_is_fast_and_clear():
    env = {k: v for k, v in os.environ.items() if k != 'HF_HUB_OFFLINE'}
    code = ("from lincir.backbone import load_backbone\n"
            "try: load_backbone('ViT-L-14', 'openai')\n"
            "except Exception as e: print(type(e).__name__, e)\n")
    t = time.time()
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=60).stdout
    assert 'BackboneError' in out and 'ViT-L-14' in out and "'openai'" in out and 'checkpoint' in out, out
    assert time.time() - t < 30  # a bound far below the 25-45 s hang, not a benchmark


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


def test_sandbox_tag_without_weights_names_path(tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_DATA', str(tmp_path))
    with pytest.raises(BackboneError, match='lincir-tiny.safetensors'):
        resolve_pretrained('lincir-tiny', 'sandbox')
