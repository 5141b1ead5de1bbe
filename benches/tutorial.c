/* The tutorial's training loop written by hand in C: the "hand-written C at -O3" that fastbp's W1
 * target measures fastbp against (W1 in bench_train.py, which compiles this file and calls it through
 * ctypes).
 *
 * One hidden layer, sigmoid everywhere, online SGD in the tutorial's arithmetic: each sum starts
 * from the bias and adds the inputs in order, libm's exp, the output error (output - expected) times
 * the sigmoid's slope, the hidden errors from the weights before the update, then the update, first
 * layer first. Weights use fastbp's flat layout (neuron after neuron, bias last). The sizes are
 * arguments, not constants, as in a program written once for any such network. Built like fastbp's
 * extension: -O3 with -ffp-contract=off (no fused multiply-adds, so the tutorial's bits) and no -march.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static double sigmoid(double activation) { return 1.0 / (1.0 + exp(-activation)); }

/* Outputs of a layer of n_out neurons with n_in inputs each; w holds their weights, bias last. */
static void activate_layer(const double *w, const double *inputs, int64_t n_in, int64_t n_out, double *outputs) {
    for (int64_t j = 0; j < n_out; j++) {
        const double *neuron = w + j * (n_in + 1);
        double activation = neuron[n_in];
        for (int64_t i = 0; i < n_in; i++) activation += neuron[i] * inputs[i];
        outputs[j] = sigmoid(activation);
    }
}

/* w -= rate * delta * input for every neuron of a layer; the bias's input is 1. */
static void update_layer(double *w, const double *inputs, const double *deltas, int64_t n_in, int64_t n_out,
                         double rate) {
    for (int64_t j = 0; j < n_out; j++) {
        double *neuron = w + j * (n_in + 1);
        double step = rate * deltas[j];
        for (int64_t i = 0; i < n_in; i++) neuron[i] -= step * inputs[i];
        neuron[n_in] -= step;
    }
}

/* Train in place for `epochs` epochs over the n_rows rows of X (row-major, n_in columns) in order,
 * each labelled by its class index in [0, n_out). Returns 0, or -1 if scratch memory ran out. */
int train(double *w, const double *X, const int64_t *labels, int64_t n_rows, int64_t n_in, int64_t n_hidden,
          int64_t n_out, double rate, int64_t epochs) {
    double *scratch = malloc(sizeof(double) * (size_t)(2 * (n_hidden + n_out)));
    if (scratch == NULL) return -1;
    double *hidden = scratch, *outputs = hidden + n_hidden, *hidden_deltas = outputs + n_out;
    double *output_deltas = hidden_deltas + n_hidden, *w_out = w + n_hidden * (n_in + 1);
    for (int64_t epoch = 0; epoch < epochs; epoch++) {
        for (int64_t r = 0; r < n_rows; r++) {
            const double *x = X + r * n_in;
            activate_layer(w, x, n_in, n_hidden, hidden);
            activate_layer(w_out, hidden, n_hidden, n_out, outputs);
            for (int64_t j = 0; j < n_out; j++) {
                double expected = labels[r] == j ? 1.0 : 0.0;
                output_deltas[j] = (outputs[j] - expected) * (outputs[j] * (1.0 - outputs[j]));
            }
            for (int64_t j = 0; j < n_hidden; j++) {
                double error = 0.0;
                for (int64_t m = 0; m < n_out; m++) error += w_out[m * (n_hidden + 1) + j] * output_deltas[m];
                hidden_deltas[j] = error * (hidden[j] * (1.0 - hidden[j]));
            }
            update_layer(w, x, hidden_deltas, n_in, n_hidden, rate);
            update_layer(w_out, hidden, output_deltas, n_hidden, n_out, rate);
        }
    }
    free(scratch);
    return 0;
}

/* The index of the largest output (the first on ties) for every row of X into classes.
 * Returns 0, or -1 if scratch memory ran out. */
int predict(const double *w, const double *X, int64_t n_rows, int64_t n_in, int64_t n_hidden, int64_t n_out,
            int64_t *classes) {
    double *scratch = malloc(sizeof(double) * (size_t)(n_hidden + n_out));
    if (scratch == NULL) return -1;
    double *hidden = scratch, *outputs = hidden + n_hidden;
    for (int64_t r = 0; r < n_rows; r++) {
        activate_layer(w, X + r * n_in, n_in, n_hidden, hidden);
        activate_layer(w + n_hidden * (n_in + 1), hidden, n_hidden, n_out, outputs);
        int64_t best = 0;
        for (int64_t j = 1; j < n_out; j++)
            if (outputs[j] > outputs[best]) best = j;
        classes[r] = best;
    }
    free(scratch);
    return 0;
}
