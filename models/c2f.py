"""Ce Liu's coarse-to-fine variational optical flow (pyflow's), ported to numba: pyflow's numbers, pip only.

MSTT and STARnet were trained with flows from pyflow (github.com/pathak22/pyflow @ 8f8ab9e, a Cython
wrapper around Ce Liu's C++ code), which is not on the package registry. ``coarse2fine_flow`` computes
what ``pyflow.coarse2fine_flow`` computes, with the same arguments and outputs, in float64 and in the
same order of floating-point operations.

The algorithm, step by step:

1. **Pyramid.** Level 0 is the image; ``L = int(log(min_width / W) / log(ratio))`` levels in all. Level
   i is a Gaussian blur of the image resampled by ``ratio**i`` (bilinear, output pixel j read at
   ``(j + 1) / rate - 1``); the blur's sigma is ``(1 / ratio - 1) * i`` and its radius ``int(3 sigma)``.
   Levels deeper than ``n = int(log(1/4) / log(ratio))`` are made from level ``i - n`` instead, with
   sigma ``(1 / ratio - 1) * n``. The radius truncates: with ratio 0.75, 3 sigma is 0.99999... at level
   1 (radius 0: no blur at all) and 2.99999... at level 3 (radius 2).
2. **Features.** Each level of an RGB image becomes five channels: grey (0.299 R + 0.587 G + 0.114 B),
   its x and y derivatives (5 taps, ``[1, -8, 0, 8, -1] / 12``, edges replicated), G - R and G - B.
   A grey image becomes grey, dx, dy; other channel counts are used as they are.
3. **Coarse to fine.** The flow starts at zero on the coarsest level. Going one level finer, it is
   resampled bilinearly to the new size and multiplied by ``1 / ratio``, and frame 2's features are
   warped by it (bilinear; a pixel whose target falls outside the frame takes frame 1's value).
4. **One level** (level k runs ``n_outer + k`` outer and ``n_sor + 3 k`` SOR iterations). Each outer
   iteration blurs frame 1 and warped frame 2 with ``[0.02, 0.11, 0.74, 0.11, 0.02]``, takes the spatial
   derivatives of ``0.4 I1 + 0.6 I2`` and the difference ``I2 - I1``, and looks for an increment
   (du, dv). Each of the ``n_inner`` inner iterations re-weights the energy (IRLS): a smoothness weight
   ``0.5 / sqrt(|grad u|^2 + |grad v|^2 + 1e-6)`` per pixel (forward differences, zero on the last
   row and column) and a data weight ``1 / (2 sqrt(r^2 + 1e-6))`` per channel, r the linearised
   residual; the data terms are averaged over channels. The linear system (a weighted Laplacian
   times alpha, plus ``alpha * 0.05`` on the diagonal) is solved for (du, dv) from zero by
   ``n_sor + 3 k`` Gauss-Seidel sweeps with over-relaxation 1.8, row by row, du before dv at each
   pixel. Then u += du, v += dv, frame 2 is warped again, and a per-channel noise level (mean
   non-zero |I1 - I2 warped|) is estimated; it only switches off a channel whose level is below
   1e-20, i.e. never in practice.
5. **Output.** ``u``, ``v`` on the full-resolution grid, and the original frame 2 warped by them with
   bicubic Hermite interpolation (central-difference derivatives), out-of-frame pixels taking frame
   1's value, clipped to [0, 1].

pyflow's quirks, reproduced: a ``ratio`` outside [0.4, 0.98] is replaced by 0.75 for the pyramid, but
flows are still scaled by ``1 / ratio`` as given; with ``col_type=1`` and three channels, level 0 is
made grey with BGR weights and the coarser levels with RGB ones (the colour type is not passed down the
pyramid); inner iterations after the first take the weights at u + du but the smoothness right-hand side
at u; the in-frame mask pyflow computes is never used. pyflow prints progress on stdout; this does not.

**Smallest size.** The pyramid needs ``L >= 1`` and every level at least one pixel high and wide. With
the defaults (ratio 0.75, min_width 20) that is a width of 27 or more (L = 1 for widths 27-35), and a
height that depends on the width: 1 up to width 35, 3 at width 64 (its four levels are 3, 2, 1 and 1 rows
high), 4 at width 112. pyflow crashes below that, measured with a build from source: a segmentation fault
when L = 0 (widths 15-26: it writes level 0 into an empty array) or when a level has no row, an abort
with std::bad_alloc when L < 0 (widths up to 14). Here such images raise ``ValueError`` naming the
minimum; the rule matched pyflow's crash or no-crash on 89 small sizes and settings.

**Agreement with pyflow** (built from source with its setup.py: Cython 3.3, g++ 12, -O3, x86-64; this
port under numba 0.68, same machine): bit-identical u, v and warped image on the eight real LR pairs of
``../shared/specs/pyflow/cases.npz`` (64x112 Vimeo, 80x80 Jilin-189, one with alpha 0.02, 3 outer, 2
inner, 10 SOR), on 16 other settings (sizes up to 199x333, odd ones, grey, 2 and 4 channels, RGB with
col_type 1, ratios 0.3, 0.4, 0.5, 0.98 and 0.99, 3 inner iterations, no outer or no SOR iterations) and
on the 50 accepted sizes at the edge of the limit: EPE 0. A different libm (exp, log and pow in the
pyramid) could move the last bits; ``tests/test_c2f.py`` allows 0.01 px mean EPE.

**Speed** (``benchmarks/bench_flow.py``, one thread, Xeon, median of 7 alternating rounds): 0.032 s per
pair at 64x112 (pyflow 0.089 s), 0.028 s at 80x80 (0.073 s), 0.13 s at 160x160 (0.36 s), 0.36 s at
180x320 (0.88 s): 2.4-2.8 times faster than pyflow. The SOR sweeps take about half of it; they are
latency-bound, and sweeping four rows at once (see ``_sor``) doubles their speed without changing one
value. The kernels run with the GIL released.

**Compilation.** The kernels are numba functions with ``cache=True``: the first call on a machine (and
after any edit of this file) compiles them, 13-18 s on 2 busy cores; every later process, DataLoader
workers included (spawned or forked), loads them from ``models/__pycache__`` (or ``NUMBA_CACHE_DIR``, or
the user cache) in 0.4-0.9 s and compiles nothing. Where no cache location is writable, each process
compiles once instead.
"""
import math
import operator

import numba
import numpy as np


def _jit(fn=None, **options):
    """numba.njit, cached on disk where numba finds a writable place; usable as @_jit or @_jit(...)."""
    if fn is None:
        return lambda f: _jit(f, **options)
    # error_model='numpy': IEEE division as in C, without the zero checks that stop loops vectorising
    options = dict(nogil=True, error_model='numpy', **options)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # numba found no writable cache location: compile in each process instead
        return numba.njit(**options)(fn)


SMOOTH_TAPS = np.array([0.02, 0.11, 0.74, 0.11, 0.02])  # pre-smoothing of both frames before derivatives
DERIV_TAPS = np.array([1., -8., 0., 8., -1.]) / 12.  # 5-point central derivative
CENTRAL_TAPS = np.array([-0.5, 0., 0.5])  # derivatives for the bicubic warp
OMEGA = 1.8  # SOR over-relaxation
EPSILON = math.pow(0.001, 2)  # of both robust penalties
NOISE_INIT = 0.02
NOISE_FLOOR = 1e-20  # a channel whose mean residual is below this gets no data weight

# SOR coefficients: K_STRIDE values per pixel of the zero-bordered grid (see _assemble)
K_LEFT, K_UP, K_A12, K_R1, K_R2, K_B1, K_B2 = range(7)
K_STRIDE = 8
SOR_ROWS = 4  # rows swept together (see _sor)
# The SOR kernel indexes with unsigned integers: numba then emits no negative-index wrap-around code,
# which would double the instructions of its innermost loop.
U = np.uint64


@_jit
def _hfilter(src, taps, out):
    """out = src filtered along x, edges replicated, taps summed in order. out must not be src."""
    h, w, c = src.shape
    r = len(taps) // 2
    n = w * c
    rows, out_rows = src.reshape(h, n), out.reshape(h, n)
    padded = np.empty((w + 2 * r) * c)
    for i in range(h):
        row, out_row = rows[i], out_rows[i]
        for m in range(n):
            padded[r * c + m] = row[m]
        for m in range(r * c):  # replicated edges
            padded[m] = row[m % c]
            padded[r * c + n + m] = row[n - c + m % c]
        out_row.fill(0.)
        for t in range(len(taps)):
            tap, shifted = taps[t], padded[t * c:t * c + n]
            for m in range(n):
                out_row[m] += shifted[m] * tap


@_jit
def _vfilter(src, taps, out):
    """out = src filtered along y, edges replicated, taps summed in order. out must not be src."""
    h, w, c = src.shape
    r = len(taps) // 2
    n = w * c
    rows, out_rows = src.reshape(h, n), out.reshape(h, n)
    for i in range(h):
        out_row = out_rows[i]
        out_row.fill(0.)
        for t in range(len(taps)):
            row, tap = rows[min(max(i + t - r, 0), h - 1)], taps[t]
            for m in range(n):
                out_row[m] += row[m] * tap


@_jit
def _filter_hv(src, taps):
    tmp, out = np.empty_like(src), np.empty_like(src)
    _hfilter(src, taps, tmp)
    _vfilter(tmp, taps, out)
    return out


@_jit
def _resize(src, out_h, out_w, rate_x, rate_y):
    """Bilinear resampling, output pixel (i, j) read at ((j + 1) / rate_x - 1, (i + 1) / rate_y - 1)."""
    h, w, c = src.shape
    out = np.zeros((out_h, out_w, c))
    for i in range(out_h):
        y = (i + 1) / rate_y - 1
        y0 = int(y)  # truncation, as pyflow: -0.5 reads row 0 with weight 1
        fy = min(max(y - y0, 0.), 1.)
        ya, yb = min(max(y0, 0), h - 1), min(max(y0 + 1, 0), h - 1)
        for j in range(out_w):
            x = (j + 1) / rate_x - 1
            x0 = int(x)
            fx = min(max(x - x0, 0.), 1.)
            xa, xb = min(max(x0, 0), w - 1), min(max(x0 + 1, 0), w - 1)
            for k in range(c):
                out[i, j, k] += src[ya, xa, k] * ((1 - fx) * (1 - fy))
                out[i, j, k] += src[yb, xa, k] * ((1 - fx) * fy)
                out[i, j, k] += src[ya, xb, k] * (fx * (1 - fy))
                out[i, j, k] += src[yb, xb, k] * (fx * fy)
    return out


@_jit
def _warp_bilinear(f1, f2, u, v, out):
    """out = f2 sampled bilinearly at (x + u, y + v); f1 where that falls outside the frame."""
    h, w, c = f1.shape
    for i in range(h):
        for j in range(w):
            x, y = j + u[i, j], i + v[i, j]
            if x < 0 or x > w - 1 or y < 0 or y > h - 1:
                for k in range(c):
                    out[i, j, k] = f1[i, j, k]
                continue
            x0, y0 = int(x), int(y)
            fx, fy = x - x0, y - y0
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            s00, s01, s10, s11 = (1 - fx) * (1 - fy), (1 - fx) * fy, fx * (1 - fy), fx * fy
            for k in range(c):
                out[i, j, k] = (0. + f2[y0, x0, k] * s00 + f2[y1, x0, k] * s01
                                + f2[y0, x1, k] * s10 + f2[y1, x1, k] * s11)


@_jit
def _features(im, bgr):
    """(grey, its dx, its dy, G - R, G - B) of RGB, (grey, dx, dy) of grey, other images as they are."""
    h, w, c = im.shape
    if c != 1 and c != 3:
        return im.copy()
    grey = np.empty((h, w, 1))
    w_first, w_last = (0.114, 0.299) if bgr else (0.299, 0.114)
    for i in range(h):
        for j in range(w):
            if c == 1:
                grey[i, j, 0] = im[i, j, 0]
            else:
                grey[i, j, 0] = im[i, j, 0] * w_first + im[i, j, 1] * 0.587 + im[i, j, 2] * w_last
    taps = DERIV_TAPS.copy()
    dx, dy = np.empty_like(grey), np.empty_like(grey)
    _hfilter(grey, taps, dx)
    _vfilter(grey, taps, dy)
    out = np.empty((h, w, 5 if c == 3 else 3))
    for i in range(h):
        for j in range(w):
            out[i, j, 0], out[i, j, 1], out[i, j, 2] = grey[i, j, 0], dx[i, j, 0], dy[i, j, 0]
            if c == 3:
                out[i, j, 3] = im[i, j, 1] - im[i, j, 0]
                out[i, j, 4] = im[i, j, 1] - im[i, j, 2]
    return out


@_jit
def _estimate_noise(f1, warped, noise):
    """Per channel, the mean of the non-zero |f1 - warped| (0.001 if there is none)."""
    h, w, c = f1.shape
    total, count = np.zeros(c), np.zeros(c)
    a, b = f1.reshape(h * w, c), warped.reshape(h * w, c)
    for m in range(h * w):
        for k in range(c):
            d = abs(a[m, k] - b[m, k])
            if d > 0 and d < 1e6:
                total[k] += d
                count[k] += 1
    for k in range(c):
        noise[k] = total[k] / count[k] if count[k] > 0 else 0.001


@_jit
def _increment(x, h, w, du, dv):
    """(du, dv) of the h x w pixels, out of the padded, interleaved SOR state x."""
    for i in range(h):
        row = x[2 * ((i + 1) * (w + 2) + 1):2 * ((i + 1) * (w + 2) + 1 + w)]
        for j in range(w):
            du[i * w + j] = row[2 * j]
            dv[i * w + j] = row[2 * j + 1]


@_jit
def _smoothness_weights(u, v, du, dv, phi):
    """phi = 0.5 / sqrt(|grad u|^2 + |grad v|^2 + eps) at u + du, v + dv, forward differences."""
    h, w = u.shape
    uu, vv = u + du.reshape(h, w), v + dv.reshape(h, w)  # the first inner iteration adds exact zeros
    for i in range(h):
        for j in range(w):
            ux = uu[i, j + 1] - uu[i, j] if j < w - 1 else 0.
            vx = vv[i, j + 1] - vv[i, j] if j < w - 1 else 0.
            uy = uu[i + 1, j] - uu[i, j] if i < h - 1 else 0.
            vy = vv[i + 1, j] - vv[i, j] if i < h - 1 else 0.
            phi[i, j] = 0.5 / math.sqrt(ux * ux + uy * uy + vx * vx + vy * vy + EPSILON)


@_jit
def _data_terms(ix, iy, it, du, dv, noise, psi, terms):
    """Robust data weights per channel, then their channel means of psi Ix Iy, Ix^2, Iy^2, Ix It, Iy It.

    ix, iy, it, psi: (h * w, c); du, dv: (h * w,); terms: (5, h * w).
    """
    n, c = ix.shape
    for m in range(n):
        for k in range(c):
            r = it[m, k] + ix[m, k] * du[m] + iy[m, k] * dv[m]
            psi[m, k] = r * r
    flat = psi.ravel()
    for m in range(flat.size):  # a loop of its own, so that the square roots and divisions vectorise
        flat[m] = 1 / (2 * math.sqrt(flat[m] + EPSILON))
    for m in range(n):
        s12 = s11 = s22 = s1 = s2 = 0.
        for k in range(c):
            weight, gx, gy, gt = psi[m, k], ix[m, k], iy[m, k], it[m, k]
            if noise[k] < NOISE_FLOOR:
                weight = 0.
            s12 += weight * gx * gy
            s11 += weight * gx * gx
            s22 += weight * gy * gy
            s1 += weight * gx * gt
            s2 += weight * gy * gt
        terms[0, m], terms[1, m], terms[2, m], terms[3, m], terms[4, m] = s11 / c, s12 / c, s22 / c, s1 / c, s2 / c


@_jit
def _assemble(u, v, phi, terms, alpha, k):
    """SOR coefficients of each pixel p of the zero-bordered grid, at k[K_STRIDE * p + K_...]: the weights
    of its links to the left and upper neighbours, A12, omega / A11, omega / A22, b1, b2; b is the data term
    minus alpha times phi's Laplacian of the flow. Border links weigh zero, so an absent neighbour adds an
    exact zero. omega / diagonal is computed once here, keeping the division off the sweeps' dependency chain.

    terms: (5, h * w) channel means of (psi Ix^2, psi Ix Iy, psi Iy^2, psi Ix It, psi Iy It).
    """
    h, w = u.shape
    wp = w + 2
    diagonal = alpha * 0.05
    for i in range(h):
        for j in range(w):
            lu = lv = 0.  # -(weighted Laplacian), pyflow's order of terms
            if j < w - 1:
                lu -= (u[i, j + 1] - u[i, j]) * phi[i, j]
                lv -= (v[i, j + 1] - v[i, j]) * phi[i, j]
            if j > 0:
                lu += (u[i, j] - u[i, j - 1]) * phi[i, j - 1]
                lv += (v[i, j] - v[i, j - 1]) * phi[i, j - 1]
            if i < h - 1:
                lu -= (u[i + 1, j] - u[i, j]) * phi[i, j]
                lv -= (v[i + 1, j] - v[i, j]) * phi[i, j]
            if i > 0:
                lu += (u[i, j] - u[i - 1, j]) * phi[i - 1, j]
                lv += (v[i, j] - v[i - 1, j]) * phi[i - 1, j]
            left = phi[i, j - 1] if j > 0 else 0.
            up = phi[i - 1, j] if i > 0 else 0.
            right = phi[i, j] if j < w - 1 else 0.
            down = phi[i, j] if i < h - 1 else 0.
            coeff = (left + right + up + down) * alpha
            o = K_STRIDE * ((i + 1) * wp + j + 1)
            m = i * w + j
            k[o + K_LEFT], k[o + K_UP], k[o + K_A12] = left, up, terms[1, m]
            k[o + K_R1] = OMEGA / (terms[0, m] + diagonal + coeff)
            k[o + K_R2] = OMEGA / (terms[2, m] + diagonal + coeff)
            k[o + K_B1] = -terms[3, m] - alpha * lu
            k[o + K_B2] = -terms[4, m] - alpha * lv


@_jit(inline='always')
def _sor_pixel(k, x, p, wp, left_u, left_v, up_u, up_v, neg_alpha, keep):
    """Update (du, dv) at grid pixel p (x[2p], x[2p + 1]) given its left and upper neighbours' new values.

    pyflow's order of operations: neighbours left, right, up, down; du first, dv with the new du.
    """
    stride, one, two = U(K_STRIDE), U(1), U(2)
    o, q, down = p * stride, p * two, (p + wp) * two
    left_w, up_w, a12 = k[o + U(K_LEFT)], k[o + U(K_UP)], k[o + U(K_A12)]
    right_w, down_w = k[o + stride + U(K_LEFT)], k[(p + wp) * stride + U(K_UP)]
    s1 = left_w * left_u + right_w * x[q + two] + up_w * up_u + down_w * x[down]
    s2 = left_w * left_v + right_w * x[q + two + one] + up_w * up_v + down_w * x[down + one]
    s1 = s1 * neg_alpha + a12 * x[q + one]
    du = keep * x[q] + k[o + U(K_R1)] * (k[o + U(K_B1)] - s1)
    x[q] = du
    s2 = s2 * neg_alpha + a12 * du
    dv = keep * x[q + one] + k[o + U(K_R2)] * (k[o + U(K_B2)] - s2)
    x[q + one] = dv
    return du, dv


@_jit
def _sor(k, x, h, w, alpha, n_sweeps):
    """Gauss-Seidel sweeps with over-relaxation, row by row, du before dv: x = (du, dv) in place.

    x holds (du, dv) per pixel of a (h + 2) x (w + 2) grid with a zero border, k the coefficients of
    ``_assemble``. A pixel needs the new values of its left and upper neighbours, so one row alone is a
    single chain of dependent arithmetic. SOR_ROWS rows therefore advance together, each one column
    behind the row above, handing it its new value in a register: every pixel sees exactly the values of
    the plain row-by-row sweep, and the CPU gets SOR_ROWS independent chains.
    """
    wp = U(w + 2)
    keep, neg_alpha = 1. - OMEGA, -alpha
    for _ in range(n_sweeps):
        top = 0
        while top + SOR_ROWS <= h:  # rows a, b, c, d = top .. top + 3
            pa = U((top + 1) * (w + 2) + 1)
            pb, pc, pd = pa + wp, pa + U(2) * wp, pa + U(3) * wp
            a_u = a_v = b_u = b_v = c_u = c_v = d_u = d_v = 0.  # left of column 0: weight 0
            for step in range(w + SOR_ROWS - 1):
                s = U(step)
                # bottom row first: each row reads the value its upper row made in the previous step
                if 3 <= step:
                    d_u, d_v = _sor_pixel(k, x, pd + s - U(3), wp, d_u, d_v, c_u, c_v, neg_alpha, keep)
                if 2 <= step < w + 2:
                    c_u, c_v = _sor_pixel(k, x, pc + s - U(2), wp, c_u, c_v, b_u, b_v, neg_alpha, keep)
                if 1 <= step < w + 1:
                    b_u, b_v = _sor_pixel(k, x, pb + s - U(1), wp, b_u, b_v, a_u, a_v, neg_alpha, keep)
                if step < w:
                    up = (pa + s - wp) * U(2)
                    a_u, a_v = _sor_pixel(k, x, pa + s, wp, a_u, a_v, x[up], x[up + U(1)], neg_alpha, keep)
            top += SOR_ROWS
        for i in range(top, h):
            p = U((i + 1) * (w + 2) + 1)
            a_u = a_v = 0.
            for j in range(w):
                up = (p - wp) * U(2)
                a_u, a_v = _sor_pixel(k, x, p, wp, a_u, a_v, x[up], x[up + U(1)], neg_alpha, keep)
                p += U(1)


@_jit
def _refine(f1, f2, warped, u, v, noise, alpha, n_outer, n_inner, n_sor):
    """One pyramid level: outer (linearisation) and inner (re-weighting) iterations; u, v, warped, noise
    in place."""
    h, w, c = f1.shape
    smooth_taps, deriv_taps = SMOOTH_TAPS.copy(), DERIV_TAPS.copy()  # writable: the types callers pass
    smooth1 = _filter_hv(f1, smooth_taps)
    tmp, smooth2, mix = np.empty_like(f1), np.empty_like(f1), np.empty_like(f1)
    ix, iy, it, psi = np.empty_like(f1), np.empty_like(f1), np.empty_like(f1), np.empty_like(f1)
    phi, terms = np.empty((h, w)), np.empty((5, h * w))
    du, dv = np.zeros(h * w), np.zeros(h * w)
    x = np.zeros(2 * (h + 2) * (w + 2))
    k = np.zeros(K_STRIDE * (h + 2) * (w + 2))
    a1, a2, am, at = smooth1.ravel(), smooth2.ravel(), mix.ravel(), it.ravel()
    for _ in range(n_outer):
        _hfilter(warped, smooth_taps, tmp)
        _vfilter(tmp, smooth_taps, smooth2)
        for m in range(a1.size):
            am[m] = a1[m] * 0.4 + a2[m] * 0.6
            at[m] = a2[m] - a1[m]
        _hfilter(mix, deriv_taps, ix)
        _vfilter(mix, deriv_taps, iy)
        x.fill(0.)
        for inner in range(n_inner):
            _increment(x, h, w, du, dv)
            _smoothness_weights(u, v, du, dv, phi)
            _data_terms(ix.reshape(h * w, c), iy.reshape(h * w, c), it.reshape(h * w, c), du, dv, noise,
                        psi.reshape(h * w, c), terms)
            _assemble(u, v, phi, terms, alpha, k)
            x.fill(0.)
            _sor(k, x, h, w, alpha, n_sor)
        _increment(x, h, w, du, dv)
        for i in range(h):
            for j in range(w):
                u[i, j] += du[i * w + j]
                v[i, j] += dv[i * w + j]
        _warp_bilinear(f1, f2, u, v, warped)
        _estimate_noise(f1, warped, noise)


@_jit
def _warp_bicubic(im1, im2, u, v):
    """im2 at (x + u, y + v) by bicubic Hermite patches; im1 outside the frame; clipped to [0, 1].

    The sixteen patch coefficients and the final sum keep pyflow's order of terms (bit-identity).
    """
    h, w, c = im2.shape
    gx, gy, gxy = np.empty_like(im2), np.empty_like(im2), np.empty_like(im2)
    taps = CENTRAL_TAPS.copy()
    _hfilter(im2, taps, gx)
    _vfilter(im2, taps, gy)
    _vfilter(gx, taps, gxy)
    out = np.empty_like(im2)
    for i in range(h):
        for j in range(w):
            x, y = j + u[i, j], i + v[i, j]
            if x < 0 or x > w - 1 or y < 0 or y > h - 1:
                for k in range(c):
                    out[i, j, k] = im1[i, j, k]
            else:
                x0, y0 = int(x), int(y)
                x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
                tx, ty = x - x0, y - y0
                tx2, ty2 = tx * tx, ty * ty
                tx3, ty3 = tx * tx2, ty * ty2
                for k in range(c):
                    # corner values f, x-derivatives p, y-derivatives q, cross derivatives s;
                    # suffix ab: a = 1 at x1, b = 1 at y1
                    f00, f10, f01, f11 = im2[y0, x0, k], im2[y0, x1, k], im2[y1, x0, k], im2[y1, x1, k]
                    p00, p10, p01, p11 = gx[y0, x0, k], gx[y0, x1, k], gx[y1, x0, k], gx[y1, x1, k]
                    q00, q10, q01, q11 = gy[y0, x0, k], gy[y0, x1, k], gy[y1, x0, k], gy[y1, x1, k]
                    s00, s10, s01, s11 = gxy[y0, x0, k], gxy[y0, x1, k], gxy[y1, x0, k], gxy[y1, x1, k]
                    c20 = -3 * f00 + 3 * f10 - 2 * p00 - p10
                    c30 = 2 * f00 - 2 * f10 + p00 + p10
                    c21 = -3 * q00 + 3 * q10 - 2 * s00 - s10
                    c31 = 2 * q00 - 2 * q10 + s00 + s10
                    c02 = -3 * f00 + 3 * f01 - 2 * q00 - q01
                    c12 = -3 * p00 + 3 * p01 - 2 * s00 - s01
                    c22 = (9 * f00 - 9 * f10 - 9 * f01 + 9 * f11
                           + 6 * p00 + 3 * p10 - 6 * p01 - 3 * p11
                           + 6 * q00 - 6 * q10 + 3 * q01 - 3 * q11
                           + 4 * s00 + 2 * s10 + 2 * s01 + s11)
                    c32 = (-6 * f00 + 6 * f10 + 6 * f01 - 6 * f11
                           + -3 * p00 - 3 * p10 + 3 * p01 + 3 * p11
                           + -4 * q00 + 4 * q10 - 2 * q01 + 2 * q11
                           + -2 * s00 - 2 * s10 - s01 - s11)
                    c03 = 2 * f00 - 2 * f01 + q00 + q01
                    c13 = 2 * p00 - 2 * p01 + s00 + s01
                    c23 = (-6 * f00 + 6 * f10 + 6 * f01 - 6 * f11
                           + -4 * p00 - 2 * p10 + 4 * p01 + 2 * p11
                           + -3 * q00 + 3 * q10 - 3 * q01 + 3 * q11
                           + -2 * s00 - s10 - 2 * s01 - s11)
                    c33 = (4 * f00 - 4 * f10 - 4 * f01 + 4 * f11
                           + 2 * p00 + 2 * p10 - 2 * p01 - 2 * p11
                           + 2 * q00 - 2 * q10 + 2 * q01 - 2 * q11
                           + s00 + s10 + s01 + s11)
                    out[i, j, k] = (f00 + q00 * ty + c02 * ty2 + c03 * ty3
                                    + p00 * tx + s00 * tx * ty + c12 * tx * ty2 + c13 * tx * ty3
                                    + c20 * tx2 + c21 * tx2 * ty + c22 * tx2 * ty2 + c23 * tx2 * ty3
                                    + c30 * tx3 + c31 * tx3 * ty + c32 * tx3 * ty2 + c33 * tx3 * ty3)
    for i in range(h):
        for j in range(w):
            for k in range(c):
                value = out[i, j, k]
                value = 0. if value < 0 else value
                out[i, j, k] = 1. if value > 1 else value
    return out


def _pyramid_sizes(h, w, ratio, min_width):
    """pyflow's pyramid: (source level, blur sigma, blur radius, rate, height, width) per level."""
    ratio = ratio if 0.4 <= ratio <= 0.98 else 0.75
    n_levels = int(math.log(min_width / w) / math.log(ratio))
    n_direct = int(math.log(0.25) / math.log(ratio))  # levels made from the full image
    base_sigma = 1 / ratio - 1
    levels = [(0, 0., 0, 1., h, w)]
    for i in range(1, n_levels):
        if i <= n_direct:
            source, sigma, rate = 0, base_sigma * i, math.pow(ratio, i)
        else:
            source, sigma = i - n_direct, base_sigma * n_direct
            rate = math.pow(ratio, i) * w / levels[source][5]
        src_h, src_w = levels[source][4:]
        levels.append((source, sigma, int(sigma * 3), rate, int(src_h * rate), int(src_w * rate)))
    return levels[:max(n_levels, 0)]


def _accepted(h, w, ratio, min_width):
    levels = _pyramid_sizes(h, w, ratio, min_width)
    return bool(levels) and min(min(level[4:]) for level in levels) >= 1


def _check_size(h, w, ratio, min_width):
    if _accepted(h, w, ratio, min_width):
        return
    where = f'coarse2fine_flow: images of {h}x{w} (h x w) are below the smallest size pyflow accepts'
    settings = f'ratio={ratio}, min_width={min_width}'
    min_w = next(x for x in range(min_width, 3 * min_width + 2) if _accepted(10 ** 6, x, ratio, min_width))
    if w < min_w:
        raise ValueError(f'{where}: width >= {min_w} with {settings}, for at least one pyramid level '
                         f'(pyflow crashes below)')
    min_h = next(y for y in range(1, 10 ** 6) if _accepted(y, w, ratio, min_width))
    raise ValueError(f'{where}: height >= {min_h} at width {w} with {settings}, for every pyramid level to '
                     f'keep a row (pyflow crashes below)')


def _gaussian_taps(sigma, radius):
    two_var = sigma * sigma * 2
    taps = [math.exp(-(i * i) / two_var) for i in range(-radius, radius + 1)]
    total = 0.
    for tap in taps:
        total += tap
    return np.array([tap / total for tap in taps])


def _pyramid(im, levels):
    pyramid = [im]
    for source, sigma, radius, rate, h, w in levels[1:]:
        taps = _gaussian_taps(sigma, radius)
        pyramid.append(_resize(_filter_hv(pyramid[source], taps), h, w, rate, rate))
    return pyramid


def _as_image(im, name):
    im = np.asarray(im)
    if not np.issubdtype(im.dtype, np.floating):
        raise ValueError(f'coarse2fine_flow: {name} must be float in [0, 1], got dtype {im.dtype}')
    if im.ndim == 2:
        im = im[..., None]
    if im.ndim != 3:
        raise ValueError(f'coarse2fine_flow: {name} must be (H, W, C) or (H, W), got shape {im.shape}')
    return np.ascontiguousarray(im, dtype=np.float64)


def coarse2fine_flow(im1, im2, alpha=0.012, ratio=0.75, min_width=20, n_outer=7, n_inner=1, n_sor=30, col_type=0):
    """Flow from im1 to im2 as ``pyflow.coarse2fine_flow(im1, im2, alpha, ratio, min_width, n_outer, n_inner,
    n_sor, col_type)`` computes it; the defaults are MSTT's and STARnet's settings (pyflow's own defaults are
    1, 0.5, 40, 3, 1, 20, 0).

    im1, im2: (H, W, 3) RGB float in [0, 1] (col_type 0), or grey (H, W) / (H, W, 1) (col_type 1; with one
    channel the colour type changes nothing). Returns ``(u, v, warped)``: u along x (columns, +right), v
    along y (rows, +down), (H, W) float64 each, such that im2 at (x + u, y + v) matches im1 (backward
    warping); warped, (H, W, C) float64, is im2 warped onto im1's grid (C = 1 for (H, W) input). Raises
    ValueError for images below the smallest size pyflow accepts (see the module docstring).
    """
    im1, im2 = _as_image(im1, 'im1'), _as_image(im2, 'im2')
    if im1.shape != im2.shape:
        raise ValueError(f'coarse2fine_flow: images of different shapes {im1.shape} and {im2.shape}')
    if col_type not in (0, 1):
        raise ValueError(f'coarse2fine_flow: col_type must be 0 (RGB) or 1 (GRAY), got {col_type!r}')
    min_width, n_outer, n_inner, n_sor = (operator.index(n) for n in (min_width, n_outer, n_inner, n_sor))
    if not ratio > 0 or min_width < 1:
        raise ValueError(f'coarse2fine_flow: need ratio > 0 and min_width >= 1, got {ratio}, {min_width}')
    h, w = im1.shape[:2]
    _check_size(h, w, ratio, min_width)
    levels = _pyramid_sizes(h, w, ratio, min_width)
    pyramid1, pyramid2 = _pyramid(im1, levels), _pyramid(im2, levels)
    for k in range(len(levels) - 1, -1, -1):
        bgr = col_type == 1 and k == 0  # pyflow's colour type reaches level 0 only
        f1, f2 = _features(pyramid1[k], bgr), _features(pyramid2[k], bgr)
        lh, lw = f1.shape[:2]
        if k == len(levels) - 1:  # coarsest level: zero flow, nothing warped yet
            noise = np.full(f1.shape[2], NOISE_INIT)
            u, v, warped = np.zeros((lh, lw)), np.zeros((lh, lw)), f2.copy()
        else:
            (ph, pw), scale = u.shape, 1 / ratio  # the ratio given, even where the pyramid replaced it
            u = _resize(u.reshape(ph, pw, 1), lh, lw, lw / pw, lh / ph).reshape(lh, lw) * scale
            v = _resize(v.reshape(ph, pw, 1), lh, lw, lw / pw, lh / ph).reshape(lh, lw) * scale
            warped = np.empty_like(f1)
            _warp_bilinear(f1, f2, u, v, warped)
        _refine(f1, f2, warped, u, v, noise, float(alpha), n_outer + k, n_inner, n_sor + 3 * k)
    return u, v, _warp_bicubic(im1, im2, u, v)
