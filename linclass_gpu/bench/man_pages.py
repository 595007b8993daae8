"""Real text for ``bench documents --corpus man-pages``: the machine's manual pages, classified by their section.

Every Unix machine with man pages installed holds a labelled corpus: ``/usr/share/man/man<S>/*.<S>*.gz``, each page
filed under its section (1 user commands, 2 system calls, 3 library functions, 5 file formats, 7 overviews, 8
administration, ...). The task is to tell a page's section from its words. Each page becomes a hashed,
L2-normalised bag of words (:func:`.documents.bag_of_words`, as the synthetic documents are made) of its lowercase
words (letters, digits and underscores, starting with a letter) in ``n_features`` signed columns. What would give
the answer away is dropped: the title line (``.TH name section ...``, which states the section) and troff's
comments; pages that only redirect to another (``.so``, or a symbolic link) or hold fewer than ``min_words`` words
are skipped.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse

from .documents import bag_of_words

MAN_ROOT = Path("/usr/share/man")
WORD = re.compile(rb"[a-z][a-z0-9_]+")


def page_words(text: bytes) -> list[bytes]:
    """The words of one troff page, without its title line and comments (see the module notes)."""
    lines = (line for line in text.lower().splitlines() if not line.startswith((b".th", b'.\\"', b"'\\\"")))
    return WORD.findall(b"\n".join(lines))


def man_page_documents(root: str | Path = MAN_ROOT, *, n_features: int = 2**18, min_words: int = 20,
                       min_pages: int = 100) -> tuple[scipy.sparse.csr_array, np.ndarray, list[str]]:
    """The man pages under ``root`` as hashed bags of words, labelled by section.

    Parameters
    ----------
    root : str or Path
        A man page tree: ``root/man<S>/`` directories of pages, gzip-compressed or not.
    n_features : int
        ``D``, a power of 2.
    min_words : int
        Pages with fewer words are skipped (redirects, stubs).
    min_pages : int
        Sections with fewer pages are left out (too few to learn or test on).

    Returns
    -------
    X : scipy.sparse.csr_array of float32, shape (N, n_features)
        One unit-norm row per page, in the order of the sorted file paths; int32 indices where they fit.
    y : int64 ndarray, shape (N,)
        Index of each page's section in ``sections``.
    sections : list of str
        The sections kept, e.g. ``["1", "2", "3", "5", "7", "8"]``.

    Raises
    ------
    FileNotFoundError
        ``root`` holds no section with ``min_pages`` usable pages.
    """
    pages: dict[str, list[list[bytes]]] = {}
    for directory in sorted(Path(root).glob("man*")):
        section = directory.name[3:]
        for path in sorted(directory.iterdir()):
            if path.is_symlink() or not path.is_file():  # a link is another name of a page read once
                continue
            text = path.read_bytes()
            if path.suffix == ".gz":
                text = gzip.decompress(text)
            if text.startswith(b".so "):
                continue
            words = page_words(text)
            if len(words) >= min_words:
                pages.setdefault(section, []).append(words)
    sections = [section for section in sorted(pages) if len(pages[section]) >= min_pages]
    if not sections:
        raise FileNotFoundError(f"no man page section under {root} has {min_pages} pages of {min_words} words or more")
    documents = [words for section in sections for words in pages[section]]
    y = np.concatenate([np.full(len(pages[section]), index) for index, section in enumerate(sections)])
    # crc32 is a fixed function of the word's bytes (Python's hash() is salted per process); the hash spreads it.
    word_ids = np.fromiter((zlib.crc32(word) for words in documents for word in words), dtype=np.uint64)
    rows = np.repeat(np.arange(len(documents)), [len(words) for words in documents])
    return bag_of_words(rows, word_ids, len(documents), n_features), y.astype(np.int64), sections
