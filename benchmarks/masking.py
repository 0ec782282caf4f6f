"""Throughput of keyword masking on captions with the paper's length mix, and its scaling with `num_proc`.

Captions from `benchmarks/mix.py` (a third CC3M-like, two thirds long prompts, a third cut at 77 tokens). Two
measures: `mask_captions` alone in this process (cleaning, cut to 77 tokens, spaCy `nlp.pipe` with only the tagger
pipes, keyword replacement, placeholder check), and the whole cache build `masked_corpus` (masking, tokenising both
texts, writing Arrow and the uint16 arrays) with num_proc=1 and 2 into a temporary cache. spaCy is loaded before the
timings (forked workers inherit it). Each figure is the best of `--repeat` runs, since other jobs share the machine;
the per-core rate is also measured in CPU time (process time), which other jobs disturb little.
Usage: python benchmarks/masking.py [--n 48000] [--repeat 2] [--backbone-tokenizer ViT-L-14]
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from mix import realistic_captions
from lincir.keywords import clean_caption, mask_captions, spacy_nlp, rule_counts


def best(fn, repeat, clock=time.perf_counter):
    ts = []
    for _ in range(repeat):
        t = clock(); fn(); ts.append(clock() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=48000); ap.add_argument('--repeat', type=int, default=2)
    ap.add_argument('--tokenizer', default='ViT-L-14'); ap.add_argument('--corpus', type=float, default=9.3e6)
    ap.add_argument('--cores', type=int, default=16); ap.add_argument('--out', default='benchmarks/results/masking.json')
    args = ap.parse_args()
    tok = open_clip.get_tokenizer(args.tokenizer)
    caps = realistic_captions(args.n, seed=1)
    spacy_nlp(); mask_captions(caps[:50], tok)  # load spaCy and warm the BPE cache outside the timings
    masked = mask_captions(caps, tok)
    t_mask = best(lambda: mask_captions(caps, tok), args.repeat)
    cpu_mask = best(lambda: mask_captions(caps, tok), args.repeat, time.process_time)
    res = dict(captions=args.n, tokenizer=args.tokenizer, cpu_count=os.cpu_count(), load_avg_at_start=os.getloadavg()[0],
               rules=rule_counts(masked), mask_captions_per_s=round(args.n / t_mask, 1),
               mask_captions_per_cpu_s=round(args.n / cpu_mask, 1))
    print(f"mask_captions, one process: {res['mask_captions_per_s']} captions/s wall, {res['mask_captions_per_cpu_s']} per CPU-second ({res['rules']})")
    # the ceiling: spaCy's network alone (tok2vec + tagger, as masking runs it) on the cleaned captions
    texts, nlp = [clean_caption(c, tok) for c in caps], spacy_nlp()
    cpu_spacy = best(lambda: list(nlp.pipe(texts, batch_size=64, disable=['attribute_ruler'])), args.repeat, time.process_time)
    res['spacy_tagger_only_per_cpu_s'] = round(args.n / cpu_spacy, 1)
    res['words_per_caption'] = round(float(np.mean([len(t.split()) for t in texts])), 1)
    print(f"spaCy tok2vec + tagger alone: {res['spacy_tagger_only_per_cpu_s']} captions per CPU-second ({res['words_per_caption']} words each)")

    from lincir import captions as C
    with tempfile.TemporaryDirectory() as d:
        (Path(d)/'mix.txt').write_text('\n'.join(caps))
        old = os.environ.get('LINCIR_CACHE'); os.environ['LINCIR_CACHE'] = d
        try:
            for k in (1, 2):
                t = best(lambda: C.masked_corpus(str(Path(d)/'mix.txt'), tok, num_proc=k, refresh=True), args.repeat)
                res[f'cache_build_num_proc_{k}_per_s'] = round(args.n / t, 1)
                print(f"masked_corpus, num_proc={k}: {res[f'cache_build_num_proc_{k}_per_s']} captions/s")
        finally:
            if old is None: os.environ.pop('LINCIR_CACHE')
            else: os.environ['LINCIR_CACHE'] = old
    res['date'] = time.strftime('%Y-%m-%d'); res['load_avg_at_end'] = os.getloadavg()[0]
    per_core = res['cache_build_num_proc_1_per_s']
    res['scaling_2_procs'] = round(res['cache_build_num_proc_2_per_s'] / per_core, 2)
    eff = min(1.0, res['scaling_2_procs'] / 2)
    res[f'paper_corpus_hours_{args.cores}_cores_ideal'] = round(args.corpus / (per_core * args.cores) / 3600, 2)
    res[f'paper_corpus_hours_{args.cores}_cores_at_measured_efficiency'] = round(args.corpus / (per_core * args.cores * eff) / 3600, 2)
    print(f"x{res['scaling_2_procs']} with 2 processes; {args.corpus / 1e6:.1f}M captions on {args.cores} cores: "
          f"{res[f'paper_corpus_hours_{args.cores}_cores_ideal']} h at linear scaling, "
          f"{res[f'paper_corpus_hours_{args.cores}_cores_at_measured_efficiency']} h at the 2-process efficiency")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
