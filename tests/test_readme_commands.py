"""Every command the README or a notebook's prose shows for a real backbone, corpus or benchmark runs, offline, up to
where it must stop.

Offline (HF_HUB_OFFLINE=1) a paper-scale command cannot get far: the weights, the caption datasets and the
benchmark images are not here. What it must not do is stop for a reason a user *with* network access would also
hit (a hub name taken for a missing file, an argument error, a refused default). So each command is run in-process
as the user would run it (the CLI entry point; a papermill notebook's cells after papermill's parameter parsing)
until it raises, and the error must be one of: weights not in the cache, caption dataset not cached, benchmark
folder not found. Then each later stage is checked on its own as if the earlier one had succeeded (weights present:
the captions must be hub datasets that are only missing from the cache; the validation benchmark only missing on
disk), so a problem hidden behind the first error still fails this test.
"""
import json, os, re, shlex
from pathlib import Path

import pytest

from tests.helpers import run_notebook

REPO = Path(__file__).resolve().parents[1]
README = (REPO/'README.md').read_text()


def _notebook_prose(path:Path) -> str:
    "The markdown cells of a notebook, where the commands moved out of the README are shown."
    cells = json.loads(path.read_text())['cells']
    return '\n\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')


# What a user reads: the README, then every notebook's prose (dataset layouts, imports, the papermill variants).
DOCS = '\n\n'.join([README, *(_notebook_prose(p) for p in sorted((REPO/'nbs').glob('*.ipynb')))])
REAL = re.compile(r'ViT-|openai|laion|dangne/|/data/|lincir\.phi import|zeroshot-cir-models')

# What a command may stop on, offline: (exception class name, text the message must contain)
ALLOWED = {'BackboneError': 'not in the cache', 'CaptionError': 'not cached', 'LayoutError': 'not found',
           'PhiImportError': 'not found'}


def _commands(text:str) -> list[list[str]]:
    "The shell commands of the README's ```bash blocks, continuations joined, `X=...` variables expanded."
    cmds = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        env = {}
        for line in block.replace('\\\n', ' ').splitlines():
            m = re.fullmatch(r'\s*([A-Z_]+)="(.*)"\s*', line)
            if m: env[m[1]] = m[2]; continue
            for k, v in env.items(): line = line.replace(f'${k}', v)
            argv = shlex.split(line, comments=True)
            if argv: cmds.append(argv)
    return cmds


def real_commands(text:str=DOCS) -> list[list[str]]:
    "The commands for real data in `text` (the README and the notebooks' prose), each once."
    cmds = [c for c in _commands(text) if REAL.search(' '.join(c))]
    return [c for i, c in enumerate(cmds) if c not in cmds[:i]]


def _allowed(e:BaseException) -> bool:
    want = ALLOWED.get(type(e).__name__)
    return want is not None and want in str(e)


def _check_stop(e:BaseException, argv):
    assert _allowed(e), f"README command refused for a reason a connected user would hit too:\n  {shlex.join(argv)}\n  {type(e).__name__}: {e}"


def _papermill_params(args:list[str]) -> dict:
    "papermill's own parsing of `-p name value` (and `-y yaml`)."
    import yaml
    from papermill.cli import _resolve_type
    params, i = {}, 0
    while i < len(args):
        if args[i] in ('-p', '--parameters'): params[args[i+1]] = _resolve_type(args[i+2]); i += 3
        elif args[i] in ('-y', '--parameters_yaml'): params.update(yaml.safe_load(args[i+1])); i += 2
        elif args[i] in ('-r', '--parameters_raw'): params[args[i+1]] = args[i+2]; i += 3
        else: raise AssertionError(f"unexpected papermill argument {args[i]!r} in the README")
    return params


def _train_config(argv:list[str]):
    "The TrainConfig a training command builds (CLI flags or train.ipynb parameters), validated with the weights assumed present."
    import lincir.train_config as T
    if argv[0] == 'papermill':
        return run_notebook(REPO/argv[1], _papermill_params(argv[3:]), until='validate()')['cfg']
    return T.parse_args(argv[argv.index('lincir.training') + 1:]).validate()


def _check_later_stages(cfg):
    "Captions: hub datasets only missing from the cache; validation benchmark: only missing on disk."
    from lincir.benchmarks import VALIDATION_SPLITS, load_benchmark
    from lincir.captions import load_captions, parse_source
    for src in cfg.captions:
        assert parse_source(src)['kind'] == 'hub', src
        with pytest.raises(Exception) as e: load_captions([src], column=cfg.caption_column)
        _check_stop(e.value, [src])
    if cfg.val_benchmark:
        name, _, folder = cfg.val_benchmark.partition(':')
        with pytest.raises(Exception) as e: load_benchmark(name, folder or None, VALIDATION_SPLITS[name])
        _check_stop(e.value, [cfg.val_benchmark])


def _run(argv:list[str]):
    "Run one README command in-process until it stops; returns the exception."
    if Path(argv[0]).name == 'python': argv = ['python', *argv[1:]]  # `.venv/bin/python` is the same command
    if argv[0] == 'torchrun' or argv[:3] == ['python', '-m', 'lincir.training']:
        from lincir.training import main
        main(argv[argv.index('lincir.training') + 1:])
    elif argv[0] == 'python' and argv[1:3] == ['-m', 'lincir.phi']:
        from lincir.phi import main
        main(argv[3:])
    elif argv[0] == 'papermill':
        run_notebook(REPO/argv[1], _papermill_params(argv[3:]))
    elif argv[1:3] == ['-m', 'lincir.search']:  # the user's shell expands `~`; their photo folder exists
        from PIL import Image
        from lincir.search import main
        args = [os.path.expanduser(a) for a in argv[3:]]
        photos = Path(args[1]); (photos/'holidays').mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (64, 48), 'brown').save(photos/'holidays'/'dog.jpg')
        main(args)
    elif argv[0] in ('hf', 'huggingface-cli', 'curl'):
        pytest.skip('a download; needs the network')
    else: raise AssertionError(f"the test does not know how to run this README command: {shlex.join(argv)}")


@pytest.fixture
def offline_here(tmp_path, monkeypatch):
    "A fresh working directory (run folders land there), offline hub, empty caches."
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('HOME', str(tmp_path/'home'))  # `~/Pictures` in the README
    for k in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE'): monkeypatch.setenv(k, '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path/'hf'))
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path/'hf'/'datasets'))
    import datasets, huggingface_hub.constants as C
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', tmp_path/'hf'/'datasets')
    monkeypatch.setattr(C, 'HF_HUB_CACHE', str(tmp_path/'hf'/'hub'))
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(C, 'HF_HUB_OFFLINE', True)
    return tmp_path


def test_readme_lists_the_real_commands():
    cmds = [shlex.join(c) for c in real_commands()]
    assert sum('lincir.training' in c for c in cmds) >= 1, cmds
    assert sum('nbs/train.ipynb' in c for c in cmds) >= 1, cmds
    assert sum('nbs/evaluate.ipynb' in c for c in cmds) >= 6, cmds
    assert sum('nbs/demo.ipynb' in c for c in cmds) >= 1, cmds
    assert sum('lincir.phi import' in c for c in cmds) >= 1, cmds  # the released checkpoint
    # The README itself keeps the paper-scale commands: training as the paper (fp16, validation at step 50 too),
    # evaluation on every benchmark, photo search.
    own = [shlex.join(c) for c in real_commands(README)]
    train = [c for c in own if 'lincir.training' in c]
    assert train and all('--precision fp16' in c and '--val_also_at 50' in c for c in train), train
    assert {b for c in own for b in ('cirr', 'circo', 'fashioniq', 'genecis') if f'-p benchmark {b}' in c} == \
        {'cirr', 'circo', 'fashioniq', 'genecis'}, own
    assert sum('lincir.search' in c for c in own) >= 2, own


@pytest.mark.parametrize('argv', real_commands(), ids=lambda a: ' '.join(a)[:90])
def test_readme_command_stops_only_on_missing_data(argv, offline_here):
    with pytest.raises(BaseException) as e: _run(argv)
    if e.type is pytest.skip.Exception: raise e.value
    _check_stop(e.value, argv)
    if 'lincir.training' in argv or 'nbs/train.ipynb' in argv:
        import lincir.train_config as T
        with pytest.MonkeyPatch.context() as m:  # as if the weights were in the cache
            m.setattr(T, 'resolve_pretrained', lambda name, pretrained, cache_dir=None: pretrained)
            cfg = _train_config(argv)
        _check_later_stages(cfg)
    if 'nbs/evaluate.ipynb' in argv or 'nbs/demo.ipynb' in argv:
        from lincir.backbone import resolve_pretrained
        p = _papermill_params(argv[3:])
        with pytest.raises(Exception) as e: resolve_pretrained(p['backbone'], p['pretrained'])
        _check_stop(e.value, argv)


def test_readme_python_example_stops_on_missing_weights(offline_here):
    "The README's `lincir.search` snippet stops at the first line that needs the weights."
    block = next(b for b in re.findall(r'```python\n(.*?)```', DOCS, re.S) if 'load_backbone' in b)
    with pytest.raises(Exception) as e: exec(block, {})
    _check_stop(e.value, ['README python example'])


def test_readme_other_backbones_resolve(offline_here):
    "Every `--backbone X --pretrained Y` / `-p backbone X -p pretrained Y` pair the README or a notebook names is a known tag, only not cached."
    from lincir.backbone import resolve_pretrained
    text = re.sub(r'\s+', ' ', DOCS)  # a pair may be wrapped across lines
    pairs = set(re.findall(r'--backbone (\S+) --pretrained ([\w.-]+)', text))
    pairs |= set(re.findall(r'-p backbone (\S+) -p pretrained ([\w.-]+)', text))
    sandbox = {(name, tag) for name, tag in pairs if tag == 'sandbox'} | {('shapes-clip', 'sandbox')}
    for name, tag in sandbox: assert resolve_pretrained(name, tag)  # the sandbox CLIPs' weights are shipped: they resolve offline
    assert {('ViT-L-14', 'openai'), ('ViT-H-14', 'laion2b_s32b_b79k'), ('ViT-bigG-14', 'laion2b_s39b_b160k')} <= pairs
    for name, tag in pairs - sandbox:
        with pytest.raises(Exception) as e: resolve_pretrained(name, tag)
        _check_stop(e.value, [name, tag])


def test_the_checker_rejects_what_a_connected_user_would_hit(offline_here):
    "The test itself can fail: the old validation's 'caption file not found' for a hub name is not an allowed stop."
    from lincir.train_config import TrainConfig
    with pytest.raises(Exception) as e: TrainConfig(captions=['no/such_file.txt']).validate()
    assert not _allowed(e.value)
    with pytest.raises(SystemExit): _run(['python', '-m', 'lincir.training', '--no_such_flag', '1'])
