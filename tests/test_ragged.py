import numpy as np
import pytest
import torch

from mvstore import Ragged, as_ragged
from mvstore.exceptions import DimensionMismatchError, InvalidDtypeError, InvalidVectorsError


def docs(rng, lengths=(3, 1, 5), dim=4):
    return [rng.standard_normal((n, dim)).astype(np.float32) for n in lengths]


def test_from_list_packs_and_indexes(rng):
    d = docs(rng)
    r = Ragged.from_list(d)
    assert len(r) == 3 and r.n_tokens == 9 and r.dim == 4
    assert r.offsets.tolist() == [0, 3, 4, 9]
    for i in range(3):
        np.testing.assert_array_equal(r[i], d[i])
    np.testing.assert_array_equal(r[-1], d[2])
    assert r.segment_ids().tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2]
    with pytest.raises(IndexError, match="out of range"):
        r[3]


def test_take_slice_mask_and_concat(rng):
    d = docs(rng)
    r = Ragged.from_list(d)
    t = r.take([2, 0, 2])
    assert t.lengths.tolist() == [5, 3, 5]
    np.testing.assert_array_equal(t[1], d[0])
    np.testing.assert_array_equal(r[1:][0], d[1])
    np.testing.assert_array_equal(r[np.array([False, True, True])][1], d[2])
    c = Ragged.concat([r, t])
    assert len(c) == 6 and c.offsets[-1] == c.n_tokens == 22
    np.testing.assert_array_equal(c[3], d[2])


def test_torch_inputs_and_views(rng):
    d = [torch.randn(2, 3), torch.randn(4, 3, dtype=torch.float64), torch.randn(1, 3, dtype=torch.bfloat16)]
    r = Ragged.from_list(d)
    assert r.values.dtype == np.float32 and r.lengths.tolist() == [2, 4, 1]
    v, o = r.torch()
    assert v.shape == (7, 3) and o.tolist() == [0, 2, 6, 7]
    v[0, 0] = 123.0  # zero-copy view
    assert r.values[0, 0] == 123.0


def test_from_padded_drops_padding():
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    r = Ragged.from_padded(x, mask)
    assert r.lengths.tolist() == [2, 1]
    np.testing.assert_array_equal(r[1], x[1, :1].numpy())


def test_bad_inputs_each_name_the_problem(rng):
    good = docs(rng)
    with pytest.raises(
        InvalidVectorsError, match=r"document 0 has a NaN or Inf value at token 1 \(or one beyond"
    ):
        Ragged.from_list([np.array([[0.0, 1.0], [1e39, 0.0]])])  # finite float64, inf as float32
    with pytest.raises(InvalidVectorsError, match="document 1 has a NaN or Inf value at token 0"):
        Ragged.from_list([good[0], np.array([[np.nan, 0, 0, 0]], np.float32)])
    with pytest.raises(InvalidVectorsError, match="NaN or Inf"):
        Ragged.from_list([np.array([[np.inf, 0, 0, 0]], np.float32)])
    with pytest.raises(DimensionMismatchError, match="document 1 has dim 5 but document 0 has dim 4"):
        Ragged.from_list([good[0], np.zeros((2, 5), np.float32)])
    with pytest.raises(DimensionMismatchError, match="document 0 has dim 4 but the index has dim 8"):
        Ragged.from_list(good, dim=8)
    with pytest.raises(InvalidVectorsError, match="document 1 has no token vectors"):
        Ragged.from_list([good[0], np.zeros((0, 4), np.float32)])
    with pytest.raises(InvalidDtypeError, match="int64.*astype"):
        Ragged.from_list([np.ones((2, 4), np.int64)])
    with pytest.raises(InvalidDtypeError, match="floating point"):
        Ragged.from_list([torch.ones(2, 4, dtype=torch.int32)])
    with pytest.raises(InvalidVectorsError, match="2-D"):
        Ragged.from_list([np.ones(4, np.float32)])
    with pytest.raises(InvalidDtypeError, match="from_padded"):
        Ragged.from_list(np.ones((2, 3, 4), np.float32))
    with pytest.raises(InvalidDtypeError, match="expected a numpy array"):
        Ragged.from_list(["not a matrix"])
    with pytest.raises(InvalidVectorsError, match="offsets must start at 0"):
        Ragged(np.zeros((3, 2), np.float32), np.array([0, 2]))
    with pytest.raises(InvalidVectorsError, match="all-zero mask"):
        Ragged.from_padded(np.zeros((2, 2, 3), np.float32), np.array([[1, 0], [0, 0]]))
    with pytest.raises(InvalidVectorsError, match="mask shape"):
        Ragged.from_padded(np.zeros((2, 2, 3), np.float32), np.ones((2, 3)))


def test_as_ragged_coerces_and_validates(rng):
    d = docs(rng)
    r = as_ragged(d, dim=4)
    assert isinstance(r, Ragged) and as_ragged(r) is r
    with pytest.raises(InvalidVectorsError, match="list of per-document matrices"):
        as_ragged(d[0])
    with pytest.raises(InvalidVectorsError, match="from_padded"):
        as_ragged(np.zeros((2, 3, 4), np.float32))
    for one_vector in (d[0][0], torch.from_numpy(d[0][0])):  # not "document 0 is a float32"
        with pytest.raises(InvalidVectorsError, match=r"1-D array of shape \(4,\).*x.reshape\(1, -1\)"):
            as_ragged(one_vector)
    with pytest.raises(DimensionMismatchError, match="dim 4 but dim 8"):
        as_ragged(r, dim=8)
    with pytest.raises(InvalidDtypeError, match="sequence"):
        as_ragged("text")
    bad = Ragged(np.array([[np.nan, 0.0]], np.float32), np.array([0, 1]))
    with pytest.raises(InvalidVectorsError, match="NaN"):
        as_ragged(bad)
    empty_doc = Ragged(np.zeros((1, 2), np.float32), np.array([0, 0, 1]))
    with pytest.raises(InvalidVectorsError, match="document 0 has no token vectors"):
        as_ragged(empty_doc)
