"""The demo as a person meets it: `make demo`, the command a user types, started in a temporary copy of the repository
(Makefile, settings.ini, .jupyter/, nbs/demo.ipynb, and this checkout's .venv), opened in Debian's Chromium (driven by
Playwright for Python, not Playwright's own browser download): Run All, every control, uploads, Ctrl+S, a reload that
must bring the live widget back, and a server log without a failed save hook.

Only environment variables differ from a user's session: the port and token (JUPYTER_PORT, JUPYTER_TOKEN), no
browser of Jupyter's own (BROWSER=true), and private Jupyter folders (settings, workspaces, runtime, data with the
notebook-signing database), so nothing of the user's is read or written. The copy holds a seeded, untrained Phi in
runs/main (the UI is tested, not the model), and the repository's notebook is never touched.

Screenshots go to the test's tmp folder (`pytest --basetemp=DIR` keeps them). With LINCIR_SCREENSHOTS=docs/images the
demo uses the trained Phi of `make run` (runs/main) instead, and the first screen and a search are written there as
demo-first-screen.png and demo-search.png: the README's pictures. Without /usr/bin/chromium or the python `playwright`
package the browser test is skipped locally and fails in CI (CI=true); tests/run_all.sh installs chromium when it is
missing."""
import io, json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get('LINCIR_CHROMIUM', '/usr/bin/chromium'))
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
TOKEN = 'lincir-demo-test'
VIEWPORT = {'width': 1400, 'height': 1000}
SCREENSHOTS = os.environ.get('LINCIR_SCREENSHOTS')  # a folder: write the README's pictures there
README_SHOT_WIDTH = 1000  # pixels; the README's pictures are scaled down to this width
README_SHOT_BYTES = 200_000  # the most a README picture may weigh
# The cache the session started with: read at collection, before any test fixture may have redirected it (the
# demo's kernel must find the sandbox gallery's features that nbdev_test already computed, not encode them again).
SESSION_CACHE = os.environ.get('LINCIR_CACHE')
HOOK_FAILED = re.compile(r'(?i)pre-save hook.*failed|post-save.*failed|Traceback')


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


def demo_copy(root:Path):
    "What `make demo` needs, copied into `root`; .venv is this checkout's (make must find it up to date: it never rebuilds it here)."
    if not (ROOT/'.venv'/'bin'/'.installed').exists(): pytest.fail(f"{ROOT/'.venv'} is not built: run `make venv` first")
    for f in ('Makefile', 'settings.ini', 'pyproject.toml'): shutil.copy2(ROOT/f, root/f)
    os.utime(root/'pyproject.toml', (0, 0))  # older than .venv/bin/.installed: `make demo` goes straight to Jupyter
    shutil.copytree(ROOT/'.jupyter', root/'.jupyter')
    (root/'nbs').mkdir(); shutil.copy(ROOT/'nbs'/'demo.ipynb', root/'nbs')
    (root/'.venv').symlink_to(ROOT/'.venv')


def seeded_phi(root:Path):
    "runs/main for the demo: the trained Phi of `make run` for the README's pictures, else a seeded untrained one."
    import torch
    from lincir.backbone import load_backbone
    from lincir.phi import Phi, save_phi
    if SCREENSHOTS:
        trained = ROOT/'runs'/'main'
        if not (trained/'best'/'phi.safetensors').exists(): pytest.fail(f"LINCIR_SCREENSHOTS needs a trained Phi in {trained}: run `make run`")
        (root/'runs').mkdir(); (root/'runs'/'main').symlink_to(trained); return
    bb = load_backbone('shapes-clip', 'sandbox')
    torch.manual_seed(0); save_phi(Phi.for_backbone(bb), root/'runs'/'main', bb)


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "`make demo` in a copy of the repository; stopped (with its kernels) at the end."
    root = tmp_path_factory.mktemp('repo')
    demo_copy(root); seeded_phi(root)
    port, private = free_port(), root/'.jupyter-private'
    news = private/'settings'/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings'
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))  # no "Jupyter news?" pop-up over the demo
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JUPYTER', 'LINCIR_CACHE', 'MAKE', 'MFLAGS'))}
    env.update(JUPYTER_PORT=str(port), JUPYTER_TOKEN=TOKEN, BROWSER='true', JUPYTER_CONFIG_DIR=str(private/'config'),
               JUPYTERLAB_SETTINGS_DIR=str(private/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(private/'workspaces'),
               JUPYTER_RUNTIME_DIR=str(private/'runtime'), JUPYTER_DATA_DIR=str(private/'data'),
               HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    if SESSION_CACHE: env['LINCIR_CACHE'] = SESSION_CACHE
    log_file = root/'jupyter.log'
    log = open(log_file, 'w')
    proc = subprocess.Popen(['make', 'demo'], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            if proc.poll() is not None: break
            try: urllib.request.urlopen(f'{url}/api/status?token={TOKEN}', timeout=2); break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f"`make demo` did not answer within 120 s; log: {log_file}")
        if proc.poll() is not None: pytest.fail(f"`make demo` exited: {log_file.read_text()[-2000:]}")
        yield dict(url=url, root=root, notebook=root/'nbs'/'demo.ipynb', log=log_file)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and Jupyter (its own session): Jupyter shuts its kernels down
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        log.close()
    left = sorted(p.name for p in (private/'runtime').glob('kernel-*.json'))
    assert not left, f"kernels left running after `make demo` stopped: {left}"


def api(lab, path, method='GET', body=None):
    req = urllib.request.Request(f"{lab['url']}/api/contents/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={'Content-Type': 'application/json', 'Authorization': f'token {TOKEN}'})
    with urllib.request.urlopen(req, timeout=30) as r: return json.load(r)


def hook_errors(lab, since=0) -> list[str]:
    return [l for l in lab['log'].read_text()[since:].splitlines() if HOOK_FAILED.search(l)]


def test_saving_through_jupyter_keeps_notebook_clean_and_signed(lab):
    """A save as JupyterLab sends it (outputs, execution counts, cell metadata, `trusted` cells) is written nbdev-clean,
    also as a new file, and signed: read back, its cells are trusted. Cells sent untrusted stay untrusted."""
    nb = api(lab, 'demo.ipynb?content=1')['content']  # the path as Jupyter gives it: relative to its root, nbs/
    nb['metadata']['widgets'] = {'application/vnd.jupyter.widget-state+json': {'state': {}, 'version_major': 2}}
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    for n, c in enumerate(code):
        c['execution_count'] = n + 1
        c['metadata'].update(execution={'iopub.status.busy': '2026-01-01T00:00:00Z'}, scrolled=True, trusted=True)
    for name, trusted in (('saved.ipynb', True), ('untrusted.ipynb', False)):
        for n, c in enumerate(code):  # outputs of its own: a signature is a digest of the content
            c['metadata']['trusted'] = trusted
            c['outputs'] = [{'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': f'<b>output {n}</b> of {name}', 'text/plain': f'output {n}'}}]
        api(lab, name, 'PUT', {'type': 'notebook', 'format': 'json', 'content': nb})
        file = lab['root']/'nbs'/name
        saved = json.loads(file.read_text())
        first = next(c for c in saved['cells'] if c['cell_type'] == 'code')
        assert ''.join(first['outputs'][0]['data']['text/html']) == f'<b>output 0</b> of {name}'  # outputs kept
        assert all(c['execution_count'] is None for c in saved['cells'] if c['cell_type'] == 'code')
        assert saved['cells'][1]['metadata'] == {'tags': ['parameters']} and saved['cells'][2]['metadata'] == {}
        assert is_nbdev_clean(file), "a notebook saved through Jupyter is not nbdev-clean: `make test` would fail"
        back = api(lab, f'{name}?content=1')['content']
        assert {c['metadata'].get('trusted') for c in back['cells'] if c['cell_type'] == 'code'} == {trusted}, name
        file.unlink()
    assert not hook_errors(lab), hook_errors(lab)


# ---- the browser ----

def outputs_text(page) -> str:
    "What the cells' outputs show (not the notebook's prose, which names the errors it explains)."
    return '\n'.join(page.locator('.jp-OutputArea-output').all_inner_texts())


def results_text(page) -> str: return page.locator('.lincir-results').inner_text()
def status_text(page) -> str: return page.locator('.lincir-status').inner_text()


def wait_change(page, before:str, what:str, timeout=60) -> str:
    "Wait until the results differ from `before` and are not stale; return them."
    t0 = time.time()
    while time.time() - t0 < timeout:
        now = results_text(page)
        if now and now != before and 'previous query' not in status_text(page): return now
        page.wait_for_timeout(100)
    raise AssertionError(f"results did not change after {what}; status: {status_text(page)!r}")


def wait_for(page, check, what:str, timeout=60):
    t0 = time.time()
    while not check():
        if time.time() - t0 > timeout: raise AssertionError(f"{what}; status: {status_text(page)!r}")
        page.wait_for_timeout(100)


def query_ms(page) -> float:
    m = re.search(r'in (\d+) ms', status_text(page))
    assert m, status_text(page)
    return float(m.group(1))


def box(locator, timeout=30) -> dict:
    "The bounding box of `locator`, once it is visible (a view may be rendering, or be replaced by a new one)."
    t0 = time.time()
    while True:
        locator.wait_for(state='visible')
        b = locator.bounding_box()
        if b: return b
        assert time.time() - t0 < timeout, f"{locator} has no box"
        time.sleep(0.1)


def inside(inner:dict, outer:dict, slack=1) -> bool:
    "Whether box `inner` lies within box `outer` (Playwright bounding boxes)."
    return (inner['x'] >= outer['x'] - slack and inner['y'] >= outer['y'] - slack and
            inner['x'] + inner['width'] <= outer['x'] + outer['width'] + slack and
            inner['y'] + inner['height'] <= outer['y'] + outer['height'] + slack)


def save_picture(page, path:Path, element=None):
    "A screenshot of the page (or an element), scaled down to README_SHOT_WIDTH and to 256 colours: small files, sharp text."
    from PIL import Image
    raw = (element or page).screenshot()
    im = Image.open(io.BytesIO(raw)).convert('RGB')
    if im.width > README_SHOT_WIDTH: im = im.resize((README_SHOT_WIDTH, round(im.height * README_SHOT_WIDTH / im.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


@pytest.fixture
def browser_ok(): need_browser()


def test_demo_in_browser(browser_ok, lab, tmp_path):
    from playwright.sync_api import sync_playwright
    shots = tmp_path/'screens'; shots.mkdir()
    times = {}
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path/'chromium-profile'), executable_path=str(CHROMIUM),
                                                   headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        try: use_the_demo(page, lab, shots, tmp_path, times)
        except Exception:  # what the page showed, for the person reading the failure
            page.screenshot(path=shots/'failure.png'); (shots/'failure.txt').write_text(page.locator('body').inner_text()); raise
        finally: ctx.close()
    print(f"times: {times}; screenshots in {shots}")


def use_the_demo(page, lab, shots, tmp_path, times):
    "Everything a person does, in order; screenshots along the way."
    page.goto(f"{lab['url']}/lab/tree/demo.ipynb?token={TOKEN}")
    page.locator('.jp-Notebook').wait_for()
    page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=120_000)  # the kernel is up
    page.wait_for_timeout(500)
    first_screen, search_shot = run_all(page, shots, times)
    strip_and_examples(page, times)
    modification(page)
    other_controls(page)
    uploads(page, tmp_path, shots)
    if SCREENSHOTS:
        for shot in (first_screen, search_shot):
            assert shot.stat().st_size <= README_SHOT_BYTES, f"{shot} is {shot.stat().st_size} bytes: too big for the README"
            shutil.copy(shot, ROOT/SCREENSHOTS/shot.name)  # relative: to the repository
    save_and_reload(page, lab, shots, times)


def run_all(page, shots, times):
    "Run > Run All Cells, as a person does: the demo shows up where JupyterLab takes them, then answers the opening query."
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    t0 = time.time()
    demo = page.locator('.lincir-demo')
    demo.wait_for(timeout=300_000)
    view = {'x': 0, 'y': 0, **VIEWPORT}
    assert inside({**box(demo), 'height': 50}, view), "the demo appeared outside the view: its progress is not seen"
    page.wait_for_function("() => /images in \\d+ ms/.test(document.querySelector('.lincir-status')?.innerText || '')",
                           timeout=600_000)
    times['run all (s)'] = round(time.time() - t0, 1)
    page.wait_for_function("() => document.body.innerText.includes('| Idle')")  # Run All is done: the demo shown anew, scrolled
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]', has_text='Error')
    assert errors.count() == 0, errors.first.inner_text()
    body = outputs_text(page)
    assert 'HBox(children=' not in body and 'VBox(children=' not in body, "widgets did not render"
    assert demo.count() == 1 and demo.inner_text().startswith('How to use:')
    assert page.locator('.lincir-note').inner_text() == '' and page.locator('.lincir-progress').inner_text() == ''  # loading done
    # the opening example: its label, its answer with the ground truth counted, the reference first in the strip, in view
    label = page.locator('.lincir-example-label').inner_text()
    assert re.search(r'example \d+ of 200 \(ShapesCIR val query \d+\)', label) and 'the opening example' in label, label
    assert len(page.locator('.lincir-results img').all()) == 8 and 'ground truth' in status_text(page)
    times['query (ms)'] = query_ms(page)
    strip, first = page.locator('.lincir-strip'), page.locator('.lincir-tile').first
    assert inside(box(first), box(strip)), "the reference's thumbnail is not in view"
    assert page.locator('.lincir-preview').evaluate("e => getComputedStyle(e).objectFit") == 'contain'
    assert inside({**box(page.locator('.lincir-results')), 'height': 50}, view), "the answer is not in view after Run All"
    first_screen = shots/'demo-first-screen.png'  # as the person sees it: the demo scrolled to the top of the view
    save_picture(page, first_screen)
    # a search, for the README: find a reference by describing it, then a modification and Enter
    before = results_text(page)
    find = page.locator('.lincir-find input')
    find.fill('a purple circle'); find.press('Enter')
    before = wait_change(page, before, 'finding a reference by description')
    field = page.locator('.lincir-modification input')
    field.fill('is a star'); field.press('Enter')
    wait_change(page, before, 'Enter in the modification')
    search_shot = shots/'demo-search.png'
    save_picture(page, search_shot, page.locator('.lincir-demo'))
    return first_screen, search_shot


def strip_and_examples(page, times):
    "A click on a picture of the strip picks it and only moves the mark; next/previous example step through the queries."
    tiles = page.locator('.lincir-tile')
    ids = tiles.all_inner_texts()
    before = results_text(page)
    pic = box(tiles.nth(5).locator('img'))
    page.mouse.click(pic['x'] + pic['width'] / 2, pic['y'] + pic['height'] / 2)  # on the picture, not the id under it
    now = wait_change(page, before, 'clicking a thumbnail picture')
    assert tiles.all_inner_texts() == ids and ids[5].strip() in page.locator('.lincir-ref-label').inner_text()
    label = page.locator('.lincir-example-label')
    n = int(re.search(r'example (\d+)', label.inner_text())[1])
    page.locator('.lincir-next-example').click()
    wait_for(page, lambda: f'example {n % 200 + 1} of' in label.inner_text(), 'next example did not step')
    now = wait_change(page, now, 'next example')
    page.locator('.lincir-previous-example').click()
    wait_for(page, lambda: f'example {n} of' in label.inner_text(), 'previous example did not step back')
    times['example queries (ms)'] = []
    for _ in range(5):  # measured, not asserted: the machine may be busy
        now = results_text(page); page.locator('.lincir-next-example').click()
        wait_change(page, now, 'next example'); times['example queries (ms)'].append(query_ms(page))


def modification(page):
    "Typing marks the results stale, undoing the edit unmarks them; an error stays until the text changes; a long text gets a hint."
    field, results = page.locator('.lincir-modification input'), page.locator('.lincir-results')
    original, answer, shown = field.input_value(), status_text(page), results_text(page)
    field.press('End'); field.type(' and larger')
    wait_for(page, lambda: 'previous query' in status_text(page), 'typing did not mark the results stale')
    assert results.evaluate("e => getComputedStyle(e).borderStyle") == 'dashed'
    for _ in ' and larger': field.press('Backspace')
    wait_for(page, lambda: status_text(page) == answer, 'undoing the edit left the stale text')
    assert results.evaluate("e => getComputedStyle(e).borderStyle") != 'dashed' and results_text(page) == shown
    field.fill(''); field.press('Enter')
    wait_for(page, lambda: 'needs a modification' in status_text(page), 'an empty modification gave no error')
    field.type('is')
    wait_for(page, lambda: 'needs a modification' not in status_text(page), 'the error stayed while a new modification was typed')
    field.fill('is ' + ' '.join(f'larger and bluer {n}' for n in range(30)))
    hint = page.locator('.lincir-hint')
    wait_for(page, lambda: re.search(r'reads \d+ tokens', hint.inner_text()), 'no hint for a modification cut off')
    assert 'cut off' in hint.inner_text() and '29' in hint.inner_text()
    field.fill(original); field.press('Enter')
    wait_for(page, lambda: hint.inner_text() == '' and 'previous query' not in status_text(page), 'the hint stayed')


def other_controls(page):
    "Method, search button, next, random: each answers again."
    now = results_text(page)
    page.locator('.lincir-method button', has_text=re.compile(r'^\s*sum\s*$')).click()
    now = wait_change(page, now, 'switching the method to sum')
    page.locator('.lincir-modification input').fill('is large')
    page.locator('.lincir-go').click()
    now = wait_change(page, now, 'the search button')
    page.locator('.lincir-next').click()
    now = wait_change(page, now, 'next')
    page.locator('.lincir-random').click()
    wait_change(page, now, 'random')


def upload(page, path:Path):
    with page.expect_file_chooser() as chooser: page.locator('.lincir-upload').click()
    chooser.value.set_files(str(path))


def uploads(page, tmp_path, shots):
    """A picture becomes the reference, undistorted; a phone photo is upright; the same file again after another
    reference works; a long name wraps instead of pushing the strip out; a broken file says so in the widget."""
    from PIL import Image, ImageDraw
    label, pv, demo = page.locator('.lincir-ref-label'), page.locator('.lincir-preview'), page.locator('.lincir-demo')
    pic = tmp_path/'circle.png'
    im = Image.new('RGB', (320, 200), (128, 128, 128))
    ImageDraw.Draw(im).ellipse((110, 50, 210, 150), fill=(220, 30, 30)); im.save(pic)
    now = results_text(page)
    upload(page, pic)
    now = wait_change(page, now, 'uploading an image')
    assert 'uploaded circle.png (320x200)' in label.inner_text()
    natural = pv.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    assert natural[0] * 200 == natural[1] * 320, natural  # the preview keeps the aspect ratio (object-fit: contain)
    page.locator('.lincir-tile').nth(2).click()
    wait_for(page, lambda: 'uploaded' not in label.inner_text(), 'a thumbnail did not replace the upload')
    upload(page, pic)
    wait_for(page, lambda: 'uploaded circle.png' in label.inner_text(), 'the same file uploaded again was ignored')
    photo = tmp_path/('a photo with a very long name taken on holiday by the sea in the summer of twenty-twenty-five ' * 2).strip().replace(' ', '_')
    photo = photo.with_suffix('.jpg')
    exif = Image.new('RGB', (300, 150), 'navy').getexif(); exif[0x0112] = 6  # a phone's "turn 90 degrees": shown 150x300
    Image.new('RGB', (300, 150), 'navy').save(photo, exif=exif)
    upload(page, photo)
    wait_for(page, lambda: '(150x300)' in label.inner_text(), 'the phone photo is not upright')
    right = box(demo)['x'] + box(demo)['width']
    strip = box(page.locator('.lincir-strip'))
    assert strip['x'] + strip['width'] <= right + 1, (strip, right)
    lb, pb = box(label), box(pv)
    assert lb['x'] + lb['width'] <= pb['x'] + pb['width'] + 12, (lb, pb)  # the long name wraps under the preview
    demo.scroll_into_view_if_needed()
    page.screenshot(path=shots/'uploaded.png')
    broken = tmp_path/'broken.png'; broken.write_bytes(b'not a picture')
    upload(page, broken)
    wait_for(page, lambda: 'broken.png' in status_text(page) and 'Cannot use the upload' in status_text(page), 'a broken file showed no error')
    assert '(150x300)' in label.inner_text()  # the reference is unchanged


def save_and_reload(page, lab, shots, times):
    "Ctrl+S writes the notebook nbdev-clean and signed: after a reload the widget is live again, and no hook failed."
    since = len(lab['log'].read_text())
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
    assert not re.search(r'/(tmp|home|root|work)/', json.dumps([c.get('outputs') for c in saved['cells']])), "an absolute path in the outputs"
    demo = page.locator('.lincir-demo')
    # A reload right after a save showed "Error displaying widget: model not found" in 2 of 10 and 4 of 12 tries while
    # the demo left every replaced answer's layouts and styles open (some 4,000 widgets for the page to restore); 24
    # of 24 were fine once it closed them (about 420; the notebook's checks assert the closing). The notebook tells
    # the user to reload once more should it still happen, and so does this test, recording it; a widget shown as text
    # (an unsigned save) fails at once.
    for attempt in range(2):
        page.reload()
        page.locator('.jp-Notebook').wait_for()
        page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=120_000)
        for _ in range(120):  # a person scrolls down to the demo: JupyterLab renders only the cells in view
            page.locator('.jp-WindowedPanel-outer').evaluate("e => e.scrollTop = e.scrollHeight")
            if demo.count() and demo.is_visible(): break
            if 'model not found' in outputs_text(page): break
            page.wait_for_timeout(500)
        assert 'VBox(children=' not in outputs_text(page), "the widget came back as text: the save was not signed"
        if demo.count() and demo.is_visible(): break
        times['reloads until the widget showed'] = attempt + 2
    demo.wait_for()
    demo.scroll_into_view_if_needed()
    body = outputs_text(page)
    assert 'VBox(children=' not in body and 'Error displaying widget' not in body, "the widget came back as text"
    before = results_text(page)
    page.locator('.lincir-next-example').click()
    wait_change(page, before, 'next example after the reload')  # live: the kernel answers
    page.screenshot(path=shots/'reloaded.png')
    log = lab['log'].read_text()[since:]
    assert not hook_errors(lab), hook_errors(lab)
    assert 'demo.ipynb is not trusted' not in log, "the saved notebook was not signed"
    assert 'Overriding existing pre_save_hook' not in lab['log'].read_text(), "a warning about the save hook at start"
