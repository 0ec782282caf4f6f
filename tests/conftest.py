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
