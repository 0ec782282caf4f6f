"Metrics against naive re-implementations of the official evaluation code, on seeded random rankings."
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lincir.metrics import (average_precision_at_k, by_group, circo_metrics, cirr_metrics, fashioniq_metrics,
                            genecis_metrics, map_at_k, recall_at_k, remove_ids, restrict)
from lincir.ranking import TensorGallery, topk


def random_case(seed, n_queries=40, n_gallery=120):
    "Full rankings (from random scores), references, targets, 6-image member sets, and ground-truth lists."
    rng = np.random.default_rng(seed)
    gallery = np.array([f'img{i}' for i in range(n_gallery)])
    scores = rng.normal(size=(n_queries, n_gallery))
    full = [list(gallery[np.argsort(-s, kind='stable')]) for s in scores]
    refs, targets, members, gts = [], [], [], []
    for _ in range(n_queries):
        pick = rng.choice(n_gallery, 6, replace=False)
        refs.append(gallery[pick[0]]); targets.append(gallery[pick[1]]); members.append(list(gallery[pick]))
        gts.append([gallery[pick[1]]] + list(gallery[rng.choice(n_gallery, rng.integers(0, 15), replace=False)]))
    return full, refs, targets, members, [list(dict.fromkeys(g)) for g in gts]


def naive_cirr(full, refs, targets, members):
    "The official CIRR validation arithmetic: drop the reference, label the target, restrict to members."
    out = {}
    labels, group_labels = [], []
    for r, ref, t, m in zip(full, refs, targets, members):
        r = np.array([g for g in r if g != ref])
        labels.append(r == t)
        group_labels.append((r == t)[np.isin(r, m)])
    labels, group_labels = np.array(labels), np.array(group_labels)
    for k in (1, 5, 10, 50): out[f'R@{k}'] = 100 * labels[:, :k].sum() / len(labels)
    for k in (1, 2, 3): out[f'Rs@{k}'] = 100 * group_labels[:, :k].sum() / len(group_labels)
    return out


def naive_circo(rankings, gts, targets):
    "The official CIRCO evaluation arithmetic (np.isin, cumsum of precisions)."
    aps, recalls = {k: [] for k in (5, 10, 25, 50)}, {k: [] for k in (5, 10, 25, 50)}
    for pred, gt, t in zip(rankings, gts, targets):
        pred = np.array(pred[:50])
        lab = np.isin(pred, gt)
        prec = np.cumsum(lab) * lab / np.arange(1, len(lab) + 1)
        for k in aps:
            aps[k].append(prec[:k].sum() / min(len(gt), k))
            recalls[k].append(float((pred == t)[:k].sum()))
    return {**{f'mAP@{k}': 100 * np.mean(v) for k, v in aps.items()}, **{f'R@{k}': 100 * np.mean(v) for k, v in recalls.items()}}


@pytest.mark.parametrize('seed', range(5))
def test_cirr_matches_naive(seed):
    full, refs, targets, members, _ = random_case(seed)
    want = naive_cirr(full, refs, targets, members)
    got = cirr_metrics(full, refs, targets, restrict(full, members))
    for k, v in want.items(): assert got[k] == pytest.approx(v), k
    # what predict keeps: the top 50 after removing the reference, and the subset ranked on its own
    top = [r[:50] for r in remove_ids(full, refs)]
    got_top = cirr_metrics(top, refs, targets, restrict(full, members))
    assert got_top == pytest.approx(got)
    assert got['R@5+Rs@1'] == pytest.approx((want['R@5'] + want['Rs@1']) / 2)


@pytest.mark.parametrize('seed', range(5))
def test_circo_matches_naive(seed):
    full, _, targets, _, gts = random_case(seed, n_gallery=80)
    # make some queries hit: put ground truths near the top
    rng = np.random.default_rng(seed + 100)
    for r, g in zip(full, gts):
        for x in g:
            if rng.random() < 0.6: r.remove(x); r.insert(int(rng.integers(0, 30)), x)
    got = circo_metrics([r[:50] for r in full], gts, targets)
    want = naive_circo(full, gts, targets)
    for k, v in want.items(): assert got[k] == pytest.approx(v), k
    assert got['mAP@50'] > 0 and got['R@50'] > 0


def test_recall_matches_naive_loop():
    full, _, targets, _, _ = random_case(7)
    for k in (1, 3, 10, 50):
        hits = 0
        for r, t in zip(full, targets):
            for i in range(k):
                if r[i] == t: hits += 1; break
        assert recall_at_k(full, targets, (k,))[f'R@{k}'] == pytest.approx(100 * hits / len(full))


def test_grouped_means_are_unweighted():
    full, _, targets, _, _ = random_case(3, n_queries=30)
    cats = ['dress'] * 5 + ['shirt'] * 10 + ['toptee'] * 15
    m = fashioniq_metrics(full, targets, cats)
    per = [recall_at_k(full[a:b], targets[a:b], (10, 50)) for a, b in ((0, 5), (5, 15), (15, 30))]
    assert m['avg/R@10'] == pytest.approx(np.mean([p['R@10'] for p in per]))
    assert m['shirt/R@50'] == pytest.approx(per[1]['R@50'])
    g = genecis_metrics(full, targets, ['focus_object'] * 30)
    assert g['avg/R@3'] == g['focus_object/R@3'] == recall_at_k(full, targets, (3,))['R@3']


def test_hand_computed_cases():
    # fewer ground truths than K: divide by the number of ground truths
    assert average_precision_at_k(['a', 'x', 'b'], ['a', 'b'], 5) == pytest.approx((1 + 2 / 3) / 2)
    # more ground truths than K: divide by K
    assert average_precision_at_k(['a', 'x'], ['a', 'b', 'c'], 2) == pytest.approx(1 / 2)
    # duplicate ground truths count once; a repeated hit in the ranking counts at its first position only
    assert average_precision_at_k(['a', 'a', 'x'], ['a', 'a'], 3) == 1.0
    assert map_at_k([['a', 'a', 'b']], [['a', 'b']], (3,))['mAP@3'] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # reference removal shifts the ranking up
    assert cirr_metrics([['r', 't']], ['r'], ['t'], [['r', 't']], ks=(1,), subset_ks=(1,)) == {'R@1': 100.0, 'Rs@1': 100.0}
    # a target beyond the kept ranking is a miss
    assert recall_at_k([['a', 'b']], ['c'], (50,)) == {'R@50': 0.0}
    assert by_group(recall_at_k, ['x', 'y', 'x'], [['t'], ['t'], ['u']], ['t', 't', 't'], ks=(1,)) == \
        {'x/R@1': 50.0, 'y/R@1': 100.0, 'avg/R@1': 75.0}


def rank(q, g, k=None, exclude=None, chunk=None):
    "Gallery positions by `topk`, padding dropped: the whole gallery when `k` is None."
    g = TensorGallery(g, chunk) if chunk else g
    _, pos = topk(q, g, len(g) if k is None else k, exclude)
    return [[int(j) for j in row if j >= 0] for row in pos]


def test_ties_keep_gallery_order():
    g = torch.tensor([[1., 0.], [0., 1.], [1., 0.], [1., 0.]])
    assert rank(torch.tensor([[1., 0.]]), g) == [[0, 2, 3, 1]]
    # so a tied target placed after its duplicate loses the tie (GeneCIS puts targets last)
    ids = ['d1', 'd2', 'd3', 't']
    r = [ids[i] for i in rank(torch.tensor([[0., 1.]]), torch.tensor([[1., 0.], [0., 1.], [1., 0.], [0., 1.]]))[0]]
    assert r[:2] == ['d2', 't'] and recall_at_k([r], ['t'], (1, 2)) == {'R@1': 0.0, 'R@2': 100.0}


def test_rank_matches_numpy_argsort():
    rng = np.random.default_rng(0)
    q, g = torch.tensor(rng.normal(size=(30, 16))).float(), torch.tensor(rng.normal(size=(200, 16))).float()
    sims = (F.normalize(q, dim=-1) @ F.normalize(g, dim=-1).T).numpy()
    want = [list(np.argsort(-s, kind='stable')[:50]) for s in sims]
    assert rank(q, g, k=50, chunk=7) == [[int(i) for i in w] for w in want]
    ex = [[int(w[0]), 5] for w in want]
    got = rank(q, g, k=50, exclude=ex)
    assert all(len(r) == 50 and w[0] not in r and 5 not in r for r, w in zip(got, want))
    assert got == [[int(i) for i in np.argsort(-s, kind='stable') if i not in e][:50] for s, e in zip(sims, ex)]


def test_bad_input():
    with pytest.raises(ValueError, match='no rankings'): recall_at_k([], [])
    with pytest.raises(ValueError, match='2 rankings but 1'): circo_metrics([['a'], ['b']], [['a']])
    with pytest.raises(ValueError, match='ground truth'): map_at_k([['a']], [[]])
    with pytest.raises(ValueError, match='not in its ranking'): restrict([['a', 'b']], [['c']])
