"""Captions with the length mix of the paper's corpora, generated offline (no download).

A third are Conceptual-Captions-like sentences (8-15 words, `dangne/gcc_caption_only`); two thirds are image-generation
prompts like those of `FredZhang7/stable-diffusion-prompts-2.47M` and `Geonmo/midjourney-prompts-only`: a subject
followed by comma-separated modifiers, styles and artists, 10 to 120 words, so that many are cut at CLIP's 77 tokens.
`realistic_captions(n, seed)` is used by the masking, training-step and GPU benchmarks.
"""
import numpy as np

ADJ = ['red', 'old', 'young', 'small', 'large', 'beautiful', 'wooden', 'empty', 'busy', 'happy', 'dark', 'bright', 'white',
       'tall', 'ancient', 'modern', 'cute', 'golden', 'blue', 'snowy', 'quiet', 'famous', 'little', 'green']
NOUN = ['woman', 'man', 'dog', 'cat', 'city', 'house', 'street', 'car', 'tree', 'beach', 'mountain', 'girl', 'boy', 'bridge',
        'river', 'building', 'horse', 'bird', 'flower', 'table', 'castle', 'forest', 'robot', 'dragon', 'ship', 'market']
VERB = ['walks along', 'stands in front of', 'sits on', 'looks at', 'runs through', 'plays with', 'waits near', 'rides',
        'holds', 'crosses', 'smiles at', 'jumps over']
PLACE = ['the beach', 'the park', 'a city street', 'the old town', 'the forest', 'the river', 'the stadium', 'the airport',
         'a snowy field', 'the kitchen', 'the garden', 'the museum']
CC3M = ['{a} {n} {v} {p}', 'actor attends the premiere of the {n} film', 'view of {p} at sunset', '{a} {n} in {p}',
        'person and {a} {n} at the event', 'illustration of a {a} {n}', 'the {n} {v} the {a} {n2} during the day',
        'close up of a {a} {n} on a {a2} {n2}', 'a {n} and a {n2} {v} {p} in the winter']
STYLE = ['highly detailed', 'digital painting', 'artstation', 'concept art', 'smooth', 'sharp focus', 'illustration',
         'cinematic lighting', 'octane render', 'unreal engine 5', '8k', '4k uhd', 'volumetric light', 'intricate',
         'elegant', 'matte painting', 'trending on artstation', 'dramatic lighting', 'hyperrealistic', 'photorealistic',
         'bokeh', '35mm film', 'studio lighting', 'ultra wide angle', 'golden hour', 'vibrant colors', 'soft focus',
         'symmetrical', 'award winning photograph', 'masterpiece', 'fantasy', 'sci-fi', 'cyberpunk', 'steampunk',
         'art nouveau', 'ray tracing', 'depth of field', 'high contrast', 'pastel colors', 'isometric', '--ar 16:9', '--v 5']
ARTIST = ['greg rutkowski', 'alphonse mucha', 'artgerm', 'wlop', 'james gurney', 'studio ghibli', 'moebius', 'beeple',
          'simon stalenhag', 'makoto shinkai', 'ilya kuvshinov', 'craig mullins', 'thomas kinkade', 'peter mohrbacher']


def _pick(rng, xs): return xs[rng.integers(len(xs))]


def cc3m_caption(rng) -> str:
    return _pick(rng, CC3M).format(a=_pick(rng, ADJ), a2=_pick(rng, ADJ), n=_pick(rng, NOUN), n2=_pick(rng, NOUN),
                                   v=_pick(rng, VERB), p=_pick(rng, PLACE))


def prompt(rng) -> str:
    subject = f"{_pick(rng, ['a portrait of', 'a photo of', 'an oil painting of', 'a render of', ''])} a {_pick(rng, ADJ)} {_pick(rng, NOUN)} {_pick(rng, VERB)} {_pick(rng, PLACE)}".strip()
    k = int(rng.choice([rng.integers(2, 8), rng.integers(8, 20), rng.integers(20, 45)], p=[0.3, 0.35, 0.35]))
    mods = [_pick(rng, STYLE) if rng.random() < 0.8 else f"by {_pick(rng, ARTIST)} and {_pick(rng, ARTIST)}" for _ in range(k)]
    return ', '.join([subject] + mods)


def realistic_captions(n:int, seed:int=0, short_share:float=1/3) -> list[str]:
    "`n` captions: `short_share` CC3M-like, the rest long prompts, shuffled."
    rng = np.random.default_rng(seed)
    return [cc3m_caption(rng) if rng.random() < short_share else prompt(rng) for _ in range(n)]


if __name__ == '__main__':
    import open_clip
    tok = open_clip.get_tokenizer('ViT-L-14')
    caps = realistic_captions(3000)
    lengths = (tok(caps).argmax(-1) + 1).numpy()
    print(f"token lengths: mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, "
          f"<= 20: {np.mean(lengths <= 20):.0%}, at 77 (cut): {np.mean(lengths == 77):.0%}")
    for c in caps[:5]: print(repr(c))
