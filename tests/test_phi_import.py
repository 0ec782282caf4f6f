"`python -m lincir.phi import`: released Phi checkpoints (LinCIR, SEARLE) fabricated in their formats."
import json
import pytest, torch
from lincir.phi import Phi, PhiImportError, PhiMismatchError, import_phi, load_phi, main


def _released(d, w, prefix='layers.'):
    torch.manual_seed(0)
    phi = Phi(d, w).eval()
    return phi, {prefix + k: v.clone() for k, v in phi.state_dict().items()}


def test_lincir_large_format(tmp_path):
    "lincir_large.pt: {'Phi': state dict with layers.0/3/6}, Linear 768->3072, 3072->3072, 3072->768, for ViT-L/14 OpenAI."
    phi, sd = _released(768, 768)
    assert sd['layers.3.weight'].shape == (3072, 3072)
    torch.save({'Phi': sd}, tmp_path / 'lincir_large.pt')
    main(['import', str(tmp_path / 'lincir_large.pt'), '--backbone', 'ViT-L-14', '--pretrained', 'openai', '--out', str(tmp_path / 'run')])
    meta = json.loads((tmp_path / 'run' / 'phi.json').read_text())
    assert (meta['backbone'], meta['pretrained'], meta['embed_dim'], meta['width'], meta['hidden_mult']) == ('ViT-L-14', 'openai', 768, 768, 4)
    assert meta['imported_from']['file'] == str((tmp_path / 'lincir_large.pt').resolve()) and len(meta['imported_from']['sha256']) == 64
    x = torch.randn(4, 768)
    torch.testing.assert_close(load_phi(tmp_path / 'run')(x), phi(x))


def test_searle_format(tmp_path):
    "SEARLE_ViT-B32.pt: {'epoch': n, 'Phi': state dict}, Linear 512->2048->2048->512, for ViT-B/32 OpenAI."
    phi, sd = _released(512, 512)
    torch.save({'epoch': 12, 'Phi': sd}, tmp_path / 'SEARLE_ViT-B32.pt')
    w = import_phi(tmp_path / 'SEARLE_ViT-B32.pt', 'ViT-B-32', 'openai', tmp_path / 'searle')
    assert json.loads(w.with_suffix('.json').read_text())['imported_from']['epoch'] == 12
    x = torch.randn(2, 512)
    torch.testing.assert_close(load_phi(w)(x), phi(x))


def test_refusals(tmp_path):
    phi, sd = _released(512, 512)
    torch.save({'Phi': sd}, tmp_path / 'b32.pt')
    with pytest.raises(PhiMismatchError, match='another backbone'): import_phi(tmp_path / 'b32.pt', 'ViT-L-14', 'openai', tmp_path / 'x')
    with pytest.raises(PhiImportError, match='not found'): import_phi(tmp_path / 'nope.pt', 'ViT-B-32', 'openai', tmp_path / 'x')
    torch.save({'Phi': sd, 'training_path': tmp_path}, tmp_path / 'pickle.pt')  # SEARLE's training checkpoints hold a Path
    with pytest.raises(PhiImportError, match='weights_only=True'): import_phi(tmp_path / 'pickle.pt', 'ViT-B-32', 'openai', tmp_path / 'x')
    torch.save({'state_dict_img2text': {'fc.weight': torch.zeros(2, 2)}}, tmp_path / 'pic2word.pt')
    with pytest.raises(PhiImportError, match="key 'Phi'"): import_phi(tmp_path / 'pic2word.pt', 'ViT-B-32', 'openai', tmp_path / 'x')
    torch.save({'Phi': {'layers.0.weight': torch.zeros(2, 2)}}, tmp_path / 'other.pt')
    with pytest.raises(PhiImportError, match='not the Phi MLP'): import_phi(tmp_path / 'other.pt', 'ViT-B-32', 'openai', tmp_path / 'x')
    with pytest.raises(PhiImportError, match='Unknown backbone'): import_phi(tmp_path / 'b32.pt', 'ViT-B-23', 'openai', tmp_path / 'x')
    assert not (tmp_path / 'x').exists()
