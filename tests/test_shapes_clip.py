"The shipped sandbox CLIP (data/shapes-clip.*) meets its targets on freshly rendered Shapes images, with a modality gap like a real CLIP's."
import json
import pytest, torch, open_clip
from safetensors import safe_open
from lincir.backbone import load_backbone, data_dir, encode_images, encode_text, CONFIG_DIR
from lincir.shapes import zero_shot_accuracy, text_to_image_recall, modality_gap, gap_set

ZERO_SHOT_TARGET, RECALL_TARGET = 0.85, 0.95
# a real CLIP's gap: matched image-caption cosine about 0.3 (Hessel et al. 2021, CLIPScore), centroid distance 0.82 for
# ViT-B/32 on MS-COCO (Liang et al. 2022, "Mind the Gap")
COSINE_RANGE, MIN_CENTROID_DISTANCE = (0.2, 0.4), 0.6
FRESH_SEEDS = dict(zero_shot=7001, recall=7002, gap=7003)  # neither training (0, 1) nor the notebook's measurements (1001, 1002)

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
    gap = facts['metrics']['gap']
    assert COSINE_RANGE[0] <= gap['cosine'] <= COSINE_RANGE[1] and gap['centroid_distance'] >= MIN_CENTROID_DISTANCE, gap

def test_standard_tokenizer(bb):
    assert bb.context_length == 32
    assert bb.placeholder_id == open_clip.get_tokenizer('ViT-B-32').encoder['$</w>']

def test_zero_shot_96way(encoders):
    acc = zero_shot_accuracy(*encoders, n_per_kind=10, seed=FRESH_SEEDS['zero_shot'])
    assert acc >= ZERO_SHOT_TARGET, acc

def test_text_to_image_recall_at_5(encoders):
    r5 = text_to_image_recall(*encoders, n=1000, k=5, seed=FRESH_SEEDS['recall'])
    assert r5 >= RECALL_TARGET, r5

def test_modality_gap(encoders):
    g = modality_gap(*encoders, *gap_set(500, seed=FRESH_SEEDS['gap']))
    assert COSINE_RANGE[0] <= g['cosine'] <= COSINE_RANGE[1], g
    assert g['centroid_distance'] >= MIN_CENTROID_DISTANCE, g
    assert g['text_neighbour'] < 0.05, g  # an image's nearest neighbour is another image, as in a real CLIP
    assert g['own_caption_top1'] > 0.5, g  # and retrieval across the gap still finds its caption
