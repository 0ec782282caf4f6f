"""A folder lincir writes belongs to one writer (issue 20): a training run, an import of one checkpoint file, or one
evaluation. Another writer refuses it, naming the folder and what it holds; files lincir did not write are left alone;
what it writes follows the umask."""
import json, os, shutil, socket
from pathlib import Path

import pytest, torch

from lincir.files import FolderOwnedError
from lincir.phi import Phi, main as phi_main
from lincir.training import train

from tests.helpers import DEAD_PID, ScoreValidator, cfg_for, corpus_for, run_notebook

REPO = Path(__file__).resolve().parents[1]


def released(path, seed=0):
    "A released Phi checkpoint for ViT-B-32 in LinCIR's format ({'Phi': state dict with layers.*})."
    torch.manual_seed(seed)
    torch.save({'Phi': {f'layers.{k}': v for k, v in Phi(512, 512).state_dict().items()}}, path)
    return path


def import_into(checkpoint, out):
    phi_main(['import', str(checkpoint), '--backbone', 'ViT-B-32', '--pretrained', 'openai', '--out', str(out)])


def contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in Path(folder).rglob('*') if p.is_file()}


def test_import_refuses_a_training_run(tiny, tmp_path):
    "Case 6: `python -m lincir.phi import --out RUN` is refused, naming the folder and that it holds a training run."
    train(cfg_for(tmp_path, steps=2), corpus=corpus_for(tiny), progress=False)
    run = tmp_path / 'run'
    before = contents(run)
    with pytest.raises(FolderOwnedError, match=rf"{run} holds a training run"):
        import_into(released(tmp_path / 'lincir_large.pt'), run)
    assert contents(run) == before


def test_import_folder_holds_one_import(tmp_path):
    "Case 6: the same file may be imported again into its folder; another file, or a folder with other files, is refused."
    a, b, out = released(tmp_path / 'a.pt', 0), released(tmp_path / 'b.pt', 1), tmp_path / 'phi'
    import_into(a, out)
    first = contents(out)
    import_into(a, out)  # again: the same import
    assert contents(out).keys() == first.keys()
    with pytest.raises(FolderOwnedError, match=rf"{out} holds an import of {a}"): import_into(b, out)
    assert contents(out) == first
    (tmp_path / 'notes').mkdir(); (tmp_path / 'notes' / 'todo.txt').write_text('x')
    with pytest.raises(FolderOwnedError, match=rf"{tmp_path / 'notes'} already holds todo.txt"):
        import_into(a, tmp_path / 'notes')
    assert sorted(p.name for p in (tmp_path / 'notes').iterdir()) == ['todo.txt']


def test_training_refuses_an_import_folder(tiny, tmp_path):
    "Case 6, the other way round: training into a folder holding an imported Phi is refused before anything is written."
    out = tmp_path / 'run'
    import_into(released(tmp_path / 'a.pt'), out)
    before = contents(out)
    with pytest.raises(FolderOwnedError, match=rf"{out} holds an import of"):
        train(cfg_for(tmp_path, steps=2), corpus=corpus_for(tiny), progress=False)
    assert contents(out) == before


@pytest.fixture
def cirr(tmp_path, monkeypatch):
    from lincir.shapescir import write_cirr_fixture
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    monkeypatch.chdir(tmp_path)
    return write_cirr_fixture(tmp_path / 'cirr', n_queries=3)


def evaluate(cirr, **params):
    "nbs/evaluate.ipynb, executed as papermill runs it, on the CIRR fixture with the tiny backbone."
    import matplotlib; matplotlib.use('Agg')
    run_notebook(REPO / 'nbs' / 'evaluate.ipynb', dict(benchmark='cirr', data_dir=str(cirr), backbone='lincir-tiny',
                                                        pretrained=None, **params))


def test_evaluations_do_not_mix_in_one_folder(cirr, tmp_path):
    "Case 8: a second evaluation with other settings into the same out_dir is refused, naming the first; nothing changes."
    out = tmp_path / 'eval'
    evaluate(cirr, split='test1', method='image,sum', out_dir=str(out))
    before = contents(out)
    assert {'metrics.json', 'rankings.json', 'rankings_sum.json', 'cirr_test1_recall.json'} <= {p.name for p in before}
    with pytest.raises(FolderOwnedError, match=rf"{out} holds an evaluation of cirr test1"):
        evaluate(cirr, split='val', method='image', out_dir=str(out))
    assert contents(out) == before


def test_evaluation_refuses_a_training_run(tiny, cirr, tmp_path):
    "Case 8: an evaluation's out_dir that holds a training run is refused (its config.json would be overwritten)."
    train(cfg_for(tmp_path, steps=2), corpus=corpus_for(tiny), progress=False)
    before = contents(tmp_path / 'run')
    with pytest.raises(FolderOwnedError, match=rf"{tmp_path / 'run'} holds a training run"):
        evaluate(cirr, split='val', method='image', out_dir=str(tmp_path / 'run'))
    assert contents(tmp_path / 'run') == before


def test_rerunning_an_evaluation_replaces_all_its_files(tiny, cirr, tmp_path):
    "Case 8: the same evaluation again replaces its own files: none of the previous run's is left beside the new ones."
    from lincir.phi import save_phi
    save_phi(Phi.for_backbone(tiny), tmp_path / 'runs' / 'main', tiny)  # the default phi, runs/main
    out = tmp_path / 'eval'
    evaluate(cirr, split='val', method='all', out_dir=str(out))
    assert json.loads((out / 'metrics.json').read_text())['main_method'] == 'lincir'
    assert (out / 'rankings_image.json').exists()
    shutil.rmtree(tmp_path / 'runs')  # LinCIR is skipped now: rankings.json is the image baseline's
    evaluate(cirr, split='val', method='all', out_dir=str(out))
    assert json.loads((out / 'metrics.json').read_text())['main_method'] == 'image'
    assert not (out / 'rankings_image.json').exists()


def test_every_file_of_a_run_follows_the_umask(tiny, tmp_path):
    "Case 13: under umask 022 every file of a run, the checkpoint's optimizer state included, is 0644 (folders 0755)."
    old = os.umask(0o022)
    try: train(cfg_for(tmp_path, steps=2, val_every=2, ema=0.9), corpus=corpus_for(tiny), validator=ScoreValidator(),
               progress=False)
    finally: os.umask(old)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in (tmp_path / 'run').rglob('*')}
    assert 'run/checkpoint/optimizer.safetensors' in modes and 'run/best/phi.safetensors' in modes
    assert {p: m for p, m in modes.items() if m != (0o755 if (tmp_path / p).is_dir() else 0o644)} == {}


def test_training_leaves_files_it_did_not_write(tiny, tmp_path):
    "Case 14: names that look like leftovers but are not lincir's are neither renamed nor deleted."
    run, host = tmp_path / 'run', socket.gethostname()
    run.mkdir()
    foreign = {'.notes.old': 'my notes', f'.config.tmp-{host}.{DEAD_PID}-x': 'mine', '.checkpoint.old.txt': 'mine too'}
    for name, text in foreign.items(): (run / name).write_text(text)
    train(cfg_for(tmp_path, steps=2), corpus=corpus_for(tiny), progress=False)
    assert {n: (run / n).read_text() for n in foreign if (run / n).exists()} == foreign
    assert not (run / 'notes').exists()
