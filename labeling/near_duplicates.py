"""Near-duplicate prompts: MinHash LSH over the word bigrams of normalised text, free of the database.

Every text here is already normalised by `intake.normalise` (words of letters and digits, one space apart).
MinHash follows datasketch's "affine32" scheme, so a signature here equals `datasketch.MinHash` fed the
same shingles (a test holds them equal); it is computed for a whole chunk at once with numpy, which is
what keeps an import fast. Each prompt stores one key per band in an indexed column, so an import finds
the stored prompts that share a band with one indexed query per chunk; each pair found is then confirmed
by the Jaccard similarity of the two bigram sets, which the MinHash estimates.

The band shape is fixed, not a setting: changing it would orphan every stored key. Four bands of four
values find a pair of similarity 0.8 with probability 0.88, of 0.9 with 0.99, and one of 0.3 with 0.03.
"""

import functools
import re
import zlib
from itertools import chain

import numpy as np

LSH_BANDS = 4
LSH_ROWS = 4
MINHASH_SEED = 1
_BIGRAM_MULTIPLIER = np.uint32(0x9E3779B1)
_DIGIT = re.compile(r"\d")
_BAND_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
                     dtype=np.uint64)


def shingles(normalised):
    """The word bigrams of a normalised text, or its one word."""
    words = normalised.split(" ")
    return set(zip(words, words[1:])) if len(words) > 1 else {(normalised,)}


def numbers(normalised):
    """The words holding a digit, in order. Prompts that differ in them are different prompts."""
    return tuple(word for word in normalised.split(" ") if _DIGIT.search(word))


def similarity(first, second):
    """Jaccard similarity of two normalised texts' bigrams; 0 when their numbers differ."""
    if numbers(first) != numbers(second):
        return 0.0
    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b)


def _word_hash(word):
    return zlib.crc32(word.encode())


def shingle_hash(shingle):
    """The 32-bit hash MinHash takes of one shingle; `minhash_signatures` computes the same for many at once."""
    if len(shingle) == 1:
        return _word_hash(shingle[0])
    return (_word_hash(shingle[0]) * int(_BIGRAM_MULTIPLIER) + _word_hash(shingle[1])) & 0xFFFFFFFF


@functools.cache
def _permutations():
    """datasketch's affine32 permutations for MINHASH_SEED, drawn as `MinHash(num_perm, seed)` draws them.

    Drawn here rather than taken from a MinHash because importing datasketch brings in scipy, which costs
    every worker 40 MB and a second and a half; a test holds the two equal.
    """
    generator = np.random.RandomState(MINHASH_SEED)
    count = LSH_BANDS * LSH_ROWS
    a = generator.randint(0, 1 << 31, count, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, count, dtype=np.uint32)
    return a, b


def _fmix32(values):
    """MurmurHash3's finalizer, which datasketch applies to each shingle hash before permuting it."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def _fmix64(values):
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))


class _Words(dict):
    """Each word's 32-bit hash, with bit 32 set when the word holds a digit; words repeat, so each is hashed once."""

    def __missing__(self, word):
        value = self[word] = _word_hash(word) | (_DIGIT.search(word) is not None) << 32
        return value


def _word_values(normalised_texts):
    """The words of many texts as one array of `_Words` values, and where each text starts and ends in it."""
    words = [text.split(" ") for text in normalised_texts]
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    values = np.fromiter(map(_Words().__getitem__, chain.from_iterable(words)), dtype=np.uint64,
                         count=int(lengths.sum()))
    ends = np.cumsum(lengths)
    return values, ends - lengths, ends


def minhash_signatures(normalised_texts):
    """MinHash signatures of many normalised texts, one row each, in one pass of numpy.

    Row i equals `datasketch.MinHash(num_perm=16, seed=1, hashfunc=shingle_hash)` updated with
    `shingles(normalised_texts[i])`; doing it for a whole chunk at once is what keeps imports fast.
    """
    return _signatures(*_word_values(normalised_texts))


def _signatures(values, starts, ends):
    flat = (values & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    lengths = ends - starts
    # A word's bigram starts at it unless it is the last of its text; a one-word text keeps its word.
    following = np.append(flat[1:], np.uint32(0))
    shingle_values = flat * _BIGRAM_MULTIPLIER + following
    keep = np.ones(len(flat), dtype=bool)
    keep[ends - 1] = False
    single = starts[lengths == 1]
    keep[single] = True
    shingle_values[single] = flat[single]
    counts = np.maximum(lengths - 1, 1)
    a, b = _permutations()
    permuted = _fmix32(shingle_values[keep])[:, None] * a[None, :] + b[None, :]
    return np.minimum.reduceat(permuted, np.cumsum(counts) - counts, axis=0)


def _number_keys(values, starts, ends):
    """An order-sensitive hash of each text's words that hold a digit: a polynomial over their word hashes."""
    has_digit = (values >> np.uint64(32)).astype(bool)
    rank = np.cumsum(has_digit)  # then, less the count before the text: each digit word's place among them
    rank -= np.repeat(rank[starts] - has_digit[starts], ends - starts)
    terms = np.where(has_digit, (values & np.uint64(0xFFFFFFFF)) * np.power(_BAND_MIX[0], rank.astype(np.uint64)), 0)
    return np.add.reduceat(terms.astype(np.uint64), starts)


def lsh_bands(normalised_texts):
    """One tuple of LSH_BANDS signed 64-bit keys per text. Texts share a key when a band of their
    MinHash signatures is equal and so are their numbers."""
    if not normalised_texts:
        return []
    values, starts, ends = _word_values(normalised_texts)
    signatures = _signatures(values, starts, ends).astype(np.uint64).reshape(-1, LSH_BANDS, LSH_ROWS)
    keys = _fmix64(_number_keys(values, starts, ends))[:, None] + np.arange(LSH_BANDS, dtype=np.uint64)[None, :]
    for row in range(LSH_ROWS):
        keys = _fmix64(keys * _BAND_MIX[row] + signatures[:, :, row])
    return [tuple(band) for band in keys.view(np.int64).tolist()]
