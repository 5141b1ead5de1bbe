"""The integer codes and constants the kernels share, so every backend reads them alike.

Kernels receive activations and update rules as small integers, chosen by
:mod:`fastbp._api` from their names.  The Cython extension declares the same
values as C enums and refuses to import if they ever differ from these.
"""

import math

#: Activation of each layer, by name; ``"softmax"`` is for the output layer only.
ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "relu": 2, "leaky_relu": 3, "identity": 4, "softmax": 5}
SIGMOID, TANH, RELU, LEAKY_RELU, IDENTITY, SOFTMAX = ACTIVATIONS.values()

#: Update rules.  Plain SGD has its own code so it can run the tutorial's fused update.
UPDATE_RULES = {"sgd": 0, "momentum": 1, "nesterov": 2, "adam": 3, "rprop": 4}
SGD, MOMENTUM, NESTEROV, ADAM, RPROP = UPDATE_RULES.values()

#: Positions in the float64 ``hyper`` array that every training kernel takes.
HYPER = ("momentum", "l2", "beta1", "beta2", "epsilon")
H_MOMENTUM, H_L2, H_BETA1, H_BETA2, H_EPSILON = range(len(HYPER))

#: The mini-batch kernels split their matrix products into blocks of neurons, or of rows, which threads
#: share.  The block size depends on the batch's row count alone (:func:`block_size`), never on the
#: thread count, so results do not either.
SMALL_BLOCK = 32
LARGE_BLOCK = 64


def block_size(batch_rows):
    """Neurons or rows per block for a batch of ``batch_rows`` rows.

    Batches of up to 32 rows take blocks of 32, where BLAS's small-matrix kernels
    are fastest.  Larger batches take blocks of 64: every product packs its
    operands again, so wider blocks cost less (784-128-10 in float32, batches of
    128, one thread: the products take 395 us per batch in blocks of 64, 490 us in
    blocks of 32), while a 128-neuron layer still has two blocks to share between
    threads (blocks of 128 save 30 us more on one thread, but leave it one).
    """
    return SMALL_BLOCK if batch_rows <= SMALL_BLOCK else LARGE_BLOCK


#: fastbp's own exp, the sigmoid's in the fast online kernels (``_fast_exp`` in each backend): ``x = n ln2 + r``
#: with ``n`` rounded by adding EXP_SHIFT (1.5 * 2**52), ``ln2`` in fdlibm's two parts (the high part's low
#: bits are zero, so ``n * EXP_LN2_HI`` is exact), and Taylor's coefficients ``1 / k!`` for ``exp(r)``.
EXP_LOG2E = 1.4426950408889634
EXP_SHIFT = 6755399441055744.0
EXP_LN2_HI = 0.6931471803691238
EXP_LN2_LO = 1.9082149292705877e-10
EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))

#: Slope of the leaky relu for negative activations (PyTorch's default).
LEAKY_SLOPE = 0.01
#: Probabilities are floored here inside the logarithm of the cross-entropy (a normal float32 too).
LOG_FLOOR = 1e-37

#: iRprop- constants, FANN's defaults (Igel & Huesken 2000; FANN's fann_create_standard).
RPROP_INCREASE = 1.2
RPROP_DECREASE = 0.5
RPROP_DELTA_MIN = 0.0
RPROP_DELTA_MAX = 50.0
RPROP_DELTA_ZERO = 0.1
