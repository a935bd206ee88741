"""Recovery times, order and plateau end on constructed trajectories."""

import numpy as np
import pytest

from jaxmoe.observables import first_crossing, plateau_end, quartiles, recovery, recovery_order


def _trajectory():
    """2 seeds, 5 times, 3 students, 2 teachers, with known crossings of 0.95."""
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    a = np.zeros((2, 5, 3, 2))
    # seed 0: student 2 reaches teacher 0 between t = 1 and 2 (0.5 → 1.0: crosses 0.95 at 1.9);
    # student 0 reaches teacher 1 exactly at t = 3.
    a[0, :, 2, 0] = [0.1, 0.5, 1.0, 1.0, 1.0]
    a[0, :, 0, 1] = [0.0, 0.2, 0.6, 0.95, 0.99]
    # seed 1: teacher 1 first (student 1 at t = 0: already there), teacher 0 never.
    a[1, :, 1, 1] = [0.97, 0.98, 0.99, 1.0, 1.0]
    a[1, :, 0, 0] = [0.3, 0.4, 0.6, 0.7, 0.9]
    return a, times


def test_recovery_times_and_students():
    a, times = _trajectory()
    t, student = recovery(a, times, epsilon=0.05)
    np.testing.assert_allclose(t[0], [1.9, 3.0], rtol=1e-12)
    assert t[1, 1] == 0.0 and np.isinf(t[1, 0])
    assert student.tolist() == [[2, 0], [-1, 1]]
    assert recovery_order(t).tolist() == [[0, 1], [1, 0]]


def test_epsilon_changes_the_threshold():
    a, times = _trajectory()
    t, _ = recovery(a, times, epsilon=0.5)  # threshold 0.5
    np.testing.assert_allclose(t[0], [1.0, 1.75], rtol=1e-12)
    with pytest.raises(ValueError, match="epsilon must be in"):
        recovery(a, times, epsilon=1.5)


def test_plateau_end_and_nan_handling():
    a, times = _trajectory()
    np.testing.assert_allclose(plateau_end(a, times, level=0.5), [1.0, 0.0])
    a[0, 1:, :, :] = np.nan  # a failed seed: nothing after t = 0 counts
    t, student = recovery(a, times)
    assert np.all(np.isinf(t[0])) and student[0].tolist() == [-1, -1]


def test_first_crossing_interpolates():
    curve = np.array([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(first_crossing(curve, np.array([0.0, 10.0, 20.0]), 1.5), [15.0, 0.0, np.inf])


def test_quartiles():
    q = quartiles(np.array([[1.0], [2.0], [3.0], [4.0], [np.inf]]))
    assert (q["q25"][0], q["median"][0], q["q75"][0]) == (2.0, 3.0, 4.0)
