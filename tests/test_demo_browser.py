"""The demo as a person meets it: JupyterLab started here on 127.0.0.1, the demo opened in Debian's Chromium
(driven by Playwright for Python, not Playwright's own browser download), Run All, every control used, and the
notebook saved through Jupyter must stay nbdev-clean.

It works on a temporary copy (the demo notebook, settings.ini, a seeded random Phi in runs/main), so the
repository's notebook is never touched. Screenshots go to the test's tmp folder (`pytest --basetemp=DIR` to keep
them somewhere visible). Without /usr/bin/chromium or the python `playwright` package the browser test is skipped
locally and fails in CI (CI=true); tests/run_all.sh installs chromium when it is missing."""
import json, os, re, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get('LINCIR_CHROMIUM', '/usr/bin/chromium'))
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
TOKEN = 'lincir-demo-test'
# The cache the session started with: read at collection, before any test fixture may have redirected it (the
# demo's kernel must find the sandbox gallery's features that nbdev_test already computed, not encode them again).
SESSION_CACHE = os.environ.get('LINCIR_CACHE')


def need_browser():
    "Skip (locally) or fail (CI) with the fix when the browser or Playwright is missing."
    why = None
    try: import playwright.sync_api  # noqa: F401
    except ImportError: why = "the python package playwright is missing: pip install -e '.[dev]' (or `make test`)"
    if why is None and not os.access(CHROMIUM, os.X_OK):
        why = f"{CHROMIUM} is missing: apt-get install chromium (Debian; tests/run_all.sh does it as root)"
    if why is None: return
    if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'): pytest.fail(f"browser test cannot run: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def is_nbdev_clean(nb:Path) -> bool:
    "What `make test` checks: nbdev_clean leaves the file unchanged."
    before = nb.read_bytes()
    subprocess.run([sys.executable, '-c', 'from nbdev.clean import nbdev_clean; nbdev_clean()', '--fname', str(nb)],
                   check=True, cwd=nb.parent, capture_output=True)
    after = nb.read_bytes()
    nb.write_bytes(before)
    return before == after


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab on a copy of the demo (with a random Phi in runs/main), configured as `make demo` does."
    import torch
    from lincir.backbone import load_backbone
    from lincir.phi import Phi, save_phi
    root = tmp_path_factory.mktemp('lab')
    (root/'nbs').mkdir()
    shutil.copy(ROOT/'nbs'/'demo.ipynb', root/'nbs'); shutil.copy(ROOT/'settings.ini', root)
    bb = load_backbone('shapes-clip', 'sandbox')
    torch.manual_seed(0); save_phi(Phi.for_backbone(bb), root/'runs'/'main', bb)  # untrained: the UI is tested, not the model
    port, private = free_port(), root/'.jupyter-private'
    news = private/'settings'/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings'
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))  # no "Jupyter news?" pop-up over the demo
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
               JUPYTER_CONFIG_PATH=str(ROOT/'.jupyter'), JUPYTERLAB_SETTINGS_DIR=str(private/'settings'),
               JUPYTERLAB_WORKSPACES_DIR=str(private/'workspaces'), JUPYTER_RUNTIME_DIR=str(private/'runtime'),
               HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    env.pop('LINCIR_CACHE', None)
    if SESSION_CACHE: env['LINCIR_CACHE'] = SESSION_CACHE
    cmd = [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
           f'--IdentityProvider.token={TOKEN}', f'--ServerApp.root_dir={root}']
    if os.getuid() == 0: cmd.append('--allow-root')  # what `make demo` adds for root
    log = open(root/'jupyter.log', 'w')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            if proc.poll() is not None: break
            try: urllib.request.urlopen(f'{url}/api/status?token={TOKEN}', timeout=2); break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f"JupyterLab did not answer within 120 s; log: {root/'jupyter.log'}")
        if proc.poll() is not None: pytest.fail(f"JupyterLab exited: {(root/'jupyter.log').read_text()[-2000:]}")
        yield dict(url=url, root=root, notebook=root/'nbs'/'demo.ipynb')
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


def api(lab, path, method='GET', body=None):
    req = urllib.request.Request(f"{lab['url']}/api/contents/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={'Content-Type': 'application/json', 'Authorization': f'token {TOKEN}'})
    with urllib.request.urlopen(req, timeout=30) as r: return json.load(r)


def test_saving_through_jupyter_keeps_notebook_clean(lab):
    "What a save in JupyterLab sends (outputs, execution counts, cell metadata) is written nbdev-clean."
    model = api(lab, 'nbs/demo.ipynb?content=1')
    nb = model['content']
    nb['metadata']['widgets'] = {'application/vnd.jupyter.widget-state+json': {'state': {}, 'version_major': 2}}
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    for n, c in enumerate(code):
        c['execution_count'] = n + 1
        c['metadata'].update(execution={'iopub.status.busy': '2026-01-01T00:00:00Z'}, scrolled=True)
        c['outputs'] = [{'output_type': 'stream', 'name': 'stdout', 'text': f'output {n}\n'}]
    tmp = lab['root']/'nbs'/'saved.ipynb'
    shutil.copy(lab['notebook'], tmp)  # a save replaces an existing notebook (nbdev's hook trusts the file it replaces)
    api(lab, 'nbs/saved.ipynb', 'PUT', {'type': 'notebook', 'format': 'json', 'content': nb})
    saved = json.loads(tmp.read_text())
    assert ''.join(next(c for c in saved['cells'] if c['cell_type'] == 'code')['outputs'][0]['text']) == 'output 0\n'  # outputs kept
    assert all(c['execution_count'] is None for c in saved['cells'] if c['cell_type'] == 'code')
    assert saved['cells'][1]['metadata'] == {'tags': ['parameters']} and saved['cells'][2]['metadata'] == {}
    assert is_nbdev_clean(tmp), "a notebook saved through Jupyter is not nbdev-clean: `make test` would fail"
    tmp.unlink()


# ---- the browser ----

def results_text(page) -> str: return page.locator('.lincir-results').inner_text()


def wait_change(page, before:str, what:str, timeout=60):
    "Wait until the results differ from `before` and are not stale; return them."
    t0 = time.time()
    while time.time() - t0 < timeout:
        now = results_text(page)
        if now and now != before and 'previous query' not in page.locator('.lincir-status').inner_text(): return now
        page.wait_for_timeout(250)
    raise AssertionError(f"results did not change after {what}; status: {page.locator('.lincir-status').inner_text()!r}")


def query_ms(page) -> float:
    m = re.search(r'in (\d+) ms', page.locator('.lincir-status').inner_text())
    assert m, page.locator('.lincir-status').inner_text()
    return float(m.group(1))


@pytest.fixture
def browser_ok(): need_browser()


def test_demo_in_browser(browser_ok, lab, tmp_path):
    from playwright.sync_api import sync_playwright
    shots = tmp_path/'screens'; shots.mkdir()
    times = []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path/'chromium-profile'), executable_path=str(CHROMIUM),
                                                   headless=True, args=CHROMIUM_ARGS, viewport={'width': 1400, 'height': 1000})
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        try: use_the_demo(page, lab, shots, tmp_path, times)
        except Exception:
            page.screenshot(path=shots/'failure.png'); raise
        finally: ctx.close()
    print(f"query times shown (ms): {times}")


def use_the_demo(page, lab, shots, tmp_path, times):
    "Everything a person does, in order; screenshots along the way."
    from PIL import Image, ImageDraw
    page.goto(f"{lab['url']}/lab/tree/nbs/demo.ipynb?token={TOKEN}")
    page.locator('.jp-Notebook').wait_for()
    page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=120_000)  # the kernel is up
    page.wait_for_timeout(1000)
    page.screenshot(path=shots/'0-opened.png')

    # Run > Run All Cells, as a person does
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    status = page.locator('.lincir-status')
    status.wait_for(timeout=600_000)
    page.wait_for_function("() => /images in \\d+ ms/.test(document.querySelector('.lincir-status')?.innerText || '')",
                           timeout=600_000)
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]', has_text='Error')
    assert errors.count() == 0, errors.first.inner_text()
    body = page.locator('.jp-Notebook').inner_text()
    assert 'HBox(children=' not in body and 'VBox(children=' not in body, "widgets did not render"
    demo = page.locator('.lincir-demo')
    assert demo.count() == 1 and demo.inner_text().startswith('How to use:')  # the hidden copy is never shown
    demo.scroll_into_view_if_needed()
    page.screenshot(path=shots/'1-run-all.png')

    # the first view: the example query (sandbox: ShapesCIR's first val query) with its results
    assert page.locator('.lincir-modification input').input_value() == 'is black'
    first = results_text(page)
    assert len(page.locator('.lincir-results img').all()) == 8 and 'ground truth in the top 8' in status.inner_text()
    times.append(query_ms(page))
    pv = page.locator('.lincir-preview')
    assert pv.evaluate("e => getComputedStyle(e).objectFit") == 'contain'
    box = pv.bounding_box(); assert (round(box['width']), round(box['height'])) == (160, 160), box

    # another reference from the thumbnail strip
    strip = page.locator('.lincir-strip button')
    assert strip.count() == 24
    strip.nth(5).click()
    now = wait_change(page, first, 'picking a thumbnail'); times.append(query_ms(page))
    assert 'no ground truth known' in status.inner_text()
    page.screenshot(path=shots/'2-thumbnail.png')

    # a modification: typing marks the results stale, Enter searches
    box_ = page.locator('.lincir-modification input')
    box_.fill('is green')
    page.wait_for_function("() => /previous query/.test(document.querySelector('.lincir-status').innerText)")
    assert results_text(page) == now
    page.screenshot(path=shots/'3-stale.png')
    box_.press('Enter')
    now = wait_change(page, now, 'Enter in the modification'); times.append(query_ms(page))

    # another method, then the search button after another modification
    page.locator('.lincir-method button', has_text=re.compile(r'^\s*sum\s*$')).click()
    now = wait_change(page, now, 'switching the method to sum'); times.append(query_ms(page))
    box_.fill('is large')
    page.locator('.lincir-go').click()
    now = wait_change(page, now, 'the search button'); times.append(query_ms(page))

    # find a reference by describing it; next; random
    find = page.locator('.lincir-find input')
    find.fill('a red circle'); find.press('Enter')
    now = wait_change(page, now, 'finding a reference by description'); times.append(query_ms(page))
    assert 'best matches for' in page.locator('.lincir-strip-label').inner_text()
    page.screenshot(path=shots/'4-described.png')
    page.locator('.lincir-next').click()
    now = wait_change(page, now, 'next'); times.append(query_ms(page))
    page.locator('.lincir-random').click()
    now = wait_change(page, now, 'random'); times.append(query_ms(page))

    # upload a 320x200 picture: it is the reference, undistorted
    pic = tmp_path/'circle.png'
    im = Image.new('RGB', (320, 200), (128, 128, 128))
    ImageDraw.Draw(im).ellipse((110, 50, 210, 150), fill=(220, 30, 30)); im.save(pic)
    with page.expect_file_chooser() as chooser: page.locator('.lincir-upload').click()
    chooser.value.set_files(str(pic))
    now = wait_change(page, now, 'uploading an image'); times.append(query_ms(page))
    assert 'uploaded circle.png (320x200)' in page.locator('.lincir-demo').inner_text()
    natural = pv.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    assert natural[0] * 200 == natural[1] * 320, natural  # the preview keeps the aspect ratio (object-fit: contain)
    demo.scroll_into_view_if_needed()
    page.screenshot(path=shots/'5-uploaded.png')

    # save from the browser (Ctrl+S): the notebook on disk has the outputs and stays nbdev-clean
    mtime = lab['notebook'].stat().st_mtime
    page.locator('.jp-Notebook').click(position={'x': 5, 'y': 5}); page.keyboard.press('Escape')
    page.keyboard.press('Control+s')
    for _ in range(120):
        if lab['notebook'].stat().st_mtime != mtime: break
        page.wait_for_timeout(250)
    else: raise AssertionError("Ctrl+S did not save the notebook")
    page.wait_for_timeout(1000)
    saved = json.loads(lab['notebook'].read_text())
    assert any(c.get('outputs') for c in saved['cells'])
    assert is_nbdev_clean(lab['notebook']), "the notebook saved from JupyterLab is not nbdev-clean"
