"The shipped sandbox CLIP (data/shapes-clip.*) meets its targets on freshly rendered Shapes images."
import json
import pytest, torch, open_clip
from safetensors import safe_open
from lincir.backbone import load_backbone, data_dir, encode_images, encode_text, CONFIG_DIR
from lincir.shapes import zero_shot_accuracy, text_to_image_recall

ZERO_SHOT_TARGET, RECALL_TARGET = 0.85, 0.95
FRESH_SEEDS = dict(zero_shot=7001, recall=7002)  # neither training (0, 1) nor the notebook's measurements (1001, 1002)

@pytest.fixture(scope='module')
def bb():
    return load_backbone('shapes-clip', 'sandbox')

@pytest.fixture(scope='module')
def encoders(bb):
    def images(ims): return encode_images(bb, ims, batch_size=500, progress=False)
    @torch.no_grad()
    def texts(txt): return encode_text(bb, bb.tokenize(txt))
    return images, texts

def test_files_shipped():
    weights, facts = data_dir()/'shapes-clip.safetensors', json.loads((data_dir()/'shapes-clip.json').read_text())
    assert weights.stat().st_size < 21e6
    with safe_open(str(weights), 'pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64}
    assert facts['model_config'] == json.loads((CONFIG_DIR/'shapes-clip.json').read_text())
    assert facts['metrics']['zero_shot_96way'] >= ZERO_SHOT_TARGET and facts['metrics']['text_to_image_R5'] >= RECALL_TARGET

def test_standard_tokenizer(bb):
    assert bb.context_length == 32
    assert bb.placeholder_id == open_clip.get_tokenizer('ViT-B-32').encoder['$</w>']

def test_zero_shot_96way(encoders):
    acc = zero_shot_accuracy(*encoders, n_per_kind=10, seed=FRESH_SEEDS['zero_shot'])
    assert acc >= ZERO_SHOT_TARGET, acc

def test_text_to_image_recall_at_5(encoders):
    r5 = text_to_image_recall(*encoders, n=1000, k=5, seed=FRESH_SEEDS['recall'])
    assert r5 >= RECALL_TARGET, r5
