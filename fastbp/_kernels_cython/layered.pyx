# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's kernels for layered networks: convolutions, max pooling, dropout and flatten beside dense
layers, trained by mini-batches.

The same kernels and arithmetic as :mod:`fastbp._kernels_numba.layered`, operation by
operation, so the two agree bit for bit: a batch is cut into chunks of ``_chunk_rows``
rows, each run forward and backward into a gradient buffer of its own by one slot
(an OpenMP thread's scratch: thread ``t`` of ``n`` takes chunks ``t``, ``t + n``, ...), and
the chunks' gradients are then summed in chunk order, so the thread count never
changes a result.  A training call's threads share one OpenMP parallel region and meet
twice a batch at a barrier of the module's own (``fastbp_barrier_wait``), which spins
briefly before it sleeps: OpenMP's own waits sleep at once under fastbp's
``OMP_WAIT_POLICY=PASSIVE``, and waking the threads at every batch cost two of them a
tenth of their speed.  Dense layers and convolutions (a row's windows gathered into a
``(positions, fan_in + 1)`` matrix) multiply by BLAS's gemm, called with the very
arguments the Numba backend passes, but for a relu dense layer's backward pass, which
adds its nonzero errors' terms alone (``_dense_backward_by_terms``); a 3x3 convolution
of stride 1 without padding is computed by Winograd's F(2x2, 3x3) (``_winograd``), its
transforms written once in C for vectors and single values (``fastbp_winograd_*``) and
its products gemms, operation by operation the Numba backend's; pooling, dropout and
flatten are loops.  A convolution that a max pooling reads is computed only where the
pooling's windows read it and trained from the pooling's errors alone, and the
notebook's first layer is computed inside its pooling's loop, as in the Numba backend.
Some loops run in another order than Numba's where no value can change: a pooling takes the
largest values of all channels of a window side by side (each channel's still the
first largest in its window), a kernel row that lies inside the image is copied,
or its errors added, as one stretch, and the backward passes of the notebook's second
convolution and the two layers below it run row by row (``_to_the_first``).  A pooled
convolution's backward pass works on its filters and their gradient copied into rows
padded to whole cache lines, the same values.
"""

from cython.parallel cimport parallel, threadid
from libc.stdint cimport uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastbp._kernels_cython.constants cimport (
    ACTIVATION_EXP, ACTIVATION_IDENTITY, ACTIVATION_LEAKY_RELU, ACTIVATION_RELU, ACTIVATION_SIGMOID, ACTIVATION_SOFTMAX,
    ACTIVATION_TANH, CELL_SHIFT, CHUNK_ROWS, FUSED_MAX_UNITS, GEOMETRY_FAN_IN, GEOMETRY_IN_C, GEOMETRY_IN_H,
    GEOMETRY_IN_W, GEOMETRY_KERNEL_H, GEOMETRY_KERNEL_W, GEOMETRY_OUT_H, GEOMETRY_OUT_W, GEOMETRY_PAD_LEFT,
    GEOMETRY_PAD_TOP, GEOMETRY_STRIDE_H, GEOMETRY_STRIDE_W, GEOMETRY_UNITS, GROUPED_FILTERS, LARGE_CHUNK_ROWS,
    LAYER_CONV2D, LAYER_DENSE, LAYER_DROPOUT, LAYER_MAX_POOL2D, LINE_BYTES, SPLITMIX_GAMMA, SPLITMIX_MIX1,
    SPLITMIX_MIX2, TERMS_BLOCK, TERMS_CACHE_BYTES, TERMS_ERRORS_PER_NONZERO, WINOGRAD_ROWS,
    compiled_constants,
)
from fastbp._kernels_cython.primitives cimport (
    Data, Network, Schedule, activation, bind_libm_exp, derivative, fastbp_flush_subnormals,
    fastbp_restore_subnormals, floating, network_of, optimizer_step_over, output_error, row_start, schedule_of,
    schedule_settings, softmax,
)

from fastbp._constants import check_compiled
from fastbp._libm import libm_address

check_compiled(compiled_constants(), __name__)
bind_libm_exp(libm_address("exp"))


cdef extern from *:
    """
    #ifdef _OPENMP
    #define FASTBP_LAYERED_OPENMP 1
    #else
    #define FASTBP_LAYERED_OPENMP 0
    #endif
    """
    int FASTBP_LAYERED_OPENMP


cdef extern from *:
    """
    /* The threads of one training's parallel region meet twice a batch (its chunks' gradients done, its step
       done) at this barrier.  A thread that arrives before the others spins for up to FASTBP_SPIN_NS
       nanoseconds, which a batch's imbalance between threads rarely exceeds, then sleeps on a condition variable
       until the last one arrives: no wake-up from sleep on an idle machine, and no core spun away for long where
       another process needs it.  OpenMP's own barriers and regions sleep at once under OMP_WAIT_POLICY=PASSIVE,
       fastbp's default (see fastbp._parallel).  Builds with OpenMP but without POSIX threads or GCC's atomics
       wait at OpenMP's barrier instead; builds without OpenMP run one thread, which waits for none. */
    #ifdef _OPENMP
    #include <omp.h>
    static int fastbp_team_size(void) { return omp_get_num_threads(); }
    #else
    static int fastbp_team_size(void) { return 1; }
    #endif

    #if defined(_OPENMP) && (defined(__GNUC__) || defined(__clang__)) && (defined(__unix__) || defined(__APPLE__))
    #include <pthread.h>
    #include <time.h>
    #if defined(__x86_64__) || defined(__i386__)
    #define FASTBP_PAUSE() __builtin_ia32_pause()
    #elif defined(__aarch64__)
    #define FASTBP_PAUSE() __asm__ __volatile__("yield")
    #else
    #define FASTBP_PAUSE() ((void)0)
    #endif
    #define FASTBP_SPIN_NS 100000

    typedef struct {
        int arrived;  /* threads at the barrier in this round */
        int round;  /* rounds completed: the last thread to arrive adds one */
        int sleepers;
        pthread_mutex_t lock;
        pthread_cond_t woken;
    } fastbp_barrier;

    static void fastbp_barrier_init(fastbp_barrier* b) {
        b->arrived = b->round = b->sleepers = 0;
        pthread_mutex_init(&b->lock, NULL);
        pthread_cond_init(&b->woken, NULL);
    }

    static void fastbp_barrier_destroy(fastbp_barrier* b) {
        pthread_mutex_destroy(&b->lock);
        pthread_cond_destroy(&b->woken);
    }

    static long long fastbp_now_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
    }

    /* Wait until all ``team`` threads have called this; what each wrote before it, every one reads after it. */
    static void fastbp_barrier_wait(fastbp_barrier* b, int team) {
        int round = __atomic_load_n(&b->round, __ATOMIC_ACQUIRE);
        long long until;
        int i;
        if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == team) {
            __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
            pthread_mutex_lock(&b->lock);
            __atomic_store_n(&b->round, round + 1, __ATOMIC_RELEASE);
            if (b->sleepers) pthread_cond_broadcast(&b->woken);
            pthread_mutex_unlock(&b->lock);
            return;
        }
        until = fastbp_now_ns() + FASTBP_SPIN_NS;
        do {
            for (i = 0; i < 64; i++) {
                if (__atomic_load_n(&b->round, __ATOMIC_ACQUIRE) != round) return;
                FASTBP_PAUSE();
            }
        } while (fastbp_now_ns() < until);
        pthread_mutex_lock(&b->lock);
        b->sleepers++;
        while (__atomic_load_n(&b->round, __ATOMIC_ACQUIRE) == round) pthread_cond_wait(&b->woken, &b->lock);
        b->sleepers--;
        pthread_mutex_unlock(&b->lock);
    }
    #else
    typedef struct { int unused; } fastbp_barrier;
    static void fastbp_barrier_init(fastbp_barrier* b) { b->unused = 0; }
    static void fastbp_barrier_destroy(fastbp_barrier* b) { (void)b; }
    static void fastbp_barrier_wait(fastbp_barrier* b, int team) {
        (void)b;
        (void)team;
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    #endif
    """
    ctypedef struct fastbp_barrier:
        pass
    int fastbp_team_size() noexcept nogil
    void fastbp_barrier_init(fastbp_barrier* barrier) noexcept nogil
    void fastbp_barrier_destroy(fastbp_barrier* barrier) noexcept nogil
    void fastbp_barrier_wait(fastbp_barrier* barrier, int team) noexcept nogil


cdef extern from *:
    """
    /* to[r * to_step + i] = (...((to[r * to_step + i] + scales[0] * rows[0][offset + r * row_step + i])
       + scales[1] * rows[1][offset + r * row_step + i]) ...) for r < n_rows, i < n: the additions of one term at a
       time, each sum kept in a register across all the terms.  GCC's and clang's vector extensions give the
       registers (as wide as the build's widest: 64, 32 or 16 bytes), six at a time, so that six sums' additions
       overlap; gcc's vectorised loops over i would load and store each sum once per term instead.  Other compilers
       take the plain loop, the same arithmetic. */
    #if defined(__GNUC__) || defined(__clang__)
    #if defined(__AVX512F__)
    #define FASTBP_VECTOR_BYTES 64
    #elif defined(__AVX__)
    #define FASTBP_VECTOR_BYTES 32
    #else
    #define FASTBP_VECTOR_BYTES 16
    #endif
    #define FASTBP_ADD_SCALED(NAME, T)                                                                                 \
    typedef T NAME##_vector __attribute__((vector_size(FASTBP_VECTOR_BYTES), aligned(sizeof(T)), may_alias));          \
    static inline void NAME##_row(T* to, const T** rows, const T* scales, Py_ssize_t n_terms, Py_ssize_t offset,       \
                                  Py_ssize_t n) {                                                                      \
        typedef NAME##_vector V;                                                                                       \
        const Py_ssize_t lanes = FASTBP_VECTOR_BYTES / sizeof(T);                                                      \
        Py_ssize_t i = 0, t;                                                                                           \
        for (; i + 6 * lanes <= n; i += 6 * lanes) {                                                                   \
            V* sums = (V*)(to + i);                                                                                    \
            V a = sums[0], b = sums[1], c = sums[2], d = sums[3], e = sums[4], f = sums[5];                            \
            for (t = 0; t < n_terms; t++) {                                                                            \
                const V* r = (const V*)(rows[t] + offset + i);                                                         \
                T s = scales[t];                                                                                       \
                a = a + s * r[0]; b = b + s * r[1]; c = c + s * r[2];                                                  \
                d = d + s * r[3]; e = e + s * r[4]; f = f + s * r[5];                                                  \
            }                                                                                                          \
            sums[0] = a; sums[1] = b; sums[2] = c; sums[3] = d; sums[4] = e; sums[5] = f;                              \
        }                                                                                                              \
        for (; i + 2 * lanes <= n; i += 2 * lanes) {                                                                   \
            V* sums = (V*)(to + i);                                                                                    \
            V a = sums[0], b = sums[1];                                                                                \
            for (t = 0; t < n_terms; t++) {                                                                            \
                const V* r = (const V*)(rows[t] + offset + i);                                                         \
                T s = scales[t];                                                                                       \
                a = a + s * r[0]; b = b + s * r[1];                                                                    \
            }                                                                                                          \
            sums[0] = a; sums[1] = b;                                                                                  \
        }                                                                                                              \
        for (; i < n; i++) {                                                                                           \
            T a = to[i];                                                                                               \
            for (t = 0; t < n_terms; t++) a = a + scales[t] * rows[t][offset + i];                                     \
            to[i] = a;                                                                                                 \
        }                                                                                                              \
    }                                                                                                                  \
    static inline void NAME(T* to, Py_ssize_t to_step, const T** rows, const T* scales, Py_ssize_t n_terms,            \
                            Py_ssize_t offset, Py_ssize_t row_step, Py_ssize_t n_rows, Py_ssize_t n) {                 \
        Py_ssize_t r;                                                                                                  \
        for (r = 0; r < n_rows; r++) NAME##_row(to + r * to_step, rows, scales, n_terms, offset + r * row_step, n);    \
    }
    #else
    #define FASTBP_ADD_SCALED(NAME, T)                                                                                 \
    static void NAME(T* to, Py_ssize_t to_step, const T** rows, const T* scales, Py_ssize_t n_terms,                   \
                     Py_ssize_t offset, Py_ssize_t row_step, Py_ssize_t n_rows, Py_ssize_t n) {                        \
        Py_ssize_t r, i, t;                                                                                            \
        for (r = 0; r < n_rows; r++) {                                                                                 \
            for (i = 0; i < n; i++) {                                                                                  \
                T a = to[r * to_step + i];                                                                             \
                for (t = 0; t < n_terms; t++) a = a + scales[t] * rows[t][offset + r * row_step + i];                  \
                to[r * to_step + i] = a;                                                                               \
            }                                                                                                          \
        }                                                                                                              \
    }
    #endif
    FASTBP_ADD_SCALED(fastbp_add_scaled_float, float)
    FASTBP_ADD_SCALED(fastbp_add_scaled_double, double)
    """
    void fastbp_add_scaled_float(
        float* to, Py_ssize_t to_step, const float** rows, const float* scales, Py_ssize_t n_terms, Py_ssize_t offset,
        Py_ssize_t row_step, Py_ssize_t n_rows, Py_ssize_t n,
    ) noexcept nogil
    void fastbp_add_scaled_double(
        double* to, Py_ssize_t to_step, const double** rows, const double* scales, Py_ssize_t n_terms,
        Py_ssize_t offset, Py_ssize_t row_step, Py_ssize_t n_rows, Py_ssize_t n,
    ) noexcept nogil

cdef extern from *:
    """
    /* Winograd's F(2x2, 3x3) tile transforms of ``n`` channels side by side, channel ``c`` of pixel ``(i, j)`` of
       the tile at ``source[i * row_step + j * column_step + c]``, element ``(i, j)`` of the transformed tile at
       ``to[(i * 4 + j) * plane + c]`` (``_in``), or the reverse for ``_out``: its 4x4 products as ``A^T m A`` plus
       the ``bias`` into the 2x2 outputs.  The arithmetic of one channel is written once (``FASTBP_WINOGRAD_*_TILE``)
       and run on the vectors of GCC's and clang's extensions (as wide as ``FASTBP_VECTOR_BYTES``), then one channel
       at a time: the same operations in the same order in every lane.  The vectors load and store the channels
       where they are, which gcc's own vectorisation of the loop over them would not do (it cannot tell ``source``
       and ``to`` apart). */
    #define FASTBP_WINOGRAD_IN_TILE(X, source, row_step, column_step, to, plane)                                       \
        do {                                                                                                           \
            X d_[16];                                                                                                  \
            int i_, j_;                                                                                                \
            for (i_ = 0; i_ < 4; i_++)                                                                                 \
                for (j_ = 0; j_ < 4; j_++)                                                                             \
                    d_[i_ * 4 + j_] = *(const X*)((source) + i_ * (row_step) + j_ * (column_step));                    \
            for (j_ = 0; j_ < 4; j_++) {                                                                               \
                X t0_ = d_[j_] - d_[8 + j_], t1_ = d_[4 + j_] + d_[8 + j_];                                            \
                X t2_ = d_[8 + j_] - d_[4 + j_], t3_ = d_[4 + j_] - d_[12 + j_];                                       \
                d_[j_] = t0_; d_[4 + j_] = t1_; d_[8 + j_] = t2_; d_[12 + j_] = t3_;                                   \
            }                                                                                                          \
            for (i_ = 0; i_ < 4; i_++) {                                                                               \
                *(X*)((to) + (i_ * 4) * (plane)) = d_[i_ * 4] - d_[i_ * 4 + 2];                                        \
                *(X*)((to) + (i_ * 4 + 1) * (plane)) = d_[i_ * 4 + 1] + d_[i_ * 4 + 2];                                \
                *(X*)((to) + (i_ * 4 + 2) * (plane)) = d_[i_ * 4 + 2] - d_[i_ * 4 + 1];                                \
                *(X*)((to) + (i_ * 4 + 3) * (plane)) = d_[i_ * 4 + 1] - d_[i_ * 4 + 3];                                \
            }                                                                                                          \
        } while (0)
    #define FASTBP_WINOGRAD_OUT_TILE(X, source, plane, bias, to, row_step, column_step)                                \
        do {                                                                                                           \
            X m_[16], b_ = *(const X*)(bias);                                                                          \
            int i_, j_;                                                                                                \
            for (i_ = 0; i_ < 16; i_++) m_[i_] = *(const X*)((source) + i_ * (plane));                                 \
            for (j_ = 0; j_ < 4; j_++) {                                                                               \
                X s0_ = m_[j_] + m_[4 + j_] + m_[8 + j_], s1_ = m_[4 + j_] - m_[8 + j_] - m_[12 + j_];                 \
                m_[j_] = s0_; m_[4 + j_] = s1_;                                                                        \
            }                                                                                                          \
            for (i_ = 0; i_ < 2; i_++) {                                                                               \
                *(X*)((to) + i_ * (row_step)) = m_[i_ * 4] + m_[i_ * 4 + 1] + m_[i_ * 4 + 2] + b_;                     \
                *(X*)((to) + i_ * (row_step) + (column_step)) = m_[i_ * 4 + 1] - m_[i_ * 4 + 2] - m_[i_ * 4 + 3] + b_; \
            }                                                                                                          \
        } while (0)
    #if defined(__GNUC__) || defined(__clang__)
    #define FASTBP_WINOGRAD_VECTORS(T, V, lanes, TILE, ...)                                                            \
        typedef T V __attribute__((vector_size(FASTBP_VECTOR_BYTES), aligned(sizeof(T)), may_alias));                 \
        const Py_ssize_t lanes = FASTBP_VECTOR_BYTES / sizeof(T);                                                      \
        for (; c + lanes <= n; c += lanes) TILE(V, __VA_ARGS__)
    #else
    #define FASTBP_WINOGRAD_VECTORS(T, V, lanes, TILE, ...)
    #endif
    #define FASTBP_WINOGRAD(NAME, T)                                                                                   \
    static inline void NAME##_in(const T* source, Py_ssize_t row_step, Py_ssize_t column_step, T* to,                  \
                                 Py_ssize_t plane, Py_ssize_t n) {                                                     \
        Py_ssize_t c = 0;                                                                                              \
        FASTBP_WINOGRAD_VECTORS(T, V, lanes, FASTBP_WINOGRAD_IN_TILE, source + c, row_step, column_step, to + c,      \
                                plane);                                                                                \
        for (; c < n; c++) FASTBP_WINOGRAD_IN_TILE(T, source + c, row_step, column_step, to + c, plane);              \
    }                                                                                                                  \
    static inline void NAME##_out(const T* source, Py_ssize_t plane, const T* bias, T* to, Py_ssize_t row_step,        \
                                  Py_ssize_t column_step, Py_ssize_t n) {                                              \
        Py_ssize_t c = 0;                                                                                              \
        FASTBP_WINOGRAD_VECTORS(T, V, lanes, FASTBP_WINOGRAD_OUT_TILE, source + c, plane, bias + c, to + c, row_step, \
                                column_step);                                                                          \
        for (; c < n; c++) FASTBP_WINOGRAD_OUT_TILE(T, source + c, plane, bias + c, to + c, row_step, column_step);   \
    }
    FASTBP_WINOGRAD(fastbp_winograd_float, float)
    FASTBP_WINOGRAD(fastbp_winograd_double, double)
    """
    void fastbp_winograd_float_in(
        const float* source, Py_ssize_t row_step, Py_ssize_t column_step, float* to, Py_ssize_t plane, Py_ssize_t n
    ) noexcept nogil
    void fastbp_winograd_double_in(
        const double* source, Py_ssize_t row_step, Py_ssize_t column_step, double* to, Py_ssize_t plane, Py_ssize_t n
    ) noexcept nogil
    void fastbp_winograd_float_out(
        const float* source, Py_ssize_t plane, const float* bias, float* to, Py_ssize_t row_step,
        Py_ssize_t column_step, Py_ssize_t n,
    ) noexcept nogil
    void fastbp_winograd_double_out(
        const double* source, Py_ssize_t plane, const double* bias, double* to, Py_ssize_t row_step,
        Py_ssize_t column_step, Py_ssize_t n,
    ) noexcept nogil

cdef extern from *:
    """
    /* One row's share of a fused first layer's gradient when its pooling's windows are 2x2 at a stride of 2, in
       float: for each window in order, each filter's error times the 9 pixels under the window's maximum added
       into the filter's column of ``sums`` (input ``i``'s sums ``sums_step`` apart), and the error into the
       bias's (``sums[9]``): the same products and sums, in the same order, as one filter at a time.  A window's
       maximum is at place ``q`` (row ``q / 2``, column ``q % 2``, as ``places`` holds it), so pixel ``i`` under it
       is one of the 4 that the window's four outputs read there.  Those 4 are laid side by side once for a
       stretch of ``FASTBP_FUSED_WINDOWS`` windows (stored 16 bytes at once, as they are loaded: smaller stores
       would stall the loads), and each lane of a vector of 8 filters takes its own by AVX2's byte shuffle, at
       indexes ``4 q`` to ``4 q + 3``: one instruction where selects take three.  The filters' sums stay in
       registers across the stretch.  Builds without AVX2 (and compilers other than GCC and clang) have
       ``FASTBP_FUSED_PICKS`` 0, and ``_fused_gradient_row`` picks the pixels by selects in Cython; AVX-512 builds
       run the AVX2 code. */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX2__)
    #include <immintrin.h>
    #define FASTBP_FUSED_PICKS 1
    #define FASTBP_FUSED_WINDOWS 16
    typedef float fastbp_pick_floats __attribute__((vector_size(32), aligned(4), may_alias));
    typedef int32_t fastbp_pick_places __attribute__((vector_size(32), aligned(4), may_alias));
    static void fastbp_fused_gradient(const float* image, Py_ssize_t in_w, const float* places, const float* errors,
                                      Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t units, float* sums,
                                      Py_ssize_t sums_step) {
        typedef fastbp_pick_floats V;
        const Py_ssize_t lanes = 32 / sizeof(float);
        float pixels[FASTBP_FUSED_WINDOWS][9][4];  /* pixel i's 4 candidates of each window of the stretch */
        Py_ssize_t oy, first, n, w, i, u, at;
        for (oy = 0; oy < out_h; oy++)
            for (first = 0; first < out_w; first += FASTBP_FUSED_WINDOWS) {
                n = out_w - first < FASTBP_FUSED_WINDOWS ? out_w - first : FASTBP_FUSED_WINDOWS;
                for (w = 0; w < n; w++)
                    for (i = 0; i < 9; i++) {
                        const float* top = image + (2 * oy + i / 3) * in_w + 2 * (first + w) + i % 3;
                        __m128 upper = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i*)top));
                        _mm_storeu_ps(pixels[w][i], _mm_loadh_pi(upper, (const __m64*)(top + in_w)));
                    }
                for (u = 0; u + lanes <= units; u += lanes) {
                    V s[10];
                    for (i = 0; i < 10; i++) s[i] = *(const V*)(sums + i * sums_step + u);
                    for (w = 0; w < n; w++) {
                        at = (oy * out_w + first + w) * units + u;
                        V e = *(const V*)(errors + at);
                        fastbp_pick_places q = __builtin_convertvector(*(const V*)(places + at), fastbp_pick_places);
                        __m256i bytes = (__m256i)(q * 0x04040404 + 0x03020100);
                        for (i = 0; i < 9; i++) {
                            __m256i four = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)pixels[w][i]));
                            s[i] = s[i] + e * (V)_mm256_shuffle_epi8(four, bytes);
                        }
                        s[9] = s[9] + e;
                    }
                    for (i = 0; i < 10; i++) *(V*)(sums + i * sums_step + u) = s[i];
                }
                for (; u < units; u++)
                    for (w = 0; w < n; w++) {
                        at = (oy * out_w + first + w) * units + u;
                        float e = errors[at];
                        int q = (int)places[at];
                        for (i = 0; i < 9; i++) sums[i * sums_step + u] = sums[i * sums_step + u] + e * pixels[w][i][q];
                        sums[9 * sums_step + u] = sums[9 * sums_step + u] + e;
                    }
            }
    }
    #else
    #define FASTBP_FUSED_PICKS 0
    #define fastbp_fused_gradient(...) ((void)0)  /* never reached: FASTBP_FUSED_PICKS is 0 */
    #endif
    """
    int FASTBP_FUSED_PICKS
    void fastbp_fused_gradient(
        const float* image, Py_ssize_t in_w, const float* places, const float* errors, Py_ssize_t out_h,
        Py_ssize_t out_w, Py_ssize_t units, float* sums, Py_ssize_t sums_step,
    ) noexcept nogil

cdef enum:
    WINOGRAD_BLOCK = 16  # the filters whose biases a Winograd convolution's outputs gather at a time (on the stack)
    # The channels a pooling's window takes at a time (``_pool_row``: its places' stack arrays).
    PLACES_BLOCK = 64

#: A pooled convolution's maximum's column, below its row (``CELL_SHIFT``).
cdef Py_ssize_t COLUMN_MASK = (<Py_ssize_t>1 << CELL_SHIFT) - 1

#: ``2**-53``: a draw's 53 bits as a fraction of one.
cdef double DRAW_UNIT = 1.0 / 9007199254740992.0


cdef struct Parts:
    # Where the parts of one slot's scratch start (see _parts), in values of the weights' type.
    const Py_ssize_t* v_off  # layer k's (rows, sizes[k] + 1) values from v_off[k], the inputs' first
    Py_ssize_t errors  # two sides of side_size error signals: the layer in hand's and the layer below's
    Py_ssize_t side_size
    Py_ssize_t patches  # one row's windows of the largest convolution, (positions, fan_in + 1)
    Py_ssize_t patch_errors  # their errors, (positions, fan_in)
    # A layer's weighted sums for the chunk (a dense layer's transposed, (units, rows)), and a dense layer's errors
    # passed down, transposed.
    Py_ssize_t products
    # A pooled convolution's filters, and their gradient, each row padded to a whole number of cache lines
    # (_line_width): the backward pass's loops over a filter then load and store whole vectors, where its rows
    # in the weights (fan_in + 1 apart) would make most of them straddle two lines.
    Py_ssize_t filters
    Py_ssize_t filter_grads
    # A Winograd convolution's (_winograd) rows' transformed windows (16, WINOGRAD_ROWS * tiles, in_c) and their
    # products (16, WINOGRAD_ROWS * tiles, units).
    Py_ssize_t winograd_windows
    Py_ssize_t winograd_products
    Py_ssize_t winners  # where each pooling's maxima are, integers: (rows, sizes[k + 1]) from win_off[k]
    const Py_ssize_t* win_off
    Py_ssize_t size  # its values in all
    # Not in a slot: each Winograd convolution's transformed filters (16, in_c, units) from u_off[k] in the
    # weights' transforms (_transform), n_transformed values in all, one set per slot.
    const Py_ssize_t* u_off
    Py_ssize_t n_transformed


cdef struct Chunk:
    # Rows rows[:n_rows] of a batch, trained as update `step` of the dropout seed `seed`.
    const Py_ssize_t* rows
    Py_ssize_t n_rows
    uint64_t seed
    Py_ssize_t step


cdef struct Buffers:
    # One call's scratch: n_slots slots of parts.size values for chunks of chunk_rows rows, then n_chunks
    # gradients (the first also their sum), losses and rows classed right, and each slot's weights' transforms
    # (each thread transforms the weights itself, where one thread and a barrier more would make the others wait).
    Parts parts
    Py_ssize_t chunk_rows
    Py_ssize_t n_slots
    Py_ssize_t n_chunks
    Py_ssize_t n_weights
    void* block  # the floats, of the weights' type, from the first multiple of LINE_BYTES in the allocation
    void* transformed  # slot t's weights' transforms (Parts.u_off) from t * parts.n_transformed, after the rest
    void* allocation
    Py_ssize_t* v_off


cdef inline void _gemm(
    char op_a, const floating* a, int lda, char op_b, const floating* b, int ldb, floating beta, floating* c, int ldc,
    int m, int n, int k,
) noexcept nogil:
    """Row-major ``c = op_a(a) @ op_b(b) + beta * c`` (``c`` is ``m x n``, the products' inner size ``k``), as the
    Numba backend's ``gemm``: BLAS is column-major, where a row-major matrix reads as its transpose, so this
    computes ``c.T = op_b(b).T @ op_a(a).T``."""
    cdef floating one = 1.0
    if floating is float:
        sgemm(&op_b, &op_a, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&op_b, &op_a, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """SplitMix64's output function of the 64-bit state ``z``."""
    z = (z ^ (z >> 30)) * SPLITMIX_MIX1
    z = (z ^ (z >> 27)) * SPLITMIX_MIX2
    return z ^ (z >> 31)


cdef inline uint64_t _row_stream(uint64_t seed, Py_ssize_t step, Py_ssize_t row) noexcept nogil:
    """The state from which the dropout draws of ``row`` at update ``step`` follow."""
    return _mix(_mix(seed + <uint64_t>step * SPLITMIX_GAMMA) + <uint64_t>row * SPLITMIX_GAMMA)


cdef inline double _dropout_draw(uint64_t stream, Py_ssize_t unit) noexcept nogil:
    """The draw in [0, 1) of the ``unit``-th value of a row's ``stream``: SplitMix64's value at that place."""
    return <double>(_mix(stream + (<uint64_t>unit + 1) * SPLITMIX_GAMMA) >> 11) * DRAW_UNIT


cdef inline Py_ssize_t _line_width(Py_ssize_t n, Py_ssize_t item) noexcept nogil:
    """``n`` floats of ``item`` bytes rounded up to whole cache lines (``LINE_BYTES``), in floats."""
    cdef Py_ssize_t line = LINE_BYTES // item
    return (n + line - 1) // line * line


cdef inline Py_ssize_t _chunk_rows(Py_ssize_t batch_rows) noexcept nogil:
    """Rows per chunk of batches of ``batch_rows`` rows: ``fastbp._constants.chunk_rows``."""
    return LARGE_CHUNK_ROWS if batch_rows >= 4 * LARGE_CHUNK_ROWS else CHUNK_ROWS


cdef Parts _parts(
    const Network* net, Py_ssize_t rows, Py_ssize_t* v_off, Py_ssize_t* win_off, Py_ssize_t* u_off, Py_ssize_t item
) noexcept nogil:
    """The parts of one slot's scratch for chunks of ``rows`` rows, of floats of ``item`` bytes, writing each
    layer's values' start into ``v_off`` (``n_layers + 2``), each Winograd convolution's transformed filters'
    start into ``u_off`` (``n_layers``) and each pooling's winners' start into ``win_off`` (``n_layers + 1``; a
    fused layer's pooling keeps its places among the values instead, see ``_conv_pool_row``).  The filters, and
    the slot's size, start on whole cache lines."""
    cdef Py_ssize_t n_layers = net.n_layers
    cdef Py_ssize_t widest = 0
    cdef Py_ssize_t n_patches = 1
    cdef Py_ssize_t n_patch_errors = 1
    cdef Py_ssize_t n_filters = 0
    cdef Py_ssize_t n_transformed = 0, n_winograd_windows = 0, n_winograd_products = 0
    cdef Py_ssize_t k, positions, tiles
    cdef Py_ssize_t per_winner = sizeof(Py_ssize_t) // item
    cdef bint pooling
    cdef const Py_ssize_t* g
    cdef Parts parts
    v_off[0] = 0
    for k in range(n_layers + 1):
        v_off[k + 1] = v_off[k] + rows * (net.sizes[k] + 1)
        widest = max(widest, net.sizes[k] + 1)
    win_off[0] = 0
    for k in range(n_layers):
        u_off[k] = n_transformed
        pooling = net.kinds[k] == LAYER_MAX_POOL2D and not _pooled_with_the_first(net, k)
        win_off[k + 1] = win_off[k] + (rows * net.sizes[k + 1] if pooling else 0)
        if net.kinds[k] == LAYER_CONV2D:
            g = net.geometry + k * net.geometry_stride
            positions = g[GEOMETRY_OUT_H] * g[GEOMETRY_OUT_W]
            n_patches = max(n_patches, positions * (g[GEOMETRY_FAN_IN] + 1))
            n_patch_errors = max(n_patch_errors, positions * g[GEOMETRY_FAN_IN])
            if _pooled(net, k) and not _fused(net, k):
                n_filters = max(n_filters, g[GEOMETRY_UNITS] * _line_width(g[GEOMETRY_FAN_IN] + 1, item))
            if _winograd(net, k):
                tiles = WINOGRAD_ROWS * _tiles(net, k)
                n_transformed += 16 * g[GEOMETRY_IN_C] * g[GEOMETRY_UNITS]
                n_winograd_windows = max(n_winograd_windows, 16 * tiles * g[GEOMETRY_IN_C])
                n_winograd_products = max(n_winograd_products, 16 * tiles * g[GEOMETRY_UNITS])
    parts.v_off = v_off
    parts.side_size = rows * widest
    parts.errors = v_off[n_layers + 1]
    parts.patches = parts.errors + 2 * parts.side_size
    parts.patch_errors = parts.patches + n_patches
    parts.products = parts.patch_errors + n_patch_errors
    parts.filters = _line_width(parts.products + parts.side_size, item)
    parts.filter_grads = parts.filters + n_filters
    # The winners start on a whole line: aligned for the integers.
    parts.winograd_windows = _line_width(parts.filter_grads + n_filters, item)
    parts.winograd_products = _line_width(parts.winograd_windows + n_winograd_windows, item)
    parts.winners = _line_width(parts.winograd_products + n_winograd_products, item)
    parts.win_off = win_off
    parts.size = _line_width(parts.winners + win_off[n_layers] * per_winner, item)
    parts.u_off = u_off
    parts.n_transformed = n_transformed
    return parts


cdef struct Window:
    # A convolution's or a pooling's geometry (its row of Network.geometry) as values of its own, which the
    # compiler keeps in registers (a pointer into the geometry would be read again after every store of a float).
    Py_ssize_t in_h
    Py_ssize_t in_w
    Py_ssize_t in_c
    Py_ssize_t out_h
    Py_ssize_t out_w
    Py_ssize_t kernel_h
    Py_ssize_t kernel_w
    Py_ssize_t stride_h
    Py_ssize_t stride_w
    Py_ssize_t pad_top
    Py_ssize_t pad_left
    Py_ssize_t fan_in


cdef inline Window _window(const Py_ssize_t* g) noexcept nogil:
    return Window(
        in_h=g[GEOMETRY_IN_H], in_w=g[GEOMETRY_IN_W], in_c=g[GEOMETRY_IN_C], out_h=g[GEOMETRY_OUT_H],
        out_w=g[GEOMETRY_OUT_W], kernel_h=g[GEOMETRY_KERNEL_H], kernel_w=g[GEOMETRY_KERNEL_W],
        stride_h=g[GEOMETRY_STRIDE_H], stride_w=g[GEOMETRY_STRIDE_W], pad_top=g[GEOMETRY_PAD_TOP],
        pad_left=g[GEOMETRY_PAD_LEFT], fan_in=g[GEOMETRY_FAN_IN],
    )


cdef inline bint _pooled(const Network* net, Py_ssize_t k) noexcept nogil:
    """Whether layer ``k`` is a convolution that a max pooling reads (see ``_region``)."""
    return net.kinds[k] == LAYER_CONV2D and k + 1 < net.n_layers and net.kinds[k + 1] == LAYER_MAX_POOL2D


cdef inline Window _region(const Network* net, Py_ssize_t k) noexcept nogil:
    """Layer ``k``'s window, its outputs cut to those that are computed: for a convolution that a pooling reads,
    the rows and columns the pooling's windows cover (those past its last whole window are never used)."""
    cdef Window w = _window(net.geometry + k * net.geometry_stride)
    cdef const Py_ssize_t* above
    if _pooled(net, k):
        above = net.geometry + (k + 1) * net.geometry_stride
        w.out_h = above[GEOMETRY_OUT_H] * above[GEOMETRY_KERNEL_H]
        w.out_w = above[GEOMETRY_OUT_W] * above[GEOMETRY_KERNEL_W]
    return w


cdef inline Window _pooling(const Network* net, Py_ssize_t k) noexcept nogil:
    """Pooling layer ``k``'s window, its input as wide as the layer below computes it (``_region``)."""
    cdef Window w = _window(net.geometry + k * net.geometry_stride)
    if k > 0 and _pooled(net, k - 1):
        w.in_w = w.out_w * w.kernel_w
    return w


cdef inline bint _fused(const Network* net, Py_ssize_t k) noexcept nogil:
    """Whether layer ``k`` is computed together with the max pooling above it (``_conv_pool_row``): the first
    layer, a relu convolution of one-channel images by at most ``FUSED_MAX_UNITS`` 3x3 kernels, stride 1, no
    padding, that a pooling reads (the founding notebook's first layer)."""
    cdef const Py_ssize_t* g = net.geometry
    return (
        k == 0 and _pooled(net, 0) and net.activations[0] == ACTIVATION_RELU and g[GEOMETRY_IN_C] == 1
        and g[GEOMETRY_KERNEL_H] == 3 and g[GEOMETRY_KERNEL_W] == 3 and g[GEOMETRY_STRIDE_H] == 1
        and g[GEOMETRY_STRIDE_W] == 1 and g[GEOMETRY_PAD_TOP] == 0 and g[GEOMETRY_PAD_LEFT] == 0
        and g[GEOMETRY_UNITS] <= FUSED_MAX_UNITS
    )


cdef inline bint _pooled_with_the_first(const Network* net, Py_ssize_t k) noexcept nogil:
    """Whether layer ``k`` is the pooling of a fused first layer (``_fused``): computed in its loop, its places
    kept among the values, no winners of its own."""
    return k == 1 and _fused(net, 0)


cdef inline bint _to_the_first(const Network* net, Py_ssize_t k) noexcept nogil:
    """Whether layer ``k``'s backward pass also takes the two layers below it, row by row: a pooled convolution
    over the pooling of a fused first layer (``_fused``), as the founding notebook's second layer.  A row's
    errors passed down then go through the pooling's relu slopes and into the first layer's gradient at once,
    in one row's scratch that stays in the cache, where each layer's own pass would go over the whole chunk's;
    each gradient's sums are added in the same order."""
    return (
        k == 2 and _pooled(net, 2) and _pooled_with_the_first(net, 1) and net.activations[1] == ACTIVATION_IDENTITY
    )


cdef inline bint _inside(Window w) noexcept nogil:
    """Whether every window of a convolution's outputs ``w`` (as ``_region`` cuts them) lies inside its image."""
    return (
        w.pad_top == 0 and w.pad_left == 0 and (w.out_h - 1) * w.stride_h + w.kernel_h <= w.in_h
        and (w.out_w - 1) * w.stride_w + w.kernel_w <= w.in_w
    )


cdef inline bint _winograd(const Network* net, Py_ssize_t k) noexcept nogil:
    """Whether layer ``k`` is a convolution computed by Winograd's F(2x2, 3x3): 3x3 kernels, stride 1, every
    window inside the image, its computed outputs (``_region``) in whole 2x2 tiles, not fused (``_fused``)."""
    cdef Window w
    if net.kinds[k] != LAYER_CONV2D or _fused(net, k):
        return False
    w = _region(net, k)
    return (
        w.kernel_h == 3 and w.kernel_w == 3 and w.stride_h == 1 and w.stride_w == 1 and _inside(w)
        and w.out_h % 2 == 0 and w.out_w % 2 == 0
    )


cdef inline Py_ssize_t _tiles(const Network* net, Py_ssize_t k) noexcept nogil:
    """A Winograd convolution's 2x2 tiles of outputs in one row."""
    cdef Window w = _region(net, k)
    return (w.out_h // 2) * (w.out_w // 2)


cdef inline void _winograd_kernel(
    const floating* g, Py_ssize_t g_step, floating* to, Py_ssize_t to_step
) noexcept nogil:
    """A 3x3 kernel ``g`` (pixel ``y * 3 + x`` at ``g[(y * 3 + x) * g_step]``) as ``G g G^T`` (4x4), element
    ``i * 4 + j`` into ``to[(i * 4 + j) * to_step]``."""
    cdef Py_ssize_t x, i
    cdef floating half = 0.5
    cdef floating g0, g1, g2
    cdef floating t[4][3]
    for x in range(3):
        g0, g1, g2 = g[x * g_step], g[(3 + x) * g_step], g[(6 + x) * g_step]
        t[0][x] = g0
        t[1][x] = (g0 + g1 + g2) * half
        t[2][x] = (g0 - g1 + g2) * half
        t[3][x] = g2
    for i in range(4):
        to[i * 4 * to_step] = t[i][0]
        to[(i * 4 + 1) * to_step] = (t[i][0] + t[i][1] + t[i][2]) * half
        to[(i * 4 + 2) * to_step] = (t[i][0] - t[i][1] + t[i][2]) * half
        to[(i * 4 + 3) * to_step] = t[i][2]


cdef void _winograd_filters(const floating* layer, Py_ssize_t units, Py_ssize_t in_c, floating* U) noexcept nogil:
    """Each 3x3 kernel of the ``layer`` as ``G g G^T`` (``_winograd_kernel``), into ``U``: plane ``i * 4 + j``
    an ``(in_c, units)`` matrix."""
    cdef Py_ssize_t co, ci, width = 9 * in_c + 1
    for co in range(units):
        for ci in range(in_c):
            _winograd_kernel(layer + co * width + ci, in_c, U + ci * units + co, in_c * units)


cdef inline void _winograd_in(
    const floating* source, Py_ssize_t row_step, Py_ssize_t column_step, floating* to, Py_ssize_t plane,
    Py_ssize_t n,
) noexcept nogil:
    """``n`` channels' 4x4 windows (channel ``c`` of pixel ``(i, j)`` at ``source[i * row_step + j * column_step +
    c]``) as ``B^T d B``, element ``(i, j)`` into ``to[(i * 4 + j) * plane + c]`` (``fastbp_winograd_*``)."""
    if floating is float:
        fastbp_winograd_float_in(source, row_step, column_step, to, plane, n)
    else:
        fastbp_winograd_double_in(source, row_step, column_step, to, plane, n)


cdef inline void _winograd_out(
    const floating* source, Py_ssize_t plane, const floating* bias, floating* to, Py_ssize_t row_step,
    Py_ssize_t column_step, Py_ssize_t n,
) noexcept nogil:
    """``n`` channels' 4x4 products (element ``(i, j)`` of channel ``c`` at ``source[(i * 4 + j) * plane + c]``) as
    ``A^T m A`` plus ``bias[c]``, output ``(i, j)`` of the 2x2 into ``to[i * row_step + j * column_step + c]``
    (``fastbp_winograd_*``)."""
    if floating is float:
        fastbp_winograd_float_out(source, plane, bias, to, row_step, column_step, n)
    else:
        fastbp_winograd_double_out(source, plane, bias, to, row_step, column_step, n)


cdef void _transform(
    const Network* net, const floating* weights, const Parts* parts, floating* transformed
) noexcept nogil:
    """The weights' transforms: each Winograd convolution's filters (``_winograd_filters``) into ``transformed``
    from ``parts.u_off[k]``, once for a thread's chunks of a batch (or a prediction's), which all read them."""
    cdef Py_ssize_t k
    cdef const Py_ssize_t* g
    for k in range(net.n_layers):
        if _winograd(net, k):
            g = net.geometry + k * net.geometry_stride
            _winograd_filters(
                weights + net.w_off[k], g[GEOMETRY_UNITS], g[GEOMETRY_IN_C], transformed + parts.u_off[k]
            )


cdef void _winograd_windows(
    const floating* image, Window w, floating* V, Py_ssize_t plane, Py_ssize_t first
) noexcept nogil:
    """One row's 4x4 windows of each 2x2 tile of outputs as ``B^T d B`` (``_winograd_in``), into ``V`` from tile
    ``first`` on: plane ``i * 4 + j`` (``plane`` values apart) a ``(tiles, in_c)`` matrix."""
    cdef Py_ssize_t ty, tx, tile, tiles_w = w.out_w // 2
    for ty in range(w.out_h // 2):
        for tx in range(tiles_w):
            tile = first + ty * tiles_w + tx
            _winograd_in(
                image + (2 * ty * w.in_w + 2 * tx) * w.in_c, w.in_w * w.in_c, w.in_c, V + tile * w.in_c, plane, w.in_c
            )


cdef void _winograd_outputs(
    const floating* M, Py_ssize_t plane, Py_ssize_t first, Window w, Py_ssize_t units, const floating* layer,
    floating* out,
) noexcept nogil:
    """One row's outputs from the products ``M`` of its tiles from tile ``first`` on (plane ``i * 4 + j``
    ``plane`` values apart, each ``(tiles, units)``): each tile's ``A^T m A`` plus the bias (``_winograd_out``),
    into ``out`` ``(out_h, out_w, units)``; ``WINOGRAD_BLOCK`` filters at a time, their biases side by side."""
    cdef Py_ssize_t ty, tx, c, start, n, tile, block, width = 9 * w.in_c + 1
    cdef Py_ssize_t tiles_w = w.out_w // 2
    cdef floating bias[WINOGRAD_BLOCK]
    for block in range((units + WINOGRAD_BLOCK - 1) // WINOGRAD_BLOCK):
        start = block * WINOGRAD_BLOCK
        n = min(<Py_ssize_t>WINOGRAD_BLOCK, units - start)
        for c in range(n):
            bias[c] = layer[(start + c) * width + width - 1]
        for ty in range(w.out_h // 2):
            for tx in range(tiles_w):
                tile = first + ty * tiles_w + tx
                _winograd_out(
                    M + tile * units + start, plane, bias, out + (2 * ty * w.out_w + 2 * tx) * units + start,
                    w.out_w * units, units, n,
                )


cdef inline void _side_by_side(
    const floating* layer, Py_ssize_t units, floating (*columns)[FUSED_MAX_UNITS]
) noexcept nogil:
    """A fused convolution's weights (or their gradient) ``(units, 10)`` as ``columns[i][u]``: each input's weights
    for all the filters side by side, for loops over the filters.  The columns are C arrays of their own, which
    gcc knows apart, so that such loops vectorise."""
    cdef Py_ssize_t u, i
    for u in range(units):
        for i in range(10):
            columns[i][u] = layer[u * 10 + i]


cdef inline void _winograd_side_by_side(
    const floating* layer, Py_ssize_t units, floating (*columns)[FUSED_MAX_UNITS]
) noexcept nogil:
    """A fused convolution's kernels (``units``, 10) as Winograd's ``G g G^T`` (``_winograd_kernel``) side by
    side, as ``_side_by_side`` lays out the weights: element ``i`` of filter ``u``'s at ``columns[i][u]``, its
    bias at ``columns[16][u]``."""
    cdef Py_ssize_t u
    for u in range(units):
        _winograd_kernel(layer + u * 10, 1, &columns[0][u], FUSED_MAX_UNITS)
        columns[16][u] = layer[u * 10 + 9]


cdef inline void _one_by_one(floating (*columns)[FUSED_MAX_UNITS], Py_ssize_t units, floating* layer) noexcept nogil:
    """The reverse of ``_side_by_side``."""
    cdef Py_ssize_t u, i
    for u in range(units):
        for i in range(10):
            layer[u * 10 + i] = columns[i][u]


cdef inline void _copy_rows(
    const floating* source, Py_ssize_t source_stride, floating* to, Py_ssize_t to_stride, Py_ssize_t n_rows,
    Py_ssize_t n,
) noexcept nogil:
    """``n_rows`` rows of ``n`` values, ``source_stride`` apart in ``source``, into ``to``, ``to_stride`` apart."""
    cdef Py_ssize_t r, i
    for r in range(n_rows):
        for i in range(n):
            to[r * to_stride + i] = source[r * source_stride + i]


cdef inline void _add_scaled(
    floating* sums, Py_ssize_t sums_step, const floating** rows, const floating* scales, Py_ssize_t n_terms,
    Py_ssize_t offset, Py_ssize_t row_step, Py_ssize_t n_rows, Py_ssize_t n,
) noexcept nogil:
    """``sums[r * sums_step + i] += scales[t] * rows[t][offset + r * row_step + i]`` for ``r < n_rows`` and
    ``i < n``, for ``t`` from 0 to ``n_terms - 1`` in turn: the additions of one at a time, each sum loaded and
    stored once for them all (``fastbp_add_scaled_*``)."""
    if floating is float:
        fastbp_add_scaled_float(sums, sums_step, rows, scales, n_terms, offset, row_step, n_rows, n)
    else:
        fastbp_add_scaled_double(sums, sums_step, rows, scales, n_terms, offset, row_step, n_rows, n)


cdef inline bint _few_nonzero_errors(
    const Network* net, Py_ssize_t k, const floating* errors, Py_ssize_t n
) noexcept nogil:
    """Whether dense layer ``k``'s backward pass adds its nonzero errors' terms alone (``_dense_backward_by_terms``)
    instead of the gemms' every product: a relu layer's ``n`` errors of the chunk, of which at most one in
    ``TERMS_ERRORS_PER_NONZERO`` is not zero (relu's slope is zero wherever a unit is off, and dropout above
    zeroes more).  The chunk's errors decide, whichever thread computes it."""
    cdef Py_ssize_t i, nonzero = 0
    if net.activations[k] != ACTIVATION_RELU:
        return False
    for i in range(n):  # counted without a branch
        nonzero += errors[i] != 0.0
    return nonzero * TERMS_ERRORS_PER_NONZERO <= n


cdef inline Py_ssize_t _terms_columns(Py_ssize_t units, Py_ssize_t rows, Py_ssize_t item) noexcept nogil:
    """Inputs per block of a relu dense layer's backward pass by terms: ``fastbp._constants.terms_columns``."""
    cdef Py_ssize_t stretch = 6 * LINE_BYTES // item
    return max(stretch, TERMS_CACHE_BYTES // (max(units, rows) * item) // stretch * stretch)


cdef inline void _add_nonzero_terms(
    floating* to, Py_ssize_t n, const floating* scales, Py_ssize_t scale_step, Py_ssize_t n_scales,
    const floating* rows, Py_ssize_t row_step, Py_ssize_t offset,
) noexcept nogil:
    """``to[i] = sum of scales[t * scale_step] * rows[t * row_step + offset + i]`` for ``i < n``, from zero, over the
    ``t < n_scales`` whose scale is not zero, in turn (``_add_scaled``, in blocks of ``TERMS_BLOCK`` terms)."""
    cdef Py_ssize_t i, t, group, first, n_terms
    cdef floating listed[TERMS_BLOCK]
    cdef const floating* terms[TERMS_BLOCK]
    for i in range(n):
        to[i] = 0.0
    for group in range((n_scales + TERMS_BLOCK - 1) // TERMS_BLOCK):
        first = group * TERMS_BLOCK
        n_terms = 0
        for t in range(first, min(first + TERMS_BLOCK, n_scales)):  # listed without a branch
            listed[n_terms] = scales[t * scale_step]
            terms[n_terms] = rows + t * row_step
            n_terms += scales[t * scale_step] != 0.0
        _add_scaled(to, 0, terms, listed, n_terms, offset, 0, 1, n)


cdef inline void _dense_backward_by_terms(
    const floating* errors, const floating* inputs, Py_ssize_t n_rows, Py_ssize_t units, Py_ssize_t fan_in,
    const floating* layer, floating* layer_grad, floating* below,
) noexcept nogil:
    """A dense layer's gradient for the chunk's ``errors`` written into ``layer_grad`` and, unless ``below`` is
    NULL, the errors passed down into ``below``, by the nonzero errors' terms alone (``_add_nonzero_terms``): a
    unit's gradient by the rows' inputs (``inputs``, a bias's 1.0 after each row's) in the rows' order, a row's
    errors passed down by the units' weights in the units' order.  Both go over the inputs in blocks of
    ``_terms_columns``, the same sums."""
    cdef Py_ssize_t width = fan_in + 1, columns = _terms_columns(units, n_rows, sizeof(floating))
    cdef Py_ssize_t j, s, block, start
    for block in range((width + columns - 1) // columns):
        start = block * columns
        for j in range(units):
            _add_nonzero_terms(
                layer_grad + j * width + start, min(columns, width - start), errors + j, units, n_rows, inputs, width,
                start,
            )
    if below == NULL:
        return
    for block in range((fan_in + columns - 1) // columns):
        start = block * columns
        for s in range(n_rows):
            _add_nonzero_terms(
                below + s * fan_in + start, min(columns, fan_in - start), errors + s * units, 1, units, layer, width,
                start,
            )


cdef inline void _nine_pixels(
    const floating* image, Py_ssize_t in_w, Py_ssize_t y, Py_ssize_t x, floating* pixels
) noexcept nogil:
    """The 3x3 pixels from row ``y``, column ``x`` of the one-channel ``image`` (``in_w`` wide) into
    ``pixels``, row by row: the window of a fused first layer's output (``_fused``)."""
    cdef Py_ssize_t dy, dx
    for dy in range(3):
        for dx in range(3):
            pixels[dy * 3 + dx] = image[(y + dy) * in_w + x + dx]


cdef inline floating _fused_output(
    const floating* p, const floating (*kernels)[FUSED_MAX_UNITS], Py_ssize_t u
) noexcept nogil:
    """Filter ``u``'s output of a fused first layer (``_fused``) at the 9 pixels ``p``: their products with its
    weights in ``kernels`` (``_side_by_side``) summed in the kernel's order, then its bias, then relu."""
    cdef floating total = p[0] * kernels[0][u] + p[1] * kernels[1][u]
    total += p[2] * kernels[2][u]
    total += p[3] * kernels[3][u]
    total += p[4] * kernels[4][u]
    total += p[5] * kernels[5][u]
    total += p[6] * kernels[6][u]
    total += p[7] * kernels[7][u]
    total += p[8] * kernels[8][u]
    total += kernels[9][u]
    return activation(total, ACTIVATION_RELU)


cdef inline bint _two_by_two(Window pool) noexcept nogil:
    """Whether a pooling's windows are 2x2 at a stride of 2, the common case that ``_conv_pool_row`` takes a
    window at a time."""
    return pool.kernel_h == 2 and pool.kernel_w == 2 and pool.stride_h == 2 and pool.stride_w == 2


cdef inline void _conv_pool_row(
    const floating* image, Py_ssize_t in_w, floating* pooled, floating* places, Window pool,
    const floating (*kernels)[FUSED_MAX_UNITS], const floating (*winograd)[FUSED_MAX_UNITS], Py_ssize_t units,
) noexcept nogil:
    """One row's fused first layer (``_fused``) and its pooling, as the Numba backend's ``_conv_pool_row``: each
    output of the convolution that the pooling ``pool`` reads is compared with its window's largest; each
    window's largest into ``pooled``, and where in the window it is (``dy * kernel_w + dx``, the first largest)
    into ``places``, as a float: the filters' loop then vectorises, as it would not with integers beside the
    floats.  For 2x2 windows (``_two_by_two``) each window is one tile of Winograd's F(2x2, 3x3): its 4x4
    pixels transformed once (``_winograd_in``), then for all the filters side by side their 16 products with the
    filters' transforms ``winograd`` (``_winograd_side_by_side``) transformed back (``_winograd_out``), the four
    compared in registers, and relu taken once, of the largest, each largest and place stored once.  Relu keeps
    the order, so the largest is the same value; only where all four are at most zero can its place differ
    from the Numba backend's (the first of four zeros), and there the gradient multiplies by relu's zero slope,
    so the pixels it picks add zeros either way.  Otherwise one output at a time for all the filters
    (``_fused_output``, of the weights ``kernels``), the largest and places so far in ``pooled`` and on the
    stack (stored into the scratch in that loop, which also loads from ``pooled``, gcc could not tell the two
    apart and left it scalar).  The convolution's own outputs are not stored: nothing reads
    them."""
    cdef Py_ssize_t oy, ox, dy, dx, u, i, j
    cdef floating* largest
    cdef floating* window_places
    cdef floating where[FUSED_MAX_UNITS]
    cdef floating p[9]
    cdef floating v[16]
    cdef floating m[16]
    cdef floating y[4]
    cdef floating value, best, place
    cdef bint first, better
    if _two_by_two(pool):
        for oy in range(pool.out_h):
            for ox in range(pool.out_w):
                largest = pooled + (oy * pool.out_w + ox) * units
                window_places = places + (oy * pool.out_w + ox) * units
                _winograd_in(image + 2 * oy * in_w + 2 * ox, in_w, 1, v, 1, 1)
                for u in range(units):  # the filters side by side: it vectorises
                    for i in range(16):
                        m[i] = winograd[i][u] * v[i]
                    _winograd_out(m, 1, &winograd[16][u], y, 2, 1, 1)
                    best, place = y[0], 0.0
                    for i in range(1, 4):
                        better = y[i] > best  # selects, not branches
                        best = y[i] if better else best
                        place = <floating>i if better else place
                    largest[u] = activation(best, ACTIVATION_RELU)
                    window_places[u] = place
        return
    for oy in range(pool.out_h):
        for ox in range(pool.out_w):
            largest = pooled + (oy * pool.out_w + ox) * units
            for dy in range(pool.kernel_h):
                for dx in range(pool.kernel_w):
                    _nine_pixels(image, in_w, oy * pool.stride_h + dy, ox * pool.stride_w + dx, p)
                    place = <floating>(dy * pool.kernel_w + dx)
                    first = dy == 0 and dx == 0
                    for u in range(units):  # the filters side by side: it vectorises
                        value, best = _fused_output(p, kernels, u), largest[u]
                        better = first | (value > best)  # selects, not branches
                        largest[u] = value if better else best
                        where[u] = place if better else where[u]
            for u in range(units):
                places[(oy * pool.out_w + ox) * units + u] = where[u]


cdef inline void _pick_pixels(
    floating (*picked)[FUSED_MAX_UNITS], const floating* p, bint won, Py_ssize_t u
) noexcept nogil:
    """The 9 pixels ``p`` into filter ``u``'s column of ``picked`` where ``won``, by selects (not branches: the
    loops over the filters that call it vectorise)."""
    picked[0][u] = p[0] if won else picked[0][u]
    picked[1][u] = p[1] if won else picked[1][u]
    picked[2][u] = p[2] if won else picked[2][u]
    picked[3][u] = p[3] if won else picked[3][u]
    picked[4][u] = p[4] if won else picked[4][u]
    picked[5][u] = p[5] if won else picked[5][u]
    picked[6][u] = p[6] if won else picked[6][u]
    picked[7][u] = p[7] if won else picked[7][u]
    picked[8][u] = p[8] if won else picked[8][u]


cdef inline void _add_picked(
    floating (*sums)[FUSED_MAX_UNITS], const floating (*picked)[FUSED_MAX_UNITS], const floating* error,
    Py_ssize_t units,
) noexcept nogil:
    """Each filter's ``error`` times its ``picked`` pixels, and the error, into its ``sums``."""
    cdef Py_ssize_t u
    for u in range(units):
        sums[0][u] += error[u] * picked[0][u]
        sums[1][u] += error[u] * picked[1][u]
        sums[2][u] += error[u] * picked[2][u]
        sums[3][u] += error[u] * picked[3][u]
        sums[4][u] += error[u] * picked[4][u]
        sums[5][u] += error[u] * picked[5][u]
        sums[6][u] += error[u] * picked[6][u]
        sums[7][u] += error[u] * picked[7][u]
        sums[8][u] += error[u] * picked[8][u]
        sums[9][u] += error[u]  # the bias's input is 1: error * 1 is error exactly


cdef inline void _fused_gradient_row(
    const floating* image, Py_ssize_t in_w, const floating* places, const floating* errors, Window pool,
    Py_ssize_t units, floating (*sums)[FUSED_MAX_UNITS], floating (*picked)[FUSED_MAX_UNITS],
) noexcept nogil:
    """One row's share of a fused first layer's gradient (``_fused``), added into ``sums`` (each input's sums
    for all the filters side by side, as ``_side_by_side`` lays out the weights), as the Numba backend's
    ``_fused_gradient_row``: each pooling window's error of each filter times the 9 pixels under the window's
    maximum (at its place in ``places``, as ``_conv_pool_row`` writes them), and the error into the bias's sum.
    In float, 2x2 windows at a stride of 2 (``_two_by_two``) go to ``fastbp_fused_gradient``, which picks the
    pixels by byte shuffles where the build has them; otherwise each filter's pixels are picked into ``picked``
    by selects, the filters side by side.  A zero error adds zeros, which leave a sum as it is, so the sums are
    those of adding one error at a time."""
    cdef Py_ssize_t oy, ox, dy, dx, u
    cdef const floating* where
    cdef floating p[9]
    cdef floating place
    if floating is float and FASTBP_FUSED_PICKS and _two_by_two(pool):
        fastbp_fused_gradient(image, in_w, places, errors, pool.out_h, pool.out_w, units, &sums[0][0], FUSED_MAX_UNITS)
        return
    for oy in range(pool.out_h):
        for ox in range(pool.out_w):
            where = places + (oy * pool.out_w + ox) * units
            for dy in range(pool.kernel_h):
                for dx in range(pool.kernel_w):
                    _nine_pixels(image, in_w, oy * pool.stride_h + dy, ox * pool.stride_w + dx, p)
                    place = <floating>(dy * pool.kernel_w + dx)
                    for u in range(units):
                        _pick_pixels(picked, p, where[u] == place, u)
            _add_picked(sums, picked, errors + (oy * pool.out_w + ox) * units, units)


cdef inline void _gather_windows(const floating* image, Window w, floating* patches) noexcept nogil:
    """One row's ``image`` as the windows of its convolution's ``w.out_h x w.out_w`` outputs, a ``(positions,
    fan_in + 1)`` matrix in ``patches``: each window's values in ``(kernel row, kernel column, channel)`` order,
    zero where it overhangs the image, then a one.  A kernel row that lies inside the image is one stretch of
    it, copied at once."""
    cdef Py_ssize_t width = w.fan_in + 1
    cdef Py_ssize_t stretch = w.kernel_w * w.in_c
    cdef Py_ssize_t oy, ox, ky, kx, y, x, left, c, i, to
    cdef floating* window
    cdef const floating* source
    for oy in range(w.out_h):
        for ox in range(w.out_w):
            window = patches + (oy * w.out_w + ox) * width
            left = ox * w.stride_w - w.pad_left
            for ky in range(w.kernel_h):
                y = oy * w.stride_h + ky - w.pad_top
                to = ky * stretch
                if y < 0 or y >= w.in_h:
                    for i in range(stretch):
                        window[to + i] = 0.0
                elif left >= 0 and left + w.kernel_w <= w.in_w:
                    source = image + (y * w.in_w + left) * w.in_c
                    for i in range(stretch):
                        window[to + i] = source[i]
                else:
                    for kx in range(w.kernel_w):
                        x = left + kx
                        if 0 <= x < w.in_w:
                            source = image + (y * w.in_w + x) * w.in_c
                            for c in range(w.in_c):
                                window[to + kx * w.in_c + c] = source[c]
                        else:
                            for c in range(w.in_c):
                                window[to + kx * w.in_c + c] = 0.0
            window[width - 1] = 1.0


cdef inline void _scatter_windows(const floating* patch_errors, Window w, floating* below) noexcept nogil:
    """The reverse of ``_gather_windows``: each window's errors ``(positions, fan_in)`` added into the image's
    ``below`` where the window reads it, windows in order."""
    cdef Py_ssize_t oy, ox, i
    cdef floating one = 1.0
    cdef const floating* window
    for i in range(w.in_h * w.in_w * w.in_c):
        below[i] = 0.0
    for oy in range(w.out_h):
        for ox in range(w.out_w):
            window = patch_errors + (oy * w.out_w + ox) * w.fan_in
            _add_window(below, w, oy, ox, &window, &one, 1)


cdef inline void _add_grouped(
    floating* below, Window w, const floating* filters, Py_ssize_t width, const floating* errors,
    const Py_ssize_t* winners, Py_ssize_t first, Py_ssize_t last,
) noexcept nogil:
    """Filters ``first`` to ``last - 1``'s ``errors`` at one pooling window, each times its filter (rows
    ``width`` apart in ``filters``), added into the image ``below`` where the window's maximum (``winners``)
    reads it, as the Numba backend's ``_add_grouped``: the filters whose maximum is at the same place
    together, places in the order the filters first meet them (``GROUPED_FILTERS``)."""
    cdef Py_ssize_t left[GROUPED_FILTERS]  # the filters with an error not yet added
    cdef const floating* kernels[GROUPED_FILTERS]
    cdef floating scales[GROUPED_FILTERS]
    cdef Py_ssize_t n_left = 0, n_rest, n_terms, i, c, cell
    cdef bint same
    for c in range(first, last):  # listed without a branch
        left[n_left] = c
        n_left += errors[c] != 0.0
    while n_left > 0:
        cell = winners[left[0]]
        n_terms = n_rest = 0
        for i in range(n_left):  # those at the first one's place to the terms, the others left
            c = left[i]
            same = winners[c] == cell
            kernels[n_terms] = filters + c * width
            scales[n_terms] = errors[c]
            n_terms += same
            left[n_rest] = c
            n_rest += not same
        n_left = n_rest
        _add_window(below, w, cell >> CELL_SHIFT, cell & COLUMN_MASK, kernels, scales, n_terms)


cdef inline void _add_window(
    floating* below, Window w, Py_ssize_t oy, Py_ssize_t ox, const floating** kernels, const floating* scales,
    Py_ssize_t n_terms,
) noexcept nogil:
    """Each of ``n_terms`` kernels times its scale added into the image ``below`` where output ``(oy, ox)``'s
    window reads it, kernels in turn (``_add_scaled``): errors passed down to their inputs.  Where the window's
    columns lie inside the image, its rows inside it go at once, a row one stretch.  ``_scatter_windows``
    passes a scale of ``1.0``: ``x * 1.0`` is ``x`` exactly."""
    cdef Py_ssize_t stretch = w.kernel_w * w.in_c, image_row = w.in_w * w.in_c
    cdef Py_ssize_t left = ox * w.stride_w - w.pad_left, top = oy * w.stride_h - w.pad_top
    cdef Py_ssize_t first = max(0, -top), last = min(w.kernel_h, w.in_h - top)  # the kernel rows inside
    cdef Py_ssize_t ky, kx, x
    if first >= last:
        return
    if left >= 0 and left + w.kernel_w <= w.in_w:
        _add_scaled(
            below + ((top + first) * w.in_w + left) * w.in_c, image_row, kernels, scales, n_terms, first * stretch,
            stretch, last - first, stretch,
        )
        return
    for kx in range(w.kernel_w):
        x = left + kx
        if 0 <= x < w.in_w:
            _add_scaled(
                below + ((top + first) * w.in_w + x) * w.in_c, image_row, kernels, scales, n_terms,
                first * stretch + kx * w.in_c, stretch, last - first, w.in_c,
            )


cdef inline void _pool_row(
    const floating* image, Window w, floating* out, Py_ssize_t* winners, bint cells, bint training
) noexcept nogil:
    """The largest value of each pooling window of each channel of one row's ``image`` into ``out``: each
    channel's first value of the window, replaced by every later one (rows, then columns) that is greater,
    the channels side by side; where in the image each is into ``winners``, as the Numba backend's ``_pool``:
    its index, or, where ``cells`` (the image is a pooled convolution's outputs), its row and column as
    ``y << CELL_SHIFT | x``, only in ``training`` (nothing reads them after a prediction).  The window's rows
    and columns wait as floats on the stack, ``PLACES_BLOCK`` channels at a time, until the window is done:
    integers beside the floats, or stores beside ``out``'s, would leave the loop over the channels scalar.  A 2x2
    window at a stride of 2 (``_two_by_two``) is compared in registers, its largest value stored once; other
    windows keep the largest so far in ``out``."""
    cdef Py_ssize_t oy, ox, dy, dx, c, block, start, n, y, x, at
    cdef floating* largest
    cdef const floating* source
    cdef floating value, top, row, column
    cdef bint greater, two_by_two = _two_by_two(w)
    cdef floating zero = 0.0, one = 1.0
    cdef const floating* below
    cdef floating rows[PLACES_BLOCK]
    cdef floating columns[PLACES_BLOCK]
    for oy in range(w.out_h):
        for ox in range(w.out_w):
            at = (oy * w.out_w + ox) * w.in_c
            for block in range((w.in_c + PLACES_BLOCK - 1) // PLACES_BLOCK):
                start = block * PLACES_BLOCK
                n = min(PLACES_BLOCK, w.in_c - start)
                largest = out + at + start
                source = image + (oy * w.stride_h * w.in_w + ox * w.stride_w) * w.in_c + start
                if two_by_two:  # the window's four values compared in registers, each result stored once
                    below = source + w.in_w * w.in_c
                    for c in range(n):
                        top, row, column = source[c], 0.0, 0.0
                        value = source[w.in_c + c]
                        greater = value > top
                        top = value if greater else top
                        column = one if greater else column
                        value = below[c]
                        greater = value > top
                        top = value if greater else top
                        row = one if greater else row
                        column = zero if greater else column
                        value = below[w.in_c + c]
                        greater = value > top
                        top = value if greater else top
                        row = one if greater else row
                        column = one if greater else column
                        largest[c] = top
                        if training:
                            rows[c] = row
                            columns[c] = column
                else:
                    for c in range(n):
                        largest[c] = source[c]
                        rows[c] = 0.0
                        columns[c] = 0.0
                    for dy in range(w.kernel_h):
                        for dx in range(w.kernel_w):
                            source = image + ((oy * w.stride_h + dy) * w.in_w + ox * w.stride_w + dx) * w.in_c + start
                            row, column = <floating>dy, <floating>dx
                            for c in range(n):  # selects, not branches, stored either way: it vectorises
                                value, top = source[c], largest[c]
                                greater = value > top
                                largest[c] = value if greater else top
                                if training:  # unswitched: prediction runs the loop without the places
                                    rows[c] = row if greater else rows[c]
                                    columns[c] = column if greater else columns[c]
                if not training:
                    continue
                for c in range(n):
                    y = oy * w.stride_h + <Py_ssize_t>rows[c]
                    x = ox * w.stride_w + <Py_ssize_t>columns[c]
                    winners[at + start + c] = y << CELL_SHIFT | x if cells else (y * w.in_w + x) * w.in_c + start + c


cdef inline void _activate_row(floating* out, const floating* sums, Py_ssize_t n, Py_ssize_t code) noexcept nogil:
    """``out[j] = activation(sums[j], code)`` for ``j < n`` (a softmax's sums as they are, for ``softmax``).

    The code is tested once, outside the loop, which then vectorises where the
    activation does (relu, leaky relu, identity).
    """
    if code == ACTIVATION_SIGMOID:
        _activate_row_as(out, sums, n, ACTIVATION_SIGMOID)
    elif code == ACTIVATION_TANH:
        _activate_row_as(out, sums, n, ACTIVATION_TANH)
    elif code == ACTIVATION_RELU:
        _activate_row_as(out, sums, n, ACTIVATION_RELU)
    elif code == ACTIVATION_LEAKY_RELU:
        _activate_row_as(out, sums, n, ACTIVATION_LEAKY_RELU)
    elif code == ACTIVATION_EXP:
        _activate_row_as(out, sums, n, ACTIVATION_EXP)
    else:  # identity, and the softmax's sums
        _activate_row_as(out, sums, n, ACTIVATION_IDENTITY)


cdef inline void _activate_row_as(
    floating* out, const floating* sums, Py_ssize_t n, Py_ssize_t code
) noexcept nogil:
    """``_activate_row``'s loop for one code."""
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = activation(sums[j], code)


cdef inline void _derive_row(
    floating* to, const floating* errors, const floating* outputs, Py_ssize_t n, Py_ssize_t code
) noexcept nogil:
    """``to[j] = errors[j] * derivative(outputs[j], code)`` for ``j < n`` (``to`` may be ``errors``), the code
    tested once, outside the loop (as ``_activate_row``)."""
    if code == ACTIVATION_SIGMOID:
        _derive_row_as(to, errors, outputs, n, ACTIVATION_SIGMOID)
    elif code == ACTIVATION_TANH:
        _derive_row_as(to, errors, outputs, n, ACTIVATION_TANH)
    elif code == ACTIVATION_RELU:
        _derive_row_as(to, errors, outputs, n, ACTIVATION_RELU)
    elif code == ACTIVATION_LEAKY_RELU:
        _derive_row_as(to, errors, outputs, n, ACTIVATION_LEAKY_RELU)
    else:
        _derive_row_as(to, errors, outputs, n, code)


cdef inline void _derive_row_as(
    floating* to, const floating* errors, const floating* outputs, Py_ssize_t n, Py_ssize_t code
) noexcept nogil:
    """``_derive_row``'s loop for one code."""
    cdef Py_ssize_t j
    for j in range(n):
        to[j] = errors[j] * derivative(outputs[j], code)


cdef void _winograd_products(
    const Network* net, Py_ssize_t k, const floating* layer, const floating* U, const floating* inputs,
    Py_ssize_t n_rows, floating* slot, const Parts* parts, floating* products,
) noexcept nogil:
    """Winograd convolution ``k``'s outputs of the chunk's ``n_rows`` rows (values ``n_in + 1`` apart from
    ``inputs``) into ``products``, from its transformed filters ``U``: ``WINOGRAD_ROWS`` rows at a time, their
    windows transformed, one gemm per plane, and the products transformed back."""
    cdef Window w = _region(net, k)
    cdef const Py_ssize_t* g = net.geometry + k * net.geometry_stride
    cdef Py_ssize_t units = g[GEOMETRY_UNITS], in_c = w.in_c, n_in = net.sizes[k], n_out = net.sizes[k + 1]
    cdef Py_ssize_t tiles = _tiles(net, k), first, r, rows, i, group
    cdef floating* V = slot + parts.winograd_windows
    cdef floating* M = slot + parts.winograd_products
    cdef Py_ssize_t u_plane = in_c * units, v_plane, m_plane
    for group in range((n_rows + WINOGRAD_ROWS - 1) // WINOGRAD_ROWS):
        first = group * WINOGRAD_ROWS
        rows = min(<Py_ssize_t>WINOGRAD_ROWS, n_rows - first)
        v_plane, m_plane = rows * tiles * in_c, rows * tiles * units
        for r in range(rows):
            _winograd_windows(inputs + (first + r) * (n_in + 1), w, V, v_plane, r * tiles)
        for i in range(16):
            _gemm(
                c'N', V + i * v_plane, in_c, c'N', U + i * u_plane, units, 0.0, M + i * m_plane, units, rows * tiles,
                units, in_c,
            )
        for r in range(rows):
            _winograd_outputs(M, m_plane, r * tiles, w, units, layer, products + (first + r) * n_out)


cdef void _forward(
    const Network* net, const floating* weights, const floating* transformed, Py_ssize_t k, const Chunk* chunk,
    floating* slot, const Parts* parts, bint training,
) noexcept nogil:
    """Layer ``k``'s values for the ``chunk`` from the layer below's, in the ``slot``'s scratch, with the weights'
    transforms ``transformed`` (``_transform``); ``training`` applies dropout."""
    cdef floating* values = slot
    cdef floating* patches = slot + parts.patches
    cdef floating* products = slot + parts.products
    cdef Py_ssize_t* winners = <Py_ssize_t*>(slot + parts.winners)
    cdef Py_ssize_t n_rows = chunk.n_rows
    cdef Py_ssize_t n_in = net.sizes[k], n_out = net.sizes[k + 1], code = net.activations[k], kind = net.kinds[k]
    cdef const Py_ssize_t* g = net.geometry + k * net.geometry_stride
    cdef Window w = _region(net, k) if kind == LAYER_CONV2D else _pooling(net, k)
    cdef Py_ssize_t inputs = parts.v_off[k], outputs = parts.v_off[k + 1]
    cdef const floating* layer = weights + net.w_off[k]
    cdef Py_ssize_t s, j, units, width
    cdef Py_ssize_t positions = w.out_h * w.out_w
    cdef Py_ssize_t n_computed = positions * g[GEOMETRY_UNITS] if kind == LAYER_CONV2D else n_out
    cdef floating* out
    cdef const floating* source
    cdef const floating* sums
    cdef double rate
    cdef floating scale
    cdef uint64_t stream
    cdef Py_ssize_t n_pooled
    cdef bint winograd
    # A fused layer's weights, transposed: on the stack, where no store of the outputs can alias them (gcc
    # then vectorises the loop over the filters; in the slot's scratch it left it scalar).
    cdef floating kernels[10][FUSED_MAX_UNITS]
    cdef floating winograd_kernels[17][FUSED_MAX_UNITS]
    if _pooled_with_the_first(net, k):  # computed with the convolution below
        return
    if _fused(net, k):
        units, n_pooled = g[GEOMETRY_UNITS], net.sizes[k + 2]
        if _two_by_two(_pooling(net, k + 1)):
            _winograd_side_by_side(layer, units, winograd_kernels)
        else:
            _side_by_side(layer, units, kernels)
        for s in range(n_rows):
            out = values + parts.v_off[k + 2] + s * (n_pooled + 1)
            _conv_pool_row(
                values + inputs + s * (n_in + 1), w.in_w, out, values + outputs + s * (n_out + 1), _pooling(net, k + 1),
                kernels, winograd_kernels, units,
            )
            out[n_pooled] = 1.0
        return
    if kind == LAYER_DENSE or kind == LAYER_CONV2D:
        units, width = g[GEOMETRY_UNITS], g[GEOMETRY_FAN_IN] + 1
        if kind == LAYER_DENSE:  # the products transposed, (units, rows): BLAS's faster form of this product
            _gemm(c'N', layer, width, c'T', values + inputs, n_in + 1, 0.0, products, n_rows, units, n_rows, width)
        winograd = _winograd(net, k)
        if winograd:
            _winograd_products(
                net, k, layer, transformed + parts.u_off[k], values + inputs, n_rows, slot, parts, products
            )
        for s in range(n_rows):
            out = values + outputs + s * (n_out + 1)
            sums = products + s * n_out
            if kind == LAYER_DENSE:  # the row's sums from their column, activated where they land
                for j in range(n_out):
                    out[j] = products[j * n_rows + s]
                sums = out
            elif not winograd:
                _gather_windows(values + inputs + s * (n_in + 1), w, patches)
                _gemm(
                    c'N', patches, width, c'T', layer, width, 0.0, products + s * n_out, units, positions, units, width
                )
            _activate_row(out, sums, n_computed, code)
            if code == ACTIVATION_SOFTMAX:
                softmax(out, n_out)
            out[n_out] = 1.0
        return
    for s in range(n_rows):
        source = values + inputs + s * (n_in + 1)
        out = values + outputs + s * (n_out + 1)
        if kind == LAYER_MAX_POOL2D:
            _pool_row(source, w, out, winners + parts.win_off[k] + s * n_out, k > 0 and _pooled(net, k - 1), training)
        elif kind == LAYER_DROPOUT and training and net.dropout[k] > 0.0:
            rate = net.dropout[k]
            scale = <floating>(1.0 / (1.0 - rate))
            stream = _row_stream(chunk.seed, chunk.step, chunk.rows[s])
            for j in range(n_out):
                out[j] = source[j] * scale if _dropout_draw(stream, net.o_off[k] + j) >= rate else <floating>0.0
        else:  # flatten, and dropout outside training: the values as they are
            for j in range(n_out):
                out[j] = source[j]
        out[n_out] = 1.0


cdef void _backward(
    const Network* net, const floating* weights, Py_ssize_t k, const Chunk* chunk, floating* slot,
    const Parts* parts, floating* grad, Py_ssize_t side,
) noexcept nogil:
    """Layer ``k``'s gradient into ``grad`` (a dense layer's written, the others' added), and, but for the first
    layer, the error signals of the layer below into the other side of the errors, from the layer's own at
    ``side``; where ``_to_the_first``, the two layers below it as well."""
    cdef const floating* values = slot
    cdef floating* patches = slot + parts.patches
    cdef floating* patch_errors = slot + parts.patch_errors
    cdef floating* products = slot + parts.products
    cdef floating* filters = slot + parts.filters
    cdef floating* filter_grads = slot + parts.filter_grads
    cdef const Py_ssize_t* winners = <const Py_ssize_t*>(slot + parts.winners)
    cdef const floating* errors = slot + parts.errors + side * parts.side_size
    cdef floating* below = slot + parts.errors + (1 - side) * parts.side_size
    cdef Py_ssize_t n_rows = chunk.n_rows
    cdef Py_ssize_t n_in = net.sizes[k], n_out = net.sizes[k + 1], kind = net.kinds[k]
    cdef const Py_ssize_t* g = net.geometry + k * net.geometry_stride
    cdef Window w = _region(net, k) if kind == LAYER_CONV2D else _pooling(net, k)
    cdef Py_ssize_t inputs = parts.v_off[k], outputs = parts.v_off[k + 1]
    cdef const floating* layer = weights + net.w_off[k]
    cdef floating* layer_grad = grad + net.w_off[k]
    cdef bint pooling_a_convolution = kind == LAYER_MAX_POOL2D and k > 0 and _pooled(net, k - 1)
    cdef bint to_the_first = _to_the_first(net, k)
    cdef Py_ssize_t s, i, j, c, units, fan_in, positions, code, width, n_windows, group, first, n_terms
    cdef floating terms[TERMS_BLOCK]
    cdef bint inside = _inside(w)  # a convolution's gradient then reads the windows in the image
    cdef Py_ssize_t stretch = w.kernel_w * w.in_c
    cdef const floating* image
    cdef floating one = 1.0
    cdef const floating* ones[TERMS_BLOCK]
    cdef const floating* term_rows[TERMS_BLOCK]
    cdef const floating* row_errors
    cdef const Py_ssize_t* row_winners
    cdef Py_ssize_t won, window_index
    cdef floating* row_below
    cdef double rate
    cdef floating scale
    cdef uint64_t stream
    # A fused layer's gradient, transposed, with each filter's pixels under its maxima: on the stack, where no
    # store can alias them (as ``_forward``'s ``kernels``).
    cdef floating sums[10][FUSED_MAX_UNITS]
    cdef floating picked[9][FUSED_MAX_UNITS]
    for i in range(TERMS_BLOCK):
        ones[i] = &one
    if kind == LAYER_DENSE or kind == LAYER_CONV2D:
        units, fan_in = g[GEOMETRY_UNITS], g[GEOMETRY_FAN_IN]
        if kind == LAYER_DENSE and _few_nonzero_errors(net, k, errors, n_rows * units):
            _dense_backward_by_terms(
                errors, values + inputs, n_rows, units, fan_in, layer, layer_grad, below if k > 0 else NULL,
            )
        elif kind == LAYER_DENSE:
            _gemm(  # the chunk's gradient of the layer (zeroed for the other layers only: ``_chunk_gradient``)
                c'T', errors, units, c'N', values + inputs, n_in + 1, 0.0, layer_grad, fan_in + 1, units, fan_in + 1,
                n_rows,
            )
            if k > 0:  # transposed, (inputs, rows), in the forward pass's products: BLAS's faster form
                _gemm(c'T', layer, fan_in + 1, c'T', errors, units, 0.0, products, n_rows, n_in, n_rows, units)
                for s in range(n_rows):
                    for i in range(n_in):
                        below[s * n_in + i] = products[i * n_rows + s]
        elif _fused(net, k):  # the filters side by side, in sums of their own (see ``_fused_gradient_row``)
            _side_by_side(layer_grad, units, sums)
            for s in range(n_rows):
                _fused_gradient_row(
                    values + inputs + s * (n_in + 1), w.in_w, values + outputs + s * (n_out + 1),
                    errors + s * net.sizes[k + 2], _pooling(net, k + 1), units, sums, picked,
                )
            _one_by_one(sums, units, layer_grad)
        elif _pooled(net, k):  # errors only at the maxima the pooling above took (its ``below``)
            # The filters and their gradient at whole cache lines a row (Parts.filters); the gradient is copied
            # back afterwards, the same sums.
            width = _line_width(fan_in + 1, sizeof(floating))
            _copy_rows(layer_grad, fan_in + 1, filter_grads, width, units, fan_in + 1)
            if k > 0:
                _copy_rows(layer, fan_in + 1, filters, width, units, fan_in + 1)
            if to_the_first:  # the first layer's gradient side by side (see ``_fused_gradient_row``)
                _side_by_side(grad + net.w_off[0], net.geometry[GEOMETRY_UNITS], sums)
            for s in range(n_rows):
                image = values + inputs + s * (n_in + 1)
                if not inside:
                    _gather_windows(image, w, patches)
                row_below = below if to_the_first else below + s * n_in  # then one row's scratch for every row
                if k > 0:
                    for i in range(n_in):
                        row_below[i] = 0.0
                row_errors = errors + s * net.sizes[k + 2]
                row_winners = winners + parts.win_off[k + 1] + s * net.sizes[k + 2]
                n_windows = net.sizes[k + 2] // units
                if k > 0:  # each window's errors times their filters into its inputs, windows in order
                    for window_index in range(n_windows):
                        for group in range((units + GROUPED_FILTERS - 1) // GROUPED_FILTERS):
                            first = group * GROUPED_FILTERS
                            _add_grouped(
                                row_below, w, filters, width, row_errors + window_index * units,
                                row_winners + window_index * units, first, min(first + GROUPED_FILTERS, units),
                            )
                if to_the_first:  # the pooling's and the first layer's passes, this row's share
                    _derive_row(row_below, row_below, image, n_in, net.activations[0])
                    _fused_gradient_row(
                        values + s * (net.sizes[0] + 1), _region(net, 0).in_w,
                        values + parts.v_off[1] + s * (net.sizes[1] + 1), row_below, _pooling(net, 1),
                        net.geometry[GEOMETRY_UNITS], sums, picked,
                    )
                # Each error times its window into its filter's gradient: many windows' errors for one filter at
                # a time, in the windows' order, so that each sum is loaded and stored once for them all.
                for group in range((n_windows + TERMS_BLOCK - 1) // TERMS_BLOCK):
                    first = group * TERMS_BLOCK
                    for c in range(units):
                        n_terms = 0
                        for window_index in range(first, min(first + TERMS_BLOCK, n_windows)):  # no branch
                            j = window_index * units + c
                            won = row_winners[j]
                            terms[n_terms] = row_errors[j]
                            term_rows[n_terms] = (
                                image + w.in_c * (
                                    (won >> CELL_SHIFT) * w.stride_h * w.in_w + (won & COLUMN_MASK) * w.stride_w
                                ) if inside
                                else patches + ((won >> CELL_SHIFT) * w.out_w + (won & COLUMN_MASK)) * (fan_in + 1)
                            )
                            n_terms += row_errors[j] != 0.0  # the zero errors' terms overwritten, or left
                        if inside:
                            _add_scaled(
                                filter_grads + c * width, stretch, term_rows, terms, n_terms, 0, w.in_w * w.in_c,
                                w.kernel_h, stretch,
                            )
                            _add_scaled(filter_grads + c * width + fan_in, 0, ones, terms, n_terms, 0, 0, 1, 1)
                        else:
                            _add_scaled(filter_grads + c * width, 0, term_rows, terms, n_terms, 0, 0, 1, fan_in + 1)
            _copy_rows(filter_grads, width, layer_grad, fan_in + 1, units, fan_in + 1)
            if to_the_first:
                _one_by_one(sums, net.geometry[GEOMETRY_UNITS], grad + net.w_off[0])
        else:
            positions = w.out_h * w.out_w
            for s in range(n_rows):
                _gather_windows(values + inputs + s * (n_in + 1), w, patches)
                _gemm(
                    c'T', errors + s * n_out, units, c'N', patches, fan_in + 1, 1.0, layer_grad, fan_in + 1, units,
                    fan_in + 1, positions,
                )
                if k > 0:
                    _gemm(
                        c'N', errors + s * n_out, units, c'N', layer, fan_in + 1, 0.0, patch_errors, fan_in, positions,
                        fan_in, units,
                    )
                    _scatter_windows(patch_errors, w, below + s * n_in)
    elif pooling_a_convolution:  # each error as the convolution's at its window's maximum (see above)
        for s in range(n_rows):
            _derive_row(
                below + s * n_out, errors + s * n_out, values + outputs + s * (n_out + 1), n_out,
                net.activations[k - 1],
            )
    elif k > 0:
        for s in range(n_rows):
            row_errors = errors + s * n_out
            row_below = below + s * n_in
            if kind == LAYER_MAX_POOL2D:
                for j in range(n_in):
                    row_below[j] = 0.0
                row_winners = winners + parts.win_off[k] + s * n_out
                for j in range(n_out):
                    row_below[row_winners[j]] += row_errors[j]
            elif kind == LAYER_DROPOUT and net.dropout[k] > 0.0:
                rate = net.dropout[k]
                scale = <floating>(1.0 / (1.0 - rate))
                stream = _row_stream(chunk.seed, chunk.step, chunk.rows[s])
                for j in range(n_out):
                    row_below[j] = (
                        row_errors[j] * scale if _dropout_draw(stream, net.o_off[k] + j) >= rate else <floating>0.0
                    )
            else:
                for j in range(n_out):
                    row_below[j] = row_errors[j]
    if k > 0 and net.activations[k - 1] != ACTIVATION_IDENTITY and not pooling_a_convolution:
        code = net.activations[k - 1]
        for s in range(n_rows):
            _derive_row(below + s * n_in, below + s * n_in, values + inputs + s * (n_in + 1), n_in, code)


cdef inline bint _is_right(const floating* outputs, const floating* target, Py_ssize_t n) noexcept nogil:
    """Whether a row's class is right, as ``Sequential``'s accuracy counts it: one unit's output on its target's
    side of 0.5, else the (first) largest output where the target's (first) largest is."""
    cdef Py_ssize_t j, guess = 0, truth = 0
    if n == 1:
        return (outputs[0] > 0.5) == (target[0] > 0.5)
    for j in range(1, n):
        if outputs[j] > outputs[guess]:
            guess = j
        if target[j] > target[truth]:
            truth = j
    return guess == truth


cdef floating _chunk_gradient(
    const Network* net, const floating* weights, const floating* transformed, const Data* data, Chunk chunk,
    Py_ssize_t batch_rows, floating* slot, const Parts* parts, floating* grad, floating* right,
) noexcept nogil:
    """The ``chunk``'s share of the batch's mean gradient, into ``grad`` (overwritten), in the ``slot``'s
    scratch, with the weights' transforms ``transformed``; returns its weighted loss, and writes how many of its
    rows the forward pass classed right (``_is_right``) into ``right``.

    ``batch_rows`` is the whole batch's row count, which the mean divides by.
    """
    cdef const floating* X = <const floating*>data.X
    cdef const floating* Y = <const floating*>data.Y
    cdef const floating* sample_weight = <const floating*>data.sample_weight
    cdef Py_ssize_t n_layers = net.n_layers
    cdef Py_ssize_t n_features = net.sizes[0], n_outputs = net.sizes[n_layers]
    cdef Py_ssize_t code = net.activations[n_layers - 1]
    cdef const floating* outputs = slot + parts.v_off[n_layers]
    cdef floating* errors = slot + parts.errors  # side 0
    cdef Py_ssize_t s, i, j, k, r, side
    cdef floating chunk_loss = 0.0
    cdef floating row_loss, scale, delta
    cdef Py_ssize_t n_right = 0
    for s in range(chunk.n_rows):
        r = chunk.rows[s]
        for i in range(n_features):
            slot[s * (n_features + 1) + i] = X[r * n_features + i]
        slot[s * (n_features + 1) + n_features] = 1.0
    for k in range(n_layers):
        _forward(net, weights, transformed, k, &chunk, slot, parts, True)
    for s in range(chunk.n_rows):
        r = chunk.rows[s]
        row_loss = 0.0
        scale = sample_weight[r] / <floating>batch_rows
        for j in range(n_outputs):
            row_loss += output_error(
                outputs[s * (n_outputs + 1) + j], Y[r * n_outputs + j], code, net.loss, &delta
            )
            errors[s * n_outputs + j] = delta * scale
        chunk_loss += sample_weight[r] * row_loss
        n_right += _is_right(outputs + s * (n_outputs + 1), Y + r * n_outputs, n_outputs)
    right[0] = <floating>n_right
    for k in range(n_layers):  # a dense layer's backward pass writes its gradient instead
        if net.kinds[k] != LAYER_DENSE:
            for i in range(net.w_off[k], net.w_off[k + 1]):
                grad[i] = 0.0
    side = 0
    for k in range(n_layers - 1, -1, -1):
        _backward(net, weights, k, &chunk, slot, parts, grad, side)
        if _to_the_first(net, k):  # the layers below are done
            break
        side = 1 - side
    return chunk_loss


cdef inline Py_ssize_t _gradients_at(const Buffers* buffers) noexcept nogil:
    """Where in ``block`` the chunks' gradients start, one after the other (the batch's is summed into the
    first)."""
    return buffers.n_slots * buffers.parts.size


cdef void _chunk_gradients(
    const Network* net, const floating* weights, const Data* data, const Py_ssize_t* batch, Py_ssize_t batch_rows,
    uint64_t seed, Py_ssize_t step, const Buffers* buffers, Py_ssize_t thread, Py_ssize_t team,
) noexcept nogil:
    """Thread ``thread`` of ``team``'s share of the batch's chunks: chunks ``thread``, ``thread + team``, ...,
    each's gradient into its place after the slots, its loss and rows classed right after those, in the thread's
    slot of scratch and with the weights' transforms of its own."""
    cdef floating* block = <floating*>buffers.block
    cdef Py_ssize_t n_weights = buffers.n_weights, chunk_rows = buffers.chunk_rows
    cdef Py_ssize_t n_chunks = (batch_rows + chunk_rows - 1) // chunk_rows
    cdef floating* chunk_grads = block + _gradients_at(buffers)
    cdef floating* chunk_losses = chunk_grads + buffers.n_chunks * n_weights
    cdef floating* chunk_rights = chunk_losses + buffers.n_chunks
    cdef floating* transformed = <floating*>buffers.transformed + thread * buffers.parts.n_transformed
    cdef Py_ssize_t c, first
    _transform(net, weights, &buffers.parts, transformed)
    c = thread
    while c < n_chunks:
        first = c * chunk_rows
        chunk_losses[c] = _chunk_gradient(
            net, weights, transformed, data,
            Chunk(rows=batch + first, n_rows=min(chunk_rows, batch_rows - first), seed=seed, step=step),
            batch_rows, block + thread * buffers.parts.size, &buffers.parts, chunk_grads + c * n_weights,
            chunk_rights + c,
        )
        c = c + team


cdef floating _batch_loss(
    const floating* chunk_grads, const Buffers* buffers, Py_ssize_t n_chunks, Py_ssize_t* right
) noexcept nogil:
    """The batch's loss, its chunks' summed in chunk order (``chunk_grads`` the chunks' gradients, after which
    their losses lie); adds the rows its forward passes classed right to ``right``."""
    cdef const floating* chunk_losses = chunk_grads + buffers.n_chunks * buffers.n_weights
    cdef const floating* chunk_rights = chunk_losses + buffers.n_chunks
    cdef floating loss = chunk_losses[0]
    cdef Py_ssize_t c
    for c in range(1, n_chunks):
        loss += chunk_losses[c]
    for c in range(n_chunks):
        right[0] += <Py_ssize_t>chunk_rights[c]
    return loss


cdef void _sum_chunks(
    floating* grads, Py_ssize_t n_weights, Py_ssize_t n_chunks, Py_ssize_t first, Py_ssize_t last
) noexcept nogil:
    """Weights ``first`` to ``last`` of the chunks' gradients (``grads``, ``n_weights`` apart) summed in chunk
    order into the first chunk's: the batch's mean gradient."""
    cdef Py_ssize_t c, i
    for c in range(1, n_chunks):
        for i in range(first, last):
            grads[i] += grads[c * n_weights + i]


cdef void _train_on_thread(
    const Network* net, floating* weights, floating* state, const Data* data, const Schedule* schedule,
    double* history, double* right, const Buffers* buffers, fastbp_barrier* barrier, Py_ssize_t thread,
    Py_ssize_t team,
) noexcept nogil:
    """Thread ``thread`` of ``team``'s part of ``_train``: each batch, its share of the chunks
    (``_chunk_gradients``), then, once every thread's are done, the chunks' gradients summed and applied by the
    optimizer over the thread's range of whole rows of the weights, until every thread's step is done.  Each
    weight's sum and update are those of one thread, so the thread count never changes a result; thread 0 adds
    up the losses and rows classed right."""
    cdef Py_ssize_t n_rows = schedule.n_visits
    cdef Py_ssize_t batch_size = min(schedule.batch_size, n_rows)
    cdef Py_ssize_t n_weights = buffers.n_weights
    cdef Py_ssize_t first = row_start(net, thread * n_weights // team)
    cdef Py_ssize_t last = row_start(net, (thread + 1) * n_weights // team)
    cdef floating* grads = <floating*>buffers.block + _gradients_at(buffers)
    cdef Py_ssize_t step = schedule.steps_done
    cdef Py_ssize_t epoch, start, batch_rows, n_chunks
    cdef const Py_ssize_t* order
    cdef double epoch_loss  # in float64, as the Numba kernel's sum of its batches' losses
    cdef Py_ssize_t epoch_right
    cdef unsigned int kept = fastbp_flush_subnormals()
    for epoch in range(schedule.n_epochs):
        order = schedule.orders + (epoch % schedule.n_orders) * n_rows
        epoch_loss = 0.0
        epoch_right = 0
        start = 0
        while start < n_rows:
            step += 1
            batch_rows = min(batch_size, n_rows - start)
            n_chunks = (batch_rows + buffers.chunk_rows - 1) // buffers.chunk_rows
            _chunk_gradients(net, weights, data, order + start, batch_rows, schedule.seed, step, buffers, thread, team)
            fastbp_barrier_wait(barrier, team)
            _sum_chunks(grads, n_weights, n_chunks, first, last)
            optimizer_step_over(net, weights, grads, state, schedule, schedule.rates[epoch], step, first, last)
            if thread == 0:
                epoch_loss += _batch_loss(grads, buffers, n_chunks, &epoch_right)
            fastbp_barrier_wait(barrier, team)
            start += batch_size
        if thread == 0:
            history[epoch] = epoch_loss
            right[epoch] = <double>epoch_right
    fastbp_restore_subnormals(kept)


cdef void _train(
    const Network* net, floating* weights, floating* state, const Data* data, const Schedule* schedule,
    double* history, double* right, const Buffers* buffers,
) noexcept nogil:
    """Mini-batch training for ``schedule.n_epochs`` epochs on one OpenMP thread per slot, all in one parallel
    region (``_train_on_thread``), the threads meeting at ``fastbp_barrier_wait`` twice a batch: each epoch's loss
    into ``history``, its rows classed right into ``right``."""
    cdef fastbp_barrier barrier
    fastbp_barrier_init(&barrier)
    with parallel(num_threads=buffers.n_slots, use_threads_if=buffers.n_slots > 1):
        _train_on_thread(
            net, weights, state, data, schedule, history, right, buffers, &barrier, threadid(), fastbp_team_size()
        )
    fastbp_barrier_destroy(&barrier)


cdef Buffers _buffers(
    const Network* net, Py_ssize_t batch_rows, Py_ssize_t chunk_rows, Py_ssize_t n_slots, Py_ssize_t item
) except *:
    """Scratch for batches of up to ``batch_rows`` rows cut into chunks of ``chunk_rows`` rows, on ``n_slots``
    slots (at most one per chunk), of floats of ``item`` bytes: the slots, each chunk's gradient, each chunk's loss
    and rows classed right, then each slot's weights' transforms.
    Freed by ``_free``."""
    cdef Buffers buffers
    cdef Py_ssize_t n_weights = net.w_off[net.n_layers]
    cdef Py_ssize_t before_transforms  # the values of the slots, the chunks' gradients, losses and rows right
    buffers.chunk_rows = chunk_rows
    buffers.n_chunks = (batch_rows + chunk_rows - 1) // chunk_rows
    buffers.n_slots = max(1, min(n_slots, buffers.n_chunks))
    buffers.n_weights = n_weights
    buffers.block = buffers.allocation = NULL
    buffers.v_off = <Py_ssize_t*>malloc((3 * net.n_layers + 3) * sizeof(Py_ssize_t))  # win_off, u_off after
    if buffers.v_off == NULL:
        raise MemoryError()
    buffers.parts = _parts(
        net, buffers.chunk_rows, buffers.v_off, buffers.v_off + net.n_layers + 2, buffers.v_off + 2 * net.n_layers + 3,
        item,
    )
    before_transforms = buffers.n_slots * buffers.parts.size + buffers.n_chunks * (n_weights + 2)
    buffers.allocation = malloc(
        (before_transforms + buffers.n_slots * buffers.parts.n_transformed) * item + LINE_BYTES
    )
    if buffers.allocation == NULL:
        free(buffers.v_off)
        raise MemoryError()
    buffers.block = <void*>((<uintptr_t>buffers.allocation + LINE_BYTES - 1) // LINE_BYTES * LINE_BYTES)
    buffers.transformed = <void*>(<char*>buffers.block + before_transforms * item)
    return buffers


cdef void _free(Buffers* buffers) noexcept:
    free(buffers.allocation)
    free(buffers.v_off)


def train_layered(
    net, floating[::1] weights, floating[::1] optimizer_state, data, schedule, double[::1] history,
    double[::1] right, int n_threads,
):
    """Mini-batch training of a layered network for ``len(history)`` epochs, each batch's chunks shared by up to
    ``n_threads`` threads; each epoch's loss into ``history``, and how many of its rows the training passes
    classed right into ``right``."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Schedule c_schedule = schedule_of(schedule, history.shape[0])
    cdef Py_ssize_t batch_rows = min(c_schedule.batch_size, c_schedule.n_visits)
    cdef Buffers buffers
    if not FASTBP_LAYERED_OPENMP or n_threads < 1:
        n_threads = 1
    # Chunks of the schedule's batch size's rows, even where this call's rows are fewer (the last part of an epoch
    # that the Python layer runs in parts): the same chunks as in one call.
    buffers = _buffers(&c_net, batch_rows, _chunk_rows(c_schedule.batch_size), n_threads, sizeof(floating))
    try:
        with nogil:
            _train(&c_net, &weights[0], &optimizer_state[0], &c_data, &c_schedule, &history[0], &right[0], &buffers)
    finally:
        _free(&buffers)


def layered_gradient(net, const floating[::1] weights, data, schedule, const Py_ssize_t[::1] rows, floating[::1] grad):
    """The mean gradient of the loss over rows ``data.X[rows]`` (one batch, update ``steps_done + 1`` of
    ``schedule.seed``'s dropout) into ``grad``; returns their weighted loss sum."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Schedule c_schedule = schedule_settings(schedule)
    cdef Buffers buffers = _buffers(&c_net, rows.shape[0], _chunk_rows(rows.shape[0]), 1, sizeof(floating))
    cdef floating loss
    cdef floating* grads
    cdef Py_ssize_t right = 0
    cdef unsigned int kept
    try:
        with nogil:
            kept = fastbp_flush_subnormals()
            _chunk_gradients(
                &c_net, &weights[0], &c_data, &rows[0], rows.shape[0], c_schedule.seed, c_schedule.steps_done + 1,
                &buffers, 0, 1,
            )
            grads = <floating*>buffers.block + _gradients_at(&buffers)
            loss = _batch_loss(grads, &buffers, buffers.n_chunks, &right)
            _sum_chunks(grads, buffers.n_weights, buffers.n_chunks, 0, buffers.n_weights)
            memcpy(&grad[0], grads, buffers.n_weights * sizeof(floating))
            fastbp_restore_subnormals(kept)
    finally:
        _free(&buffers)
    return loss


def predict_layered(net, const floating[::1] weights, const floating[:, ::1] X, floating[:, ::1] out):
    """The output layer's values for every row of ``X`` into ``out`` (dropout passes values on); every chunk is
    a whole ``CHUNK_ROWS`` rows, as in the Numba backend's ``predict_layered``."""
    cdef Network c_net = network_of(net)
    cdef Buffers buffers
    if X.shape[0] == 0:
        return
    buffers = _buffers(&c_net, CHUNK_ROWS, CHUNK_ROWS, 1, sizeof(floating))
    try:
        with nogil:
            _predict(&c_net, &weights[0], &X[0, 0], X.shape[0], &out[0, 0], &buffers)
    finally:
        _free(&buffers)


cdef void _predict(
    const Network* net, const floating* weights, const floating* X, Py_ssize_t n_rows, floating* out,
    const Buffers* buffers,
) noexcept nogil:
    """``predict_layered``'s work: chunk after chunk of ``CHUNK_ROWS`` rows, the last filled up with copies of its
    last row, so that every product has the same shape."""
    cdef floating* slot = <floating*>buffers.block
    cdef const floating* transformed = <const floating*>buffers.transformed
    cdef Py_ssize_t n_layers = net.n_layers
    cdef Py_ssize_t n_features = net.sizes[0], n_outputs = net.sizes[n_layers]
    cdef const floating* outputs = slot + buffers.parts.v_off[n_layers]
    cdef Py_ssize_t first, s, i, j, k, real, row
    cdef Chunk chunk
    cdef unsigned int kept = fastbp_flush_subnormals()
    chunk.rows, chunk.seed, chunk.step = NULL, 0, 0
    chunk.n_rows = CHUNK_ROWS
    _transform(net, weights, &buffers.parts, <floating*>buffers.transformed)
    first = 0
    while first < n_rows:
        real = min(CHUNK_ROWS, n_rows - first)
        for s in range(CHUNK_ROWS):
            row = first + min(s, real - 1)
            for i in range(n_features):
                slot[s * (n_features + 1) + i] = X[row * n_features + i]
            slot[s * (n_features + 1) + n_features] = 1.0
        for k in range(n_layers):
            _forward(net, weights, transformed, k, &chunk, slot, &buffers.parts, False)
        for s in range(real):
            for j in range(n_outputs):
                out[(first + s) * n_outputs + j] = outputs[s * (n_outputs + 1) + j]
        first += CHUNK_ROWS
    fastbp_restore_subnormals(kept)
