"""The fused LSQ path (`implementation="fused"`, a `tf.custom_gradient`) against
the reference `keras.ops` composition: forward values, both first derivatives
(Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. 1-3) and second
derivatives, at clip boundaries and exact rounding ties too."""

import numpy as np
import pytest
import tensorflow as tf

from kqrobust import ops as kops

IMPLEMENTATIONS = ("fused", "reference")
# (bits, signed, narrow_range): every grid shape LSQ has.
GRIDS = [(4, True, True), (8, True, True), (8, True, False), (2, True, True), (4, False, False)]


def hard_points(step, bits, signed, narrow):
    """Exact ties (`x / s = k + 0.5` as the reference computes it) and the
    clip boundaries with their float neighbours, for one step `s`."""
    qn, qp = kops.quant_levels(bits, signed, narrow)
    step = np.float32(step)
    codes = np.arange(-qn - 2, qp + 2, dtype=np.float32)
    ties = (codes + np.float32(0.5)) * step
    ties = ties[ties / step == codes + np.float32(0.5)]
    bounds = np.array([-qn * step, qp * step], np.float32)
    near = np.concatenate(
        [
            bounds,
            np.nextafter(bounds, np.float32(np.inf)),
            np.nextafter(bounds, np.float32(-np.inf)),
        ]
    )
    return np.concatenate([ties, near, codes * step]).astype(np.float32), len(ties)


def values_and_gradients(
    implementation, x, step, bits, signed, narrow, g=1.0, offset=None, compiled=False
):
    """`x_hat`, `d sum(w * x_hat) / dx` and `/ ds` (and `/ d offset`) on one path."""
    weights = tf.constant(np.linspace(-1.5, 2.0, x.size).reshape(x.shape).astype("float32"))

    def run(x, step, offset):
        with tf.GradientTape() as tape:
            tape.watch([x, step] + ([] if offset is None else [offset]))
            y = kops.lsq_quantize(
                x,
                step,
                bits,
                signed=signed,
                narrow_range=narrow,
                grad_scale=g,
                offset=offset,
                implementation=implementation,
            )
            loss = tf.reduce_sum(weights * y)
        return [y] + tape.gradient(loss, [x, step] + ([] if offset is None else [offset]))

    fn = tf.function(run, jit_compile=compiled) if compiled is not False else run
    out = fn(tf.constant(x), tf.constant(step), None if offset is None else tf.constant(offset))
    return [t.numpy() for t in out]


@pytest.mark.parametrize("bits,signed,narrow", GRIDS)
@pytest.mark.parametrize("step", [0.37, 0.1, 0.0625, 1.7e-3])
def test_fused_matches_reference_at_ties_and_boundaries(bits, signed, narrow, step):
    x, n_ties = hard_points(step, bits, signed, narrow)
    assert n_ties >= 3  # the ties are in the data, not filtered away
    x = np.concatenate(
        [x, np.random.default_rng(bits).normal(size=200).astype("float32") * 40 * np.float32(step)]
    )
    fused = values_and_gradients("fused", x, np.float32(step), bits, signed, narrow, g=0.3)
    reference = values_and_gradients("reference", x, np.float32(step), bits, signed, narrow, g=0.3)
    np.testing.assert_array_equal(fused[0], reference[0])  # bit for bit, ties included
    np.testing.assert_allclose(fused[1], reference[1], rtol=0, atol=1e-6)
    # The ties round half to even and the boundaries pass the gradient, as NumPy says.
    qn, qp = kops.quant_levels(bits, signed, narrow)
    u = (tf.constant(x) / np.float32(step)).numpy()  # TF's quotient, which both paths use
    np.testing.assert_array_equal(fused[0], np.round(np.clip(u, -qn, qp)) * np.float32(step))
    weights = np.linspace(-1.5, 2.0, x.size).astype("float32")
    inside = (u >= -qn) & (u <= qp)
    np.testing.assert_array_equal(fused[1], np.where(inside, weights, 0))
    # d/ds: LSQ's eq. 3 summed in float64. The fused sum agrees to 1e-6; the
    # reference subtracts two float32 sums and is off by up to ~3e-6.
    per_element = np.where(inside, np.round(u) - u, np.clip(u, -qn, qp)).astype(np.float64)
    ds = 0.3 * np.sum(weights.astype(np.float64) * per_element)
    np.testing.assert_allclose(fused[2], ds, rtol=1e-6)
    np.testing.assert_allclose(reference[2], ds, rtol=1e-5)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_fused_matches_reference_per_channel_with_offset(mode):
    """Per-channel steps (depthwise-like trailing axes), LSQ+ offset, gradient scale."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4, 2)).astype("float32")
    step = rng.uniform(0.05, 0.4, size=(4, 2)).astype("float32")
    offset = rng.normal(size=(4, 2)).astype("float32") * 0.1
    compiled = {"eager": False, "graph": None, "xla": True}[mode]
    fused = values_and_gradients(
        "fused", x, step, 4, True, True, g=0.2, offset=offset, compiled=compiled
    )
    reference = values_and_gradients(
        "reference", x, step, 4, True, True, g=0.2, offset=offset, compiled=compiled
    )
    for a, b in zip(fused, reference):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_float16_input_gives_float16_output_on_both_paths():
    x = tf.constant(np.linspace(-2, 2, 41), "float16")
    fused = kops.lsq_quantize(x, 0.3, 4, implementation="fused")
    reference = kops.lsq_quantize(x, 0.3, 4, implementation="reference")
    assert fused.dtype == reference.dtype == tf.float16
    np.testing.assert_array_equal(fused.numpy(), reference.numpy())


def _hvps(implementation, method, compiled):
    """`H v` of a loss through two LSQ quantizers (a per-channel kernel and a
    per-tensor activation), over the kernel, the input and both steps."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(16, 6)).astype("float32"))
    params = [
        tf.Variable(rng.normal(size=(6, 4)).astype("float32")),
        tf.Variable(rng.uniform(0.05, 0.2, size=(4,)).astype("float32")),
        tf.Variable(0.4),
    ]
    vector = [tf.constant(rng.normal(size=p.shape).astype("float32")) for p in params]

    def loss():
        kernel, kernel_step, act_step = params
        w = kops.lsq_quantize(kernel, kernel_step, 4, grad_scale=0.5, implementation=implementation)
        a = kops.lsq_quantize(
            tf.tanh(tf.matmul(x, w)),
            act_step,
            4,
            signed=True,
            narrow_range=False,
            implementation=implementation,
        )
        return tf.reduce_sum(tf.sin(3 * a) + a**2)

    def forward():
        with tf.autodiff.ForwardAccumulator(params, vector) as acc:
            with tf.GradientTape() as tape:
                value = loss()
            grads = tape.gradient(value, params)
        return [acc.jvp(g) for g in grads]

    def reverse():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss()
            grads = inner.gradient(value, params)
        return outer.gradient(grads, params, output_gradients=vector)

    fn = {"forward": forward, "reverse": reverse}[method]
    fn = tf.function(fn) if compiled else fn
    return [t.numpy() for t in fn()]


@pytest.mark.parametrize(
    "method,compiled",
    [
        ("forward", True),
        ("reverse", True),
        ("reverse", False),
        pytest.param("forward", False, marks=pytest.mark.slow),  # eager forward-mode: 5 s
    ],
    ids=["forward-tf_function", "reverse-tf_function", "reverse-eager", "forward-eager"],
)
def test_fused_second_derivatives_match_reference(method, compiled):
    """Forward-over-reverse and nested tapes give the reference's `H v`
    (`tf.autodiff.ForwardAccumulator` does not use custom gradients inside a
    `tf.function`, so this is the case a fused-kernel forward gets wrong)."""
    fused = _hvps("fused", method, compiled)
    reference = _hvps("reference", method, compiled)
    for a, b in zip(fused, reference):  # float32 sums in different orders
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))
    assert max(np.abs(a).max() for a in fused) > 1e-2  # not trivially zero


def test_unknown_implementation_raises():
    with pytest.raises(
        ValueError,
        match=r"implementation must be one of .*Received: "
        r"implementation='fast'",
    ):
        kops.lsq_quantize(np.ones(3, "float32"), 0.1, 4, implementation="fast")


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed,narrow", [(True, True), (True, False), (False, False)])
def test_kernel_grid_is_the_lsq_grid_and_rounds_half_to_even(bits, signed, narrow):
    """The fused forward's `QuantizeAndDequantizeV2` attributes give exactly
    LSQ's grid `[-Qn, Qp]` with scale 1: on every code, every tie between two
    codes and points beyond both ends, it is NumPy's `round(clip(u))` (NumPy
    rounds half to even)."""
    from kqrobust.ops.lsq import _kernel_grid

    qn, qp = kops.quant_levels(bits, signed, narrow)
    num_bits, kernel_signed, kernel_narrow = _kernel_grid(qn, qp)
    codes = np.arange(-qn - 3, qp + 4, dtype=np.float32)
    u = np.concatenate([codes, codes + 0.5, codes + 0.25, codes - 0.3, [-1e9, 1e9]])
    u = u.astype(np.float32)
    out = tf.raw_ops.QuantizeAndDequantizeV2(
        input=u,
        input_min=-float(qn),
        input_max=float(qp),
        signed_input=kernel_signed,
        num_bits=num_bits,
        range_given=True,
        round_mode="HALF_TO_EVEN",
        narrow_range=kernel_narrow,
    ).numpy()
    np.testing.assert_array_equal(out, np.round(np.clip(u.astype(np.float64), -qn, qp)))


@pytest.mark.parametrize("compiled", [True, False], ids=["tf_function", "eager"])
@pytest.mark.parametrize(
    "bits,signed,narrow", [(4, True, True), (8, True, True), (3, False, False)]
)
def test_fused_forward_mode_derivative_matches_numpy(bits, signed, narrow, compiled):
    """`tf.autodiff.ForwardAccumulator` differentiates the fused forward's ops
    (it ignores `tf.custom_gradient`), so their derivative must be LSQ's:
    `d x_hat = inside * dx + (code - inside * u) * ds` (Esser et al., eq. 2-3),
    at ties and clip boundaries too (the boundaries are inside)."""
    step = np.float32(0.1)
    x, _ = hard_points(step, bits, signed, narrow)
    rng = np.random.default_rng(bits)
    x = np.concatenate([x, rng.normal(size=100).astype("float32") * 20 * step])
    tx = rng.normal(size=x.shape).astype("float32")
    ts = np.float32(0.7)

    def jvp(x, s):
        with tf.autodiff.ForwardAccumulator([x, s], [tf.constant(tx), tf.constant(ts)]) as acc:
            y = kops.lsq_quantize(
                x, s, bits, signed=signed, narrow_range=narrow, implementation="fused"
            )
        return y, acc.jvp(y)

    fn = tf.function(jvp) if compiled else jvp
    y, dy = (t.numpy() for t in fn(tf.constant(x), tf.constant(step)))
    qn, qp = kops.quant_levels(bits, signed, narrow)
    u = (tf.constant(x) / step).numpy().astype(np.float64)  # TF's quotient, as the paths use
    inside = (u >= -qn) & (u <= qp)
    code = np.round(np.clip(u, -qn, qp))
    np.testing.assert_array_equal(y, (code * step).astype(np.float32))
    expected = np.where(inside, tx, 0.0) + (code - np.where(inside, u, 0.0)) * ts
    # Both paths form `code * ds - u * ds` in float32: terms of size |u| * |ts|.
    atol = 1e-6 + 2e-7 * np.abs(u).max() * ts
    np.testing.assert_allclose(dy, expected, rtol=1e-6, atol=atol)


def test_fused_forward_is_one_kernel_pass_for_the_rounding():
    """The fused path rounds with `QuantizeAndDequantizeV2` (one kernel) and
    runs no element-wise `Round`/`Minimum`/`Maximum` of the reference."""

    @tf.function
    def quantize(x, s):
        return kops.lsq_quantize(x, s, 4, implementation="fused")

    graph = quantize.get_concrete_function(
        tf.TensorSpec((8, 4), tf.float32), tf.TensorSpec((), tf.float32)
    ).graph
    op_types = {op.type for op in graph.get_operations()}
    assert {"QuantizeAndDequantizeV2", "ClipByValue", "RealDiv"} <= op_types
    assert not op_types & {"Round", "Minimum", "Maximum"}


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("bits,signed,narrow", GRIDS)
@pytest.mark.parametrize("step", [0.37, 0.0625, 1.7e-3])
def test_kernel_path_matches_numpy_at_ties_and_boundaries(bits, signed, narrow, step, mode):
    """The kernel path (`QuantizeAndDequantizeV2` forward,
    `FakeQuantWithMinMaxArgsGradient` masks backward; the default outside
    `exact_derivatives()`): values bit for bit, `dx` exactly and `ds` to 1e-6
    of LSQ's eq. 3 summed in float64, and the fused path's values and `dx`."""
    x, _ = hard_points(step, bits, signed, narrow)
    rng = np.random.default_rng(bits)
    x = np.concatenate([x, rng.normal(size=200).astype("float32") * 40 * np.float32(step)])
    compiled = {"eager": False, "graph": None, "xla": True}[mode]
    args = (x, np.float32(step), bits, signed, narrow)
    kernel = values_and_gradients("kernel", *args, g=0.3, compiled=compiled)
    fused = values_and_gradients("fused", *args, g=0.3, compiled=compiled)
    qn, qp = kops.quant_levels(bits, signed, narrow)
    u = (tf.constant(x) / np.float32(step)).numpy()
    np.testing.assert_array_equal(kernel[0], np.round(np.clip(u, -qn, qp)) * np.float32(step))
    np.testing.assert_array_equal(kernel[0], fused[0])
    weights = np.linspace(-1.5, 2.0, x.size).astype("float32")
    inside = (u >= -qn) & (u <= qp)
    np.testing.assert_array_equal(kernel[1], np.where(inside, weights, 0))
    per_element = np.where(inside, np.round(u) - u, np.clip(u, -qn, qp)).astype(np.float64)
    ds = 0.3 * np.sum(weights.astype(np.float64) * per_element)
    np.testing.assert_allclose(kernel[2], ds, rtol=1e-6)


def test_kernel_path_keeps_per_channel_steps_on_the_fused_path():
    """Per-channel steps (kernels) take the fused path: same values and gradients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4, 2)).astype("float32")
    step = rng.uniform(0.05, 0.4, size=(4, 2)).astype("float32")
    kernel = values_and_gradients("kernel", x, step, 4, True, True, g=0.2)
    fused = values_and_gradients("fused", x, step, 4, True, True, g=0.2)
    for a, b in zip(kernel, fused):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("compiled", [True, False], ids=["tf_function", "eager"])
def test_kernel_path_nested_tapes_give_the_reference_hvp(compiled):
    """Nested tapes differentiate the kernel path's backward through its own
    registered transpose (`_clip_mask`): `H v` is the reference's."""
    kernel = _hvps("kernel", "reverse", compiled)
    reference = _hvps("reference", "reverse", compiled)
    for a, b in zip(kernel, reference):
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))
    assert max(np.abs(a).max() for a in kernel) > 1e-2


def test_kernel_path_forward_mode_is_why_exact_derivatives_exists():
    """ForwardAccumulator ignores custom gradients and the kernels' registered
    derivatives are not LSQ's: the kernel path's forward-over-reverse `H v` is
    wrong, and `"auto"` inside `exact_derivatives()` gives the reference's."""
    reference = _hvps("reference", "forward", True)
    kernel = _hvps("kernel", "forward", True)
    assert max(np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in zip(kernel, reference)) > 0.1
    with kops.exact_derivatives():
        auto = _hvps("auto", "forward", True)
    for a, b in zip(auto, reference):
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))
