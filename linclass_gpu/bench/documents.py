"""A synthetic document-classification task: Zipf-distributed words, hashed into a bag-of-words CSR matrix.

Each document draws its class uniformly, then its words: most from one background vocabulary whose word frequencies
follow Zipf's law (rank r drawn with probability ∝ r^−exponent, as in natural text), a share ``topic_share`` from its
class's own topic (the same Zipf law over a class-specific random order of the vocabulary, so each class has its own
frequent words). Words are hashed into ``n_features`` columns with a sign (the hashing trick: colliding words tend to
cancel instead of adding up), counted, and each row scaled to unit L2 norm, as scikit-learn's ``HashingVectorizer``
makes them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

# Knuth's multiplicative hash: the top bits of word·2654435761 mod 2³² spread consecutive word ids over the columns.
HASH_MULTIPLIER = 2654435761


def zipf_ranks(rng: np.random.Generator, size: int, vocabulary: int, exponent: float) -> np.ndarray:
    """``size`` word ranks in ``[0, vocabulary)`` with ``P(r) ∝ (r + 1)^−exponent`` (inverse CDF)."""
    weights = np.arange(1, vocabulary + 1, dtype=np.float64) ** -exponent
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right").clip(max=vocabulary - 1)


def hash_words(words: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Column (the top ``log2(n_features)`` bits of the hash) and sign (its lowest bit) of each word id."""
    if n_features < 2 or n_features & (n_features - 1):
        raise ValueError(f"n_features must be a power of 2, got {n_features}")
    bits = int(n_features).bit_length() - 1
    hashed = (words.astype(np.uint64) * np.uint64(HASH_MULTIPLIER)) & np.uint64(0xFFFFFFFF)
    columns = (hashed >> np.uint64(32 - bits)).astype(np.int32)
    signs = np.where(hashed & np.uint64(1), -1.0, 1.0).astype(np.float32)
    return columns, signs


def bag_of_words(rows: np.ndarray, words: np.ndarray, n_documents: int, n_features: int) -> scipy.sparse.csr_array:
    """The documents' hashed, L2-normalised bag of words: word ``words[k]`` of document ``rows[k]`` hashed into a
    signed column (:func:`hash_words`), a document's words summed.

    Returns
    -------
    scipy.sparse.csr_array of float32, shape (n_documents, n_features)
        Rows of unit L2 norm (an empty row stays empty), sorted column indices, int32 indices where they fit.
    """
    columns, signs = hash_words(words, n_features)
    X = scipy.sparse.csr_array((signs, (rows, columns)), shape=(n_documents, n_features), dtype=np.float32)
    X.sum_duplicates()
    X.eliminate_zeros()  # words whose signed hashes cancelled
    norms = np.sqrt(np.add.reduceat(X.data**2, X.indptr[:-1])) if X.nnz else np.zeros(0)
    norms = np.where(np.diff(X.indptr) > 0, norms, 1.0)  # reduceat reads past an empty row: give it norm 1
    X.data /= np.repeat(norms, np.diff(X.indptr)).astype(np.float32)
    if X.nnz < 2**31:  # 32-bit indices, which every consumer takes (scikit-learn's SGD refuses 64-bit ones)
        X.indices, X.indptr = X.indices.astype(np.int32, copy=False), X.indptr.astype(np.int32, copy=False)
    return X


def hashed_documents(n_documents: int, *, n_features: int = 2**18, n_classes: int = 20, words_per_document: int = 130,
                     vocabulary: int = 200_000, topic_share: float = 0.08, exponent: float = 1.05,
                     seed: int = 0) -> tuple[scipy.sparse.csr_array, np.ndarray]:
    """Documents as a hashed, L2-normalised bag-of-words.

    Parameters
    ----------
    n_documents : int
        ``N``.
    n_features : int
        ``D``, a power of 2 (the hash's top bits).
    n_classes : int
    words_per_document : int
        Words drawn per document; repeated words make the distinct columns per row fewer (~100 by default).
    vocabulary : int
        Distinct words.
    topic_share : float
        Probability that a word comes from the document's class topic rather than the background: the task's
        difficulty.
    exponent : float
        Zipf exponent of both word distributions.
    seed : int

    Returns
    -------
    X : scipy.sparse.csr_array of float32, shape (N, D)
        Rows of unit L2 norm, duplicate words summed, sorted column indices.
    y : ndarray of int64, shape (N,)
        Class ids in ``[0, n_classes)``.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_documents)
    n_words = n_documents * words_per_document
    words = zipf_ranks(rng, n_words, vocabulary, exponent)
    from_topic = rng.random(n_words) < topic_share
    topic_order = np.stack([rng.permutation(vocabulary) for _ in range(n_classes)])  # each class's word ranking
    document_class = np.repeat(y, words_per_document)
    words[from_topic] = topic_order[document_class[from_topic], words[from_topic]]
    rows = np.repeat(np.arange(n_documents, dtype=np.int32), words_per_document)
    X = bag_of_words(rows, words, n_documents, n_features)
    return X, y
