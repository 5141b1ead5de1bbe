"""Sparse features in the Python layer: scipy.sparse input, checked once and kept in compressed sparse row form.

A :class:`SparseFeatures` stands where a dense feature matrix would: it has a length,
a shape and a dtype, and row selections (``X[rows]``) give another, so the training,
cross-validation and prediction code that slices ``X`` takes either.  The kernels read
its :class:`~fastbp._backends.SparseRows`; a backend without sparse kernels, and a
network with layers beyond dense ones (convolutions read whole images), get its rows
densified instead (:func:`kernel_rows`).
"""

from __future__ import annotations

import numpy as np

from ._backends import Backend, SparseRows


def is_sparse(X) -> bool:
    """Whether ``X`` is a scipy.sparse matrix or array (which numpy would make an array of objects)."""
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


class SparseFeatures:
    """Finite sparse rows of float64 or float32 features, CSR with ``intp`` indices, which the kernels take.

    Row selections share the arrays where they can: a contiguous range of rows
    (``X[start:stop]``) is a view; other selections copy the rows' nonzeros.
    """

    __slots__ = ("rows", "n_features")

    def __init__(self, rows: SparseRows, n_features: int):
        self.rows = rows
        self.n_features = n_features

    @classmethod
    def of(cls, X, dtype: np.dtype, n_features: int | None = None) -> SparseFeatures:
        """A scipy.sparse matrix or array of any format (or a ``SparseFeatures``) in ``dtype``, or a clear error."""
        from ._validate import kernel_array

        if isinstance(X, SparseFeatures):
            rows = X.rows
            shape = X.shape
        else:
            if X.ndim != 2:
                raise ValueError(f"X must be 2-D (rows x features), got a sparse array of shape {X.shape}")
            if X.dtype.kind not in "biuf":
                raise ValueError(f"X must be numeric, got a sparse matrix of dtype {X.dtype}")
            check_structure(X)
            csr = X.tocsr()
            shape = csr.shape
            stored = int(csr.indptr[-1])  # a CSR matrix given may hold values past its last row's
            rows = SparseRows(
                np.require(csr.indptr, np.intp, ["C", "W"]),
                np.require(csr.indices[:stored], np.intp, ["C", "W"]),
                csr.data[:stored],
            )
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"X must have at least one row and one feature, got shape {shape}")
        if n_features is not None and shape[1] != n_features:
            raise ValueError(f"X has {shape[1]} features, the model expects {n_features}")
        values = rows.values
        if values.dtype.kind != "f":
            values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("X contains NaN or infinity")
        return cls(rows._replace(values=kernel_array(values, dtype, "X")), shape[1])

    def __len__(self) -> int:
        return len(self.rows.indptr) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.n_features)

    @property
    def dtype(self) -> np.dtype:
        return self.rows.values.dtype

    @property
    def nnz(self) -> int:
        """The stored values of these rows (explicit zeros included)."""
        return int(self.rows.indptr[-1] - self.rows.indptr[0])

    def __getitem__(self, index) -> SparseFeatures:
        """The rows ``index`` picks (a slice, integer positions or a boolean mask), as numpy would pick them."""
        indptr, indices, values = self.rows
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(len(self))
            return SparseFeatures(self.rows._replace(indptr=indptr[start : max(start, stop) + 1]), self.n_features)
        picked = np.arange(len(self))[index]
        if picked.ndim != 1:
            raise IndexError("sparse rows are picked by a slice, integer positions or a boolean mask")
        starts, lengths = indptr[picked], indptr[picked + 1] - indptr[picked]
        new_indptr = np.zeros(len(picked) + 1, dtype=np.intp)
        np.cumsum(lengths, out=new_indptr[1:])
        positions = np.repeat(starts - new_indptr[:-1], lengths) + np.arange(new_indptr[-1])
        return SparseFeatures(SparseRows(new_indptr, indices[positions], values[positions]), self.n_features)

    def to_scipy(self):
        """The rows as a ``scipy.sparse.csr_array`` (sharing the values where they are contiguous)."""
        from scipy.sparse import csr_array

        indptr, indices, values = self.rows
        first, last = indptr[0], indptr[-1]
        return csr_array((values[first:last], indices[first:last], indptr - first), shape=self.shape)

    def toarray(self) -> np.ndarray:
        """The rows as a dense matrix."""
        return np.ascontiguousarray(self.to_scipy().toarray())

    def astype(self, dtype: np.dtype) -> SparseFeatures:
        return self if dtype == self.dtype else SparseFeatures.of(self, dtype)


def kernel_rows(X: np.ndarray | SparseFeatures, backend: Backend, dense_only: bool) -> np.ndarray | SparseRows:
    """Rows as the kernels take them: sparse rows as ``SparseRows`` for a backend with sparse kernels and a
    network of dense layers, else densified."""
    if not isinstance(X, SparseFeatures):
        return X
    if backend.capabilities.sparse and dense_only:
        return X.rows
    return X.toarray()


def check_structure(X) -> None:
    """Refuse a sparse matrix whose stored structure points outside its shape, before scipy converts it (it
    follows the pointers and indices unchecked, in compiled code) and before the kernels index the weights by
    them: scipy builds a matrix from the arrays it is given without checking them."""
    n_rows, n_columns = X.shape
    if X.format in ("csr", "csc", "bsr"):
        block_rows, block_columns = X.blocksize if X.format == "bsr" else (1, 1)
        if X.format == "csc":
            n_major, n_minor, minor = n_columns, n_rows, "row"
        else:
            n_major, n_minor, minor = n_rows // block_rows, n_columns // block_columns, "column"
        _check_compressed(X.indptr, X.indices, len(X.data), n_major, n_minor, minor)
    elif X.format == "coo":
        for coordinates, n, name in ((X.row, n_rows, "row"), (X.col, n_columns, "column")):
            if len(coordinates) and (coordinates.min() < 0 or coordinates.max() >= n):
                raise ValueError(f"X is a malformed sparse matrix: its {name} indices must lie in [0, {n})")


def _check_compressed(indptr, indices, n_stored: int, n_major: int, n_minor: int, minor: str) -> None:
    """A compressed matrix's pointers rise from 0, one per row (or column) and one more, to at most the values
    stored, and its indices of the other axis lie within it."""
    if (
        indptr.ndim != 1
        or len(indptr) != n_major + 1
        or indptr[0] != 0
        or (np.diff(indptr) < 0).any()
        or indptr[-1] > min(len(indices), n_stored)
    ):
        raise ValueError(
            "X is a malformed sparse matrix: its indptr must rise from 0, one entry per row and one more, to at "
            "most the number of stored values"
        )
    indices = indices[: indptr[-1]]
    if len(indices) and (indices.min() < 0 or indices.max() >= n_minor):
        raise ValueError(f"X is a malformed sparse matrix: its {minor} indices must lie in [0, {n_minor})")
