"""BSPM: blurring–sharpening process models (Choi et al., "Blurring-Sharpening Process Models for
Collaborative Filtering", SIGIR 2023, Eq. 6–10).

A user's row ``r = R[u]`` (binary) is first *blurred* by the heat equation on the item graph and
then *sharpened* by running it backwards:

.. math::

    \\text{blur:}\\quad \\frac{d\\mathbf b(t)}{dt} = \\mathbf b(t)(\\tilde P - I),\\ \\mathbf b(0) = r,
    \\qquad
    \\text{IDL:}\\quad \\mathbf r_{idl} = r\\, D_I^{-1/2} V_k V_k^T D_I^{1/2},

    \\text{sharpen:}\\quad \\frac{d\\mathbf s(t)}{dt} = -\\mathbf s(t)\\,\\tilde P,\\qquad
    \\mathbf s(0) = \\mathbf b(T_b) + \\beta\\,\\mathbf r_{idl}\\ \\text{(early merge, EM)}
    \\ \\text{or}\\ \\mathbf b(T_b)\\ \\text{(late merge, LM: } + \\beta\\,\\mathbf r_{idl}
    \\text{ after)},

and ``s_u = s(T_s)``. The ODEs are solved as the paper and the authors' code do — fixed-step
Euler or classical RK4 (``torchdiffeq``'s ``odeint`` with ``method="euler"/"rk4"``, ``K`` steps of
``τ = T/K``). On a *linear* ODE one such step multiplies the state by a polynomial in ``P̃``
(Euler ``1 - τλ``, RK4 the degree-4 Taylor polynomial of ``e^{-τλ}``), so the whole process is
the polynomial filter

.. math::

    s_u = r\\, p_b(\\tilde P)\\, p_s(\\tilde P) + \\beta\\, \\mathbf r_{idl}\\, q(\\tilde P),
    \\quad p_b(\\lambda) = (1 + τ_b(\\lambda - 1))^{K_b},\\ p_s(\\lambda) = g(-τ_s\\lambda)^{K_s},

(``q = p_s`` for EM, ``1`` for LM), which we apply with ``deg p_b + deg p_s`` propagations
``P̃ X = R̃^T(R̃X)`` per block of users (exactly what the solver's steps compute, in float32), and
the IDL term as ``(r D^{-1/2} V_k)(V_k^T D^{1/2} q(P̃))`` with the ``k × n_items`` right factor
computed once. ``t_point_combination`` averages the states at every solver time point after 0
(blur and sharpen together), as the code's option of that name.

Gowalla (the setting of the paper's 0.1920, from the authors' README): EM, blur ``T_b = 1``, one
Euler step; sharpen ``T_s = 2.5``, one RK4 step; IDL ``k = 448``, ``β = 0.2``, solved with one Euler
step of ``T = 1`` (which makes ``r_idl`` the projection above). Items without training users get
``D_I^{1/2} = 0``.

Scoring runs in torch on the model's device (CPU or CUDA, :mod:`whyrec.models.spectral`), the
polynomials' propagations and the IDL factor included; the SVD that fits ``V_k`` runs on the CPU and
the basis is then moved to the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numpy.polynomial import polynomial as P
from torch import Tensor

from .spectral import LinearFilter

__all__ = ["BSPMConfig", "BSPM", "SOLVERS", "step_polynomial"]

SOLVERS = ("euler", "rk4")
MERGES = ("early", "late")


@dataclass
class BSPMConfig:
    rank: int = 448          #: k of the ideal low-pass (IDL) term
    beta: float = 0.2        #: β, weight of the IDL term (the code's idl_beta)
    T_s: float = 2.5         #: sharpening terminal time
    K_s: int = 1             #: sharpening steps
    solver: str = "rk4"      #: sharpening solver: euler or rk4
    T_b: float = 1.0         #: blurring terminal time (Euler)
    K_b: int = 1             #: blurring steps
    merge: str = "early"     #: early (EM: IDL enters the sharpening) or late (LM: added after)
    t_point_combination: bool = False
    svd: str = "randomized"


def step_polynomial(solver: str, tau: float, steps: int, sign: float, shift: float = 0.0) -> np.ndarray:
    """Coefficients (ascending powers of ``λ``) of ``steps`` fixed steps of ``solver`` with step
    ``tau`` on ``dy/dt = y · sign·(λ - shift)`` — what a solver step does to each eigen-component."""
    z = np.array([-sign * shift * tau, sign * tau])  # τ·f as a polynomial in λ
    if solver == "euler":
        one = P.polyadd([1.0], z)
    elif solver == "rk4":
        one = P.polyadd([1.0], z)
        term = z
        for n in (2, 3, 4):
            term = P.polymul(term, z) / n
            one = P.polyadd(one, term)
    else:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    out = np.array([1.0])
    for _ in range(int(steps)):
        out = P.polymul(out, one)
    return out


class BSPM(LinearFilter):
    """BSPM over a training matrix ``train`` ``(n_users, n_items)`` (module docstring)."""

    def __init__(self, train: sp.spmatrix, config: BSPMConfig | None = None):
        self.config = config = config or BSPMConfig()
        if config.merge not in MERGES:
            raise ValueError(f"merge must be early or late, got {config.merge!r}")
        for name in ("K_s", "K_b"):
            if int(getattr(config, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)!r}")
        step_polynomial(config.solver, 1.0, 1, -1.0)  # validates the solver name
        super().__init__(train, config)

    # -- the polynomials ---------------------------------------------------- #
    def polynomials(self) -> tuple[np.ndarray, np.ndarray]:
        """``(p, q)``: ascending coefficients in ``λ`` with ``s = r p(P̃) + β r_idl q(P̃)`` (kept per setting)."""
        return self._cached("polynomials", self._polynomials)

    def _polynomials(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        blur_step = step_polynomial("euler", c.T_b / c.K_b, 1, +1.0, shift=1.0)  # dy/dt = y(λ - 1)
        sharp_step = step_polynomial(c.solver, c.T_s / c.K_s, 1, -1.0)          # dy/dt = -y λ
        blur_states, b = [], np.array([1.0])
        for _ in range(int(c.K_b)):
            b = P.polymul(b, blur_step)
            blur_states.append(b)
        early = c.merge == "early"
        sharp_states, s = [], np.array([1.0])
        for _ in range(int(c.K_s)):
            s = P.polymul(s, sharp_step)
            sharp_states.append(s)
        # each state is (poly applied to r, poly applied to r_idl)
        states = [(bs, np.zeros(1)) for bs in blur_states]
        states += [(P.polymul(b, ss), ss if early else np.zeros(1)) for ss in sharp_states]
        if c.t_point_combination:
            p = sum_polys([st[0] for st in states]) / len(states)
            q = sum_polys([st[1] for st in states]) / len(states)
        else:
            p, q = states[-1]
        if not early:
            q = P.polyadd(q, [1.0])
        return np.trim_zeros(p, "b") if p.any() else np.zeros(1), np.trim_zeros(q, "b") if q.any() else np.zeros(1)

    # -- scoring ------------------------------------------------------------ #
    def apply_polynomial(self, coeffs: np.ndarray, X: Tensor, rows=None) -> Tensor:
        """``p(P̃) X`` by Horner's rule, ``deg p`` propagations; with ``rows`` (the sparse
        :class:`~whyrec.models.spectral.Rows` of ``X``) the first one is done from them."""
        if len(coeffs) == 1:
            return X * float(coeffs[0])
        if rows is not None:
            out = rows.propagate().mul_(float(coeffs[-1]))
        else:
            out = self.propagate(X * float(coeffs[-1]))
        for n, a in enumerate(coeffs[-2::-1]):
            if n:
                out = self.propagate(out)
            if a:
                out.add_(X, alpha=float(a))
        return out

    def idl_right(self) -> Tensor:
        """``q(P̃) D^{1/2} V_k`` ``(n_items, k)``: the IDL term's right factor (computed once)."""
        def make():
            _, q = self.polynomials()
            with torch.no_grad():
                return self.apply_polynomial(q, self.item_power(0.5).unsqueeze(1) * self.V).contiguous()
        return self._cached("idl_right", make)

    def low_rank_factors(self):
        return self.graph.item_power(-0.5), self.idl_right(), float(self.config.beta)

    def filter_items(self, rows) -> Tensor:
        p, _ = self.polynomials()
        out = self.apply_polynomial(p, rows.dense(), rows)
        if self.config.beta:
            low = rows.scaled(self.item_power(-0.5)).project(self.V)  # V^T D^-1/2 x, (k, b)
            out.addmm_(self.idl_right(), low, alpha=float(self.config.beta))
        return out


def sum_polys(polys) -> np.ndarray:
    out = np.zeros(1)
    for p in polys:
        out = P.polyadd(out, p)
    return out
