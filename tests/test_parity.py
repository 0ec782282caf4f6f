"lincir against the reference implementation's library (transformers) on identical random ViT-B/32 weights."
import warnings
import pytest, torch

transformers = pytest.importorskip('transformers')  # the `dev` extra
from lincir.backbone import load_backbone
from lincir.parity import (hf_text_model, hf_to_open_clip, hf_vision_model, image_parity, open_clip_to_hf, photo_like,
                           text_parity)

CAPTIONS = ['a photo of $ that is red', 'a $ next to a $', 'a very large dog in the park', 'a ' * 80]


@pytest.fixture(scope='module', params=['ViT-B-32-quickgelu', 'ViT-B-32'])
def bb(request):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0)
        return load_backbone(request.param, None)


def test_name_mapping_both_ways(bb):
    sd = bb.model.state_dict()
    for tower, model in (('text', hf_text_model(bb)), ('vision', hf_vision_model(bb))):
        hf = open_clip_to_hf(sd, tower)
        assert set(hf) == set(model.state_dict())                      # every transformers weight, nothing else
        assert all(torch.equal(hf[k], v) for k, v in model.state_dict().items())
        back = hf_to_open_clip(model.state_dict(), tower)
        assert set(back) == {k for k in sd if k.startswith('visual.') == (tower == 'vision') and k != 'logit_scale'}
        assert all(torch.equal(back[k], sd[k]) for k in back)


def test_text_and_loss_match_the_reference(bb):
    hf = hf_text_model(bb)
    assert hf.config.hidden_act == {'QuickGELU': 'quick_gelu', 'GELU': 'gelu'}[bb.activation]
    d = text_parity(bb, hf, CAPTIONS)
    assert max(d.values()) < 1e-5, d


def test_image_features_match_the_reference(bb):
    rows = image_parity(bb, hf_vision_model(bb), [photo_like((640, 480), 0), photo_like((225, 301), 1)])
    assert all(r['same_pixels'] < 1e-5 for r in rows), rows        # identical towers
    assert rows[0]['pixels'] == 0 and rows[0]['features'] < 1e-5, rows  # identical preprocessing (even crop margin)
    assert rows[1]['pixels'] > 0                                        # odd margin: crops one pixel apart


def test_a_wrong_activation_is_caught():
    "GELU weights read with QuickGELU (the mistake of issue 10, the other way round) are far off."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0)
        gelu, quick = load_backbone('ViT-B-32', None), load_backbone('ViT-B-32-quickgelu', None)
    quick.model.load_state_dict(gelu.model.state_dict())
    assert text_parity(gelu, hf_text_model(quick), CAPTIONS[:2])['plain'] > 1e-3
