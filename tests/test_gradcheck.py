"""gradcheck must pass a right backward and catch a wrong one, in every mode."""

import numpy as np
import pytest

import minirec as mr


class WrongSquare(mr.Function):
    """x² with a backward that is off by a small factor: what a subtle bug looks like."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_arrays
        return (grad * 2 * x * (1 + 1e-4),)


class RightSquare(WrongSquare):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_arrays
        return (grad * 2 * x,)


def x64(shape=(3, 4), seed=0):
    return mr.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("mode", ["gradient", "jacobian", "projection"])
def test_right_backward_passes(mode):
    result = mr.gradcheck(RightSquare.apply, [x64()], mode=mode)
    assert result.passed and result.max_rel_error < 1e-8


@pytest.mark.parametrize("mode", ["gradient", "jacobian", "projection"])
def test_wrong_backward_fails(mode):
    with pytest.raises(mr.GradcheckError, match="FAILED"):
        mr.gradcheck(WrongSquare.apply, [x64()], mode=mode)
    result = mr.gradcheck(WrongSquare.apply, [x64()], mode=mode, raise_on_failure=False)
    assert not result.passed and result.max_rel_error > 1e-5


def test_report_locates_the_worst_element():
    class WrongAtOne(RightSquare):
        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_arrays
            g = grad * 2 * x
            g[1, 2] += 0.5
            return (g,)

    result = mr.gradcheck(WrongAtOne.apply, [x64()], raise_on_failure=False)
    assert result.inputs[0].worst_at == (1, 2)
    assert "(1, 2)" in str(result)


def test_auto_mode_projects_large_inputs():
    big = x64((100, 50))
    assert mr.gradcheck(lambda x: mr.tanh(x) * 2, [big]).mode == "projection"
    assert mr.gradcheck(lambda x: mr.tanh(x) * 2, [x64()]).mode == "gradient"


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")  # the NaN it reports
def test_nan_is_reported_not_passed():
    x = mr.tensor(np.array([1.0, -1.0]), requires_grad=True)
    with pytest.raises(mr.GradcheckError, match="NaN or inf"):
        mr.gradcheck(mr.log, [x])
    with pytest.raises(mr.GradcheckError, match="input 0"):
        mr.gradcheck(mr.tanh, [mr.tensor(np.array([np.nan]), requires_grad=True)])


def test_float32_inputs_are_refused():
    with pytest.raises(TypeError, match="float64"):
        mr.gradcheck(mr.tanh, [mr.tensor(np.ones(3, dtype=np.float32), requires_grad=True)])


def test_multiple_outputs_and_inputs_without_grad():
    a, b = x64(seed=1), mr.tensor(np.ones((3, 4)))
    result = mr.gradcheck(lambda a, b: (a * b, mr.exp(a)), [a, b])
    assert [r.index for r in result.inputs] == [0]


def test_inputs_that_cannot_be_read_back_are_refused():
    x = mr.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="inputs \\[0, 1\\] are the same tensor"):
        mr.gradcheck(lambda a, b: a * b, [x, x])  # the second would read a cleared .grad: "analytic 0"
    with pytest.raises(ValueError, match="input 0 is computed from other tensors"):
        mr.gradcheck(lambda a: a * a, [x * 2.0])


class ExpWithAHole(mr.Function):
    """exp(x) whose backward forgets the entries below −14: ~1e-7 of the largest gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_arrays
        return (grad * np.where(x < -14, 0.0, np.exp(x)),)


class TinySquare(mr.Function):
    """1e-6·x² whose backward is 50 % too large: every gradient entry is below atol = 1e-9."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 1e-6 * x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_arrays
        return (grad * 1.5 * 2e-6 * x,)


@pytest.mark.parametrize("fn, x", [
    (ExpWithAHole.apply, np.linspace(-16.0, 2.0, 19)),  # the per-input relative error is ~1e-7 only
    (TinySquare.apply, 1e-3 * np.random.default_rng(0).standard_normal((3, 4))),  # below atol everywhere
], ids=["error-in-small-entries", "gradient-below-atol"])
def test_entries_are_checked_against_their_own_noise(fn, x):
    x = mr.tensor(x, requires_grad=True)
    result = mr.gradcheck(fn, [x], mode="gradient", raise_on_failure=False)
    assert not result.passed, str(result)
    assert "more than its finite difference's noise" in str(result)
    assert result.inputs[0].rel_error < 1e-6 or result.inputs[0].max_abs_error < 1e-9  # the old rule passed it
