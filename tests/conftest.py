import os, warnings
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import pytest, torch


@pytest.fixture(scope='session')
def tiny():
    "The random tiny CLIP shipped for tests."
    from lincir.backbone import load_backbone
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0)
        return load_backbone('lincir-tiny')


@pytest.fixture(scope='session')
def vit_b32():
    "ViT-B/32 CLIPs with random weights, QuickGELU (as OpenAI's weights) and GELU (as LAION's), loaded once for the session."
    from lincir.backbone import load_backbone
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for name in ('ViT-B-32-quickgelu', 'ViT-B-32'): torch.manual_seed(0); out[name] = load_backbone(name, None)
    return out
