"""Benchmark annotation records are validated as they are read (issue 20): a duplicate query id or a field of the wrong
type fails naming the file, the record and the field, instead of changing the metrics or failing later."""
import json, re

import pytest

from lincir.benchmarks import load_benchmark
from lincir.shapescir import write_cirr_fixture, write_fashioniq_fixture, write_genecis_fixture, write_shapescir


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    return dict(cirr=write_cirr_fixture(root / 'cirr', n_queries=3), fashioniq=write_fashioniq_fixture(root / 'fiq', n_queries=2),
                genecis=write_genecis_fixture(root / 'genecis', n_queries=1),
                shapes=write_shapescir(root / 'shapes', n_val=4, n_test=4, progress=False))


def edited(src, tmp_path, rel, edit):
    "A copy of the benchmark folder `src` whose JSON file `rel` is changed by `edit(records)`; returns (folder, file)."
    import shutil
    dst = shutil.copytree(src, tmp_path / src.name)
    recs = json.loads((dst / rel).read_text()); edit(recs); (dst / rel).write_text(json.dumps(recs))
    return dst, dst / rel


@pytest.mark.parametrize('split', ['val', 'test1'])
def test_duplicate_cirr_pairid_is_refused(roots, tmp_path, split):
    "Case 7: a pairid given twice (val: other metrics; test1: a query lost from the submission) is named with its file."
    def twice(recs): recs[2]['pairid'] = recs[0]['pairid']
    root, path = edited(roots['cirr'], tmp_path, f'cirr/captions/cap.rc2.{split}.json', twice)
    pid = json.loads(path.read_text())[0]['pairid']
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} record 2: pairid {pid} is also record 0's"):
        load_benchmark('cirr', root, split)


@pytest.mark.parametrize('name', ['circo', 'shapes'])
def test_duplicate_circo_id_is_refused(roots, tmp_path, name):
    "Case 7: CIRCO (and ShapesCIR, in its layout) refuse a query id given twice."
    def twice(recs): recs[1]['id'] = recs[0]['id']
    root, path = edited(roots['shapes'], tmp_path, 'annotations/val.json', twice)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} record 1: id .* is also record 0's"):
        load_benchmark(name, root, 'val')


@pytest.mark.parametrize('value', [5, ['is red'], None])
def test_cirr_caption_must_be_text(roots, tmp_path, value):
    "Case 21: a CIRR caption given as a number, a list or null fails naming the file, the record and the field."
    def bad(recs): recs[1]['caption'] = value
    root, path = edited(roots['cirr'], tmp_path, 'cirr/captions/cap.rc2.val.json', bad)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} record 1 \(pairid \d+\): field 'caption' must be a string"):
        load_benchmark('cirr', root, 'val')


@pytest.mark.parametrize('value', ['ab', ['is red'], ['is red', 7]])
def test_fashioniq_captions_must_be_two_strings(roots, tmp_path, value):
    "Case 21: FashionIQ `captions` as a string (once split into letters) or a wrong list is refused by name."
    def bad(recs): recs[0]['captions'] = value
    root, path = edited(roots['fashioniq'], tmp_path, 'captions/cap.dress.val.json', bad)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} record 0: field 'captions' must be a list of 2 strings"):
        load_benchmark('fashioniq', root, 'val')


@pytest.mark.parametrize('bench,rel,field,value', [
    ('cirr', 'cirr/captions/cap.rc2.val.json', 'reference', 3),
    ('cirr', 'cirr/captions/cap.rc2.val.json', 'img_set', {'members': 'dev-0'}),
    ('shapes', 'annotations/val.json', 'relative_caption', ['x']),
    ('shapes', 'annotations/val.json', 'gt_img_ids', 12),
    ('fashioniq', 'captions/cap.dress.val.json', 'target', ['B1']),
    ('genecis', 'genecis/focus_attribute.json', 'gallery', 'none')])
def test_other_fields_of_the_wrong_type_are_named(roots, tmp_path, bench, rel, field, value):
    "Case 21: every benchmark's record fields are type-checked where they are read."
    def bad(recs): recs[0][field] = value
    root, path = edited(roots[bench], tmp_path, rel, bad)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} record 0.*field '{field}'"):
        load_benchmark(bench, root, 'val' if bench != 'genecis' else 'focus_attribute')
