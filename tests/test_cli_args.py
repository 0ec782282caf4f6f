"""`python -m lincir.search` checks its arguments before any work (issue 20: cases 17, 18) and prints hits one per
line, whatever the file names (case 19)."""
import random

import pytest

from lincir.search import main
from lincir.shapes import random_scene, render


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    root, rng = tmp_path / 'photos', random.Random(0)
    root.mkdir()
    for name in ('a.png', 'b.png', 'c.png', 'two\nlines.png', '"quoted".png'): render(random_scene(rng, 1)).save(root / name)
    return root


@pytest.mark.parametrize('args', [['query', '--reference', 'a.png', '-k', '0'], ['query', '--reference', 'a.png', '-k', '-1'],
                                  ['index', '--batch-size', '0'], ['index', '--batch-size', '-5'],
                                  ['query', '--reference', 'a.png', '--batch-size', 'x']])
def test_bad_numbers_are_argument_errors(folder, capsys, args):
    "Case 17: refused by the parser (status 2) with the flag named, before any image is encoded."
    with pytest.raises(SystemExit) as e: main([args[0], str(folder), *args[1:]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {args[-2]}" in err and 'a positive integer' in err, err
    assert not (folder.parent / 'cache' / 'store').exists()


def test_grid_without_an_image_extension_is_refused_first(folder, capsys):
    "Case 18: `--grid out` (no extension) is an argument error before the search, not a crash after it."
    with pytest.raises(SystemExit) as e:
        main(['query', str(folder), '--reference', 'a.png', '--caption', 'is red', '--grid', str(folder.parent / 'out')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'argument --grid' in err and '.png' in err
    assert not (folder.parent / 'cache' / 'store').exists()


def test_plain_output_quotes_unusual_names(folder, capsys):
    "Case 19: one hit per line; a name with a newline (or a leading quote) is printed as a JSON string, others as they are."
    main(['query', str(folder), '--reference', 'a.png', '--method', 'image', '-k', '4'])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    names = sorted(l.split(maxsplit=2)[2] for l in lines)
    assert names == sorted(['"\\"quoted\\".png"', '"two\\nlines.png"', 'b.png', 'c.png'])
