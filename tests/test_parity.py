"""lincir against the reference implementation's library (transformers) on identical random ViT-B/32 weights, in both
activations. The one place where parity runs at full size: nbs/00b_parity.ipynb shows the same functions on the tiny
random CLIP."""
import pytest, torch

transformers = pytest.importorskip('transformers')  # the `dev` extra
from lincir.parity import (hf_text_model, hf_to_open_clip, hf_vision_model, image_parity, open_clip_to_hf, photo_like,
                           text_parity)

NAMES = ['ViT-B-32-quickgelu', 'ViT-B-32']  # QuickGELU (OpenAI weights) and GELU (LAION weights)
CAPTIONS = ['a photo of $ that is red', 'a $ next to a $ in the park', 'a very large dog in the park', 'a ' * 80,
            'cinematic portrait of $, golden hour, 85mm, ultra detailed, trending on artstation']
PHOTOS = [(640, 480), (333, 500), (225, 301)]  # even crop margins, then an odd one


@pytest.fixture(params=NAMES)
def bb(request, vit_b32): return vit_b32[request.param]


def test_name_mapping_both_ways(bb):
    sd = bb.model.state_dict()
    for tower, model in (('text', hf_text_model(bb)), ('vision', hf_vision_model(bb))):
        hf = open_clip_to_hf(sd, tower)
        assert set(hf) == set(model.state_dict())                      # every transformers weight, nothing else
        assert all(torch.equal(hf[k], v) for k, v in model.state_dict().items())
        back = hf_to_open_clip(model.state_dict(), tower)
        assert set(back) == {k for k in sd if k.startswith('visual.') == (tower == 'vision') and k != 'logit_scale'}
        assert all(torch.equal(back[k], sd[k]) for k in back)
    assert open_clip_to_hf(sd, 'text')['text_projection.weight'].shape == (bb.embed_dim, bb.width)  # x @ P: transposed


def test_text_and_loss_match_the_reference(bb):
    hf = hf_text_model(bb)
    assert hf.config.hidden_act == {'QuickGELU': 'quick_gelu', 'GELU': 'gelu'}[bb.activation]
    assert hf.config.num_hidden_layers == 12 and bb.placeholder_id == 259  # the reference writes 259
    d = text_parity(bb, hf, CAPTIONS)
    assert max(d.values()) < 1e-5, d


def test_image_features_match_the_reference(bb):
    rows = image_parity(bb, hf_vision_model(bb), [photo_like(size, i) for i, size in enumerate(PHOTOS)])
    assert all(r['same_pixels'] < 1e-5 for r in rows), rows                                # identical towers
    assert all(r['pixels'] == 0 and r['features'] < 1e-5 for r in rows[:2]), rows          # identical preprocessing
    assert rows[2]['pixels'] > 0.1 and rows[2]['features'] > 1e-5, rows                     # odd margin: one pixel apart


def test_a_wrong_activation_is_caught(vit_b32):
    """The check can fail: GELU weights read with QuickGELU (the mistake of issue 10, the other way round), and QuickGELU
    weights in a transformers model switched to GELU (what open_clip 3.x builds for the `openai` tag unless told), are far off."""
    from transformers.activations import ACT2FN
    quick, gelu = vit_b32['ViT-B-32-quickgelu'], vit_b32['ViT-B-32']
    read_quick = hf_text_model(quick)
    read_quick.load_state_dict(open_clip_to_hf(gelu.model.state_dict(), 'text'))
    assert text_parity(gelu, read_quick, CAPTIONS[:2])['plain'] > 1e-3
    wrong = hf_text_model(quick); wrong.config.hidden_act = 'gelu'
    for layer in wrong.text_model.encoder.layers: layer.mlp.activation_fn = ACT2FN['gelu']
    assert text_parity(quick, wrong, CAPTIONS)['plain'] > 1e-3
