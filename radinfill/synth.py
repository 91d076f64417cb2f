"""Synthetic precipitation sequences and radar-outage masks (pure array functions).

Tests, demos and training need rain that moves and evolves like radar composites, and holes
shaped like real radar failures, without shipping an archive. Both are generated here from a
seed, deterministically, on any RADOLAN grid.

**Rain** (:func:`sequence`) follows the FFT recipe of ``reference/baselines-metrics-synthetic.md``
§4.3, a spectral cousin of pysteps' STEPS, with ``scipy.fft`` (single precision, threaded):

1. A complex Gaussian field on the ``rfft2`` grid of a domain padded by :data:`PAD_KM` plus the
   distance the rain travels in :data:`PAD_HORIZON_HOURS` (so the periodic wrap-around never
   reaches the cropped grid within that horizon), with a two-slope power-law amplitude
   ``A(k) = k^(-beta_large/2)`` up to the break wavenumber and ``k^(-beta_small/2)`` beyond.
2. Each Fourier mode is an AR(1) process in the frame moving with the rain,
   ``Z_t = rho(k) Z_{t-1} + sqrt(1 - rho^2) eps_t``, ``rho = exp(-dt / tau(L))`` with the
   lifetime ``tau(L) = tau0 (L / L0)^alpha`` growing with the wavelength ``L`` and capped at
   :data:`LIFETIME_MAX_MINUTES`: small scales decorrelate faster, and the lifetimes are per
   minute, so 5-min and hourly sequences are samples of the same process.
3. Uniform advection as an exact Fourier phase shift. It is folded into the recursion,
   ``Y_t = rho e^{-2 pi i k.d} Y_{t-1} + sqrt(1 - rho^2) eps_t`` with ``d`` the displacement per
   step (a circular complex normal rotated by a phase is again one), so no phase ramp per step
   and no stack of complex frames is kept. Speed and direction are drawn per sequence: a speed
   from the preset's range, a direction mostly towards the E-NE (rain in Germany mostly comes
   from the W-SW).
4. Probability matching per frame: the wettest ``f_t`` share of pixels (by rank of the Gaussian
   field) get truncated-lognormal intensities at evenly spaced quantiles, clipped to
   [:data:`WET_THRESHOLD_MMH`, :data:`CAP_MMH`]; all others are 0. The wet fraction ``f_t`` and
   the log-mean ``mu_t`` grow and decay slowly (sinusoids of random phase and a period of
   :data:`CYCLE_HOURS`; the wet-fraction swing is ±40 % rather than §4.3's ±60 %, which
   would leave the 5-35 % band of real wet fractions).

The lifetimes are deliberately long (the Lagrangian log-correlation at 5 min is ~0.95, as in
real rain): a prototype trained on faster-decorrelating synthetic rain learned to damp
(``reference/model-prototype-findings.md``). The Eulerian decorrelation at a fixed pixel then
comes mostly from the motion, as in real composites. 900 x 900 x 37 frames take about 2 s on
two cores; memory is the output plus a few spectral planes.

Two consequences of matching probabilities per frame over the whole grid: every frame of a
small grid has rain, and a small grid (a few hundred km) shows lower Eulerian correlations than
the national one, because a Pearson r over a domain discounts the scales larger than it (real
rain behaves the same). The preset targets hold for domains of ~500-900 km. Hourly frames are
the same process sampled every hour (rates times 1 h), not sums of twelve 5-min frames, so
they are a little less smooth than a real RW accumulation.

**Outages** (:func:`outage_events`) use the geometry of the real DWD sites
(``reference/baselines-metrics-synthetic.md`` §4.4): the full 150 km disc of a failed radar
(the stress case the seed model trained on), the part of it no other radar covers (what a
real composite shows), static beam-blockage wedges and small blind zones around a site. Each
site switches between up and down as a two-state Markov chain, so outages persist and overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy import fft
from scipy.special import ndtri

from radinfill.holes import coverage, great_circle
from radinfill.radolan import Grid, grid_for
from radinfill.radolan.sites import OPERATIONAL, SITES

__all__ = [
    "KINDS",
    "PRESETS",
    "Outage",
    "Preset",
    "Targets",
    "failed_sites",
    "outage_events",
    "outages",
    "sequence",
]

#: Smallest rain rate (mm/h) of a wet pixel; the wet-fraction threshold of the statistics.
WET_THRESHOLD_MMH = 0.1
#: Largest rain rate (mm/h); without a cap the convective tail reaches ~450 mm/h (§4.3).
CAP_MMH = 150.0
#: Padding (km) of the FFT domain beyond the grid, hiding the field's periodicity.
PAD_KM = 128.0
#: The domain is padded further by the distance the rain travels in this time (h).
PAD_HORIZON_HOURS = 3.0
#: Longest lifetime (min) of any Fourier mode: even synoptic patterns evolve within hours,
#: and hourly sequences would otherwise show the same large-scale pattern wrap around.
LIFETIME_MAX_MINUTES = 360.0
#: Relative amplitude of the slow growth/decay of the wet fraction.
WET_FRACTION_SWING = 0.4
#: Amplitude (in ln(mm/h)) of the slow intensification/decay of the log-mean intensity.
LOG_MEAN_SWING = 0.3
#: Range (h) of the period of growth and decay, drawn per sequence.
CYCLE_HOURS = (3.0, 8.0)
#: Mean direction (degrees from grid north, clockwise) the rain moves *towards*: from W-SW.
DIRECTION_TO_DEG = 70.0
#: Concentration of the von Mises distribution of the direction (circular sd ~37 degrees).
DIRECTION_KAPPA = 3.0

#: Outage kinds: the footprint of a failed radar no other radar covers, its whole disc, a
#: beam-blockage sector, a blind zone (cone of silence) around the site.
KINDS = ("exclusive", "full", "wedge", "blind")
_DISC_KINDS = ("exclusive", "full")
#: Angular width (degrees) and start range (km) of beam-blockage wedges.
WEDGE_WIDTH_DEG = (2.0, 20.0)
WEDGE_START_KM = (5.0, 60.0)
#: Radius (km) of blind zones.
BLIND_RADIUS_KM = (2.0, 5.0)
#: Wedges and blind zones are static features: they start this many times less often and last
#: this many times longer than radar failures (same share of time down).
STATIC_PERSISTENCE = 10.0
#: sd of ln(mean outage duration) across outages (heavy tail of long outages).
DURATION_LOG_SD = 0.75

Range = tuple[float, float]


@dataclass(frozen=True)
class Targets:
    """Ranges a preset's sequences must reach, each ``(low, high)``.

    They hold for the mean over a few events (seeds) of 5-min sequences on a grid of about
    500-900 km, the size of the real domains they come from
    (``reference/baselines-metrics-synthetic.md`` §4.2); one event scatters around them. A
    Pearson r over a smaller grid discounts the scales larger than it, so small grids show
    lower Eulerian correlations, as real rain would.

    Attributes
    ----------
    wet_fraction
        Mean share of pixels with at least :data:`WET_THRESHOLD_MMH`.
    log_mean, log_sd
        Mean and sd of ln R (R in mm/h) over wet pixels.
    p99
        99th percentile of wet-pixel rain rates (mm/h).
    lag_5min, lag_1h
        Eulerian pattern correlation: Pearson r of whole fields (mm) 5 min and 1 h apart.
    advected_5min, advected_25min
        Lagrangian log-correlation: Pearson r of log1p fields after shifting the earlier one by
        the motion, 5 and 25 min apart (what an advection nowcast keeps).
    """

    wet_fraction: Range
    log_mean: Range
    log_sd: Range
    p99: Range
    lag_5min: Range
    lag_1h: Range
    advected_5min: Range
    advected_25min: Range


@dataclass(frozen=True)
class Preset:
    """Generator parameters of one weather regime and the statistics they must produce.

    Attributes
    ----------
    name
        Key in :data:`PRESETS`.
    wet_fraction
        Mean share of wet pixels (>= :data:`WET_THRESHOLD_MMH`).
    log_mean, log_sd
        mu and sigma of the lognormal rain rate (ln of mm/h) before truncation.
    beta_large, beta_small
        Power-spectrum exponents (PSD ~ k^-beta) above and below the break scale.
    break_km
        Wavelength (km) of the spectral break.
    lifetime_minutes
        Lifetime tau0 (min) of the Fourier modes of wavelength ``lifetime_scale_km``.
    lifetime_scale_km, lifetime_exponent
        L0 (km) and alpha of ``tau(L) = tau0 (L / L0)^alpha``.
    speed_kmh
        Range (km/h) the advection speed is drawn from.
    targets
        Statistics of the output (:class:`Targets`).
    """

    name: str
    wet_fraction: float
    log_mean: float
    log_sd: float
    beta_large: float
    beta_small: float
    break_km: float
    lifetime_minutes: float
    lifetime_scale_km: float
    lifetime_exponent: float
    speed_kmh: Range
    targets: Targets


# Sources of the targets: "§4.2" is the table and rules of thumb of
# reference/baselines-metrics-synthetic.md §4.2 (real 5-min MeteoSwiss (MCH), FMI and KNMI
# sequences, hourly RADOLAN RW), "§4.3" its synthetic preset table, "findings" the line
# "log correlation advected-vs-true 0.83 -> 0.50 over leads 1-5, real ~ 0.95 -> 0.75" of
# reference/model-prototype-findings.md. Generator choices: beta_large is steeper than the
# measured PSD slopes (-1.9 ... -2.3) because the rain/no-rain edges of probability matching
# flatten the spectrum (pysteps' two-slope fit on our dBR output gives about -2.1 / -1.9 / -1.6);
# the lifetimes are the findings' "longer lifetimes (40-150 min)" rather than §4.3's 40/20/8 min;
# the speed ranges bracket §4.3's 40/30/20 km/h within 10-60 km/h.
PRESETS: MappingProxyType[str, Preset] = MappingProxyType(
    {
        "stratiform": Preset(
            name="stratiform",
            wet_fraction=0.22,
            log_mean=-0.45,
            log_sd=1.0,
            beta_large=2.9,
            beta_small=3.4,
            break_km=40.0,
            lifetime_minutes=90.0,
            lifetime_scale_km=8.0,
            lifetime_exponent=0.8,
            speed_kmh=(20.0, 50.0),
            targets=Targets(
                # §4.2 rule "wet fraction 5-30 %"; MCH 2017-01-31 21.0, FMI 2016-09-28 30.3,
                # MCH 2015-05-15 17.7 (13-26) %.
                wet_fraction=(0.12, 0.32),
                # §4.2 rule "ln R ~ N(-1...+0.4, 0.85-1.25)"; MCH 2017 -0.28 / 1.03,
                # FMI 2016 -0.68 / 0.93, KNMI 2010 -0.76 / 0.98.
                log_mean=(-0.8, -0.1),
                log_sd=(0.85, 1.1),
                # §4.2 p99 MCH 2017 7.3, FMI 2016 4.5, KNMI 4.6 mm/h; §4.3 stratiform 5.9.
                p99=(4.0, 12.0),
                # §4.2 r at 5 min MCH 2017 0.85, MCH 2015 0.81, KNMI 0.79; at 60 min 0.37,
                # 0.30, 0.15; RW 1-h lag 0.14-0.56.
                lag_5min=(0.78, 0.92),
                lag_1h=(0.15, 0.45),
                # findings: real 0.95 -> 0.75 over 5-25 min; stratiform at least as persistent.
                advected_5min=(0.93, 0.99),
                advected_25min=(0.75, 0.92),
            ),
        ),
        "mixed": Preset(
            name="mixed",
            wet_fraction=0.16,
            log_mean=-0.1,
            log_sd=1.15,
            beta_large=2.7,
            beta_small=3.4,
            break_km=30.0,
            lifetime_minutes=60.0,
            lifetime_scale_km=8.0,
            lifetime_exponent=0.8,
            speed_kmh=(15.0, 45.0),
            targets=Targets(
                # §4.2 MCH 2015-05-15 17.7 (13-26) %; §4.3 mixed 15 (6-24) %.
                wet_fraction=(0.08, 0.25),
                # §4.2 MCH 2015 0.01 / 1.14; §4.3 mixed -0.17 / 1.09.
                log_mean=(-0.4, 0.3),
                log_sd=(0.95, 1.25),
                # §4.2 MCH 2015 p99 15.7 mm/h; §4.3 mixed 11.1.
                p99=(8.0, 25.0),
                # §4.2 r at 5 min MCH 2015 0.81, KNMI 0.79, FMI 2016 0.68; at 60 min 0.30,
                # 0.15, 0.30.
                lag_5min=(0.68, 0.88),
                lag_1h=(0.08, 0.35),
                # findings: real 0.95 -> 0.75, synthetic 0.83 -> 0.50 taught damping.
                advected_5min=(0.92, 0.98),
                advected_25min=(0.7, 0.9),
            ),
        ),
        "convective": Preset(
            name="convective",
            wet_fraction=0.09,
            log_mean=0.3,
            log_sd=1.25,
            beta_large=2.3,
            beta_small=3.4,
            break_km=24.0,
            lifetime_minutes=40.0,
            lifetime_scale_km=8.0,
            lifetime_exponent=0.8,
            speed_kmh=(10.0, 40.0),
            targets=Targets(
                # §4.2 MCH 2016-07-11 13.3 %, FMI 2017-05-09 9.5 %; §4.3 convective 8 (3-13) %.
                wet_fraction=(0.04, 0.15),
                # §4.2 MCH 2016 0.40 / 1.23; §4.3 convective 0.43 / 1.25.
                log_mean=(0.1, 0.7),
                log_sd=(1.1, 1.35),
                # §4.2 MCH 2016 p99 24.9 mm/h; §4.3 convective 28.7 (with the 150 mm/h cap).
                p99=(18.0, 50.0),
                # §4.2 r at 5 min MCH 2016 0.69, FMI 2017 0.54; at 60 min 0.04, 0.08.
                lag_5min=(0.55, 0.8),
                lag_1h=(0.02, 0.15),
                # findings: cells live shorter than the real 0.95 -> 0.75, yet stay clear of
                # the 0.83 -> 0.50 that taught damping.
                advected_5min=(0.87, 0.95),
                advected_25min=(0.6, 0.8),
            ),
        ),
    }
)


def sequence(
    grid: Grid | tuple[int, int],
    steps: int,
    interval_minutes: float = 5,
    preset: str = "mixed",
    seed: int = 0,
) -> np.ndarray:
    """A synthetic precipitation sequence that moves and evolves like a radar composite.

    Parameters
    ----------
    grid
        Target grid, or its ``(rows, cols)`` (see :func:`~radinfill.radolan.grid_for`); the
        pixel size sets the physical scales.
    steps
        Number of frames T (>= 1).
    interval_minutes
        Time between frames and accumulation interval (min): 5 (RY-like) or 60 (RW-like).
        Lifetimes and motion are physical, so an hourly sequence has the 1-h statistics.
    preset
        Weather regime, a key of :data:`PRESETS`.
    seed
        Seed of everything random (motion, growth cycle, noise): same seed, same bytes, and
        a shorter sequence is the start of a longer one with the same arguments.

    Returns
    -------
    numpy.ndarray
        float32 (T, rows, cols), row 0 = south: precipitation in mm per interval (the rate
        in mm/h times ``interval_minutes / 60``), 0 where dry, no NaN.

    Raises
    ------
    ValueError
        For an unknown preset, ``steps < 1`` or ``interval_minutes <= 0``.
    """
    params = _preset(preset)
    if steps < 1 or interval_minutes <= 0:
        raise ValueError(
            f"need steps >= 1 and interval_minutes > 0, got {steps} and {interval_minutes}"
        )
    grid = grid if isinstance(grid, Grid) else grid_for(*grid)
    event_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    speed = event_rng.uniform(*params.speed_kmh)
    direction = event_rng.vonmises(np.radians(DIRECTION_TO_DEG), DIRECTION_KAPPA)  # radians
    period_minutes = 60.0 * event_rng.uniform(*CYCLE_HOURS)
    phase_wet, phase_mu = event_rng.uniform(0.0, 2.0 * np.pi, size=2)

    pixel_km = grid.resolution / 1000.0
    hours = interval_minutes / 60.0
    pad = (PAD_KM + speed * PAD_HORIZON_HOURS) / pixel_km
    shape = tuple(fft.next_fast_len(int(np.ceil(n + pad)), real=True) for n in grid.shape)
    step_km = speed * hours * np.array([np.cos(direction), np.sin(direction)])  # north, east
    amplitude, carry, innovation = _spectral_process(
        params, shape, pixel_km, interval_minutes, step_km
    )

    times = np.arange(steps) * interval_minutes
    wet = params.wet_fraction * (
        1.0 + WET_FRACTION_SWING * np.sin(phase_wet + 2.0 * np.pi * times / period_minutes)
    )
    mu = params.log_mean + LOG_MEAN_SWING * np.sin(phase_mu + 2.0 * np.pi * times / period_minutes)

    rows, cols = grid.shape
    out = np.empty((steps, rows, cols), dtype=np.float32)
    state = amplitude * _complex_noise(noise_rng, amplitude.shape)  # stationary start
    for t in range(steps):
        if t:
            state *= carry
            state += innovation * _complex_noise(noise_rng, innovation.shape)
        gauss = fft.irfft2(state, s=shape, workers=-1)[:rows, :cols]
        out[t] = _match(gauss, wet[t], mu[t], params.log_sd) * np.float32(hours)
    return out


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {name!r}; known: {sorted(PRESETS)}") from None


def _spectral_process(
    params: Preset,
    shape: tuple[int, int],
    pixel_km: float,
    interval_minutes: float,
    step_km: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-mode coefficients of the advected spectral AR(1) on the ``rfft2`` grid of ``shape``.

    Returns the stationary amplitude ``A(k)`` (float32), the complex factor carrying a mode to
    the next step ``rho(k) exp(-2 pi i k.d)`` (complex64; ``d`` = ``step_km`` (north, east), the
    displacement per step in km) and the innovation amplitude ``A(k) sqrt(1 - rho^2)`` (float32).
    """
    ky = fft.fftfreq(shape[0], d=pixel_km)[:, None]
    kx = fft.rfftfreq(shape[1], d=pixel_km)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0 / (max(shape) * pixel_km)  # any finite value: the mean has no amplitude
    k_break = 1.0 / params.break_km
    amplitude = np.where(
        k < k_break,
        k ** (-params.beta_large / 2),
        k_break ** ((params.beta_small - params.beta_large) / 2) * k ** (-params.beta_small / 2),
    )
    amplitude[0, 0] = 0.0
    wavelength = 1.0 / k
    lifetime = params.lifetime_minutes * (wavelength / params.lifetime_scale_km) ** (
        params.lifetime_exponent
    )
    rho = np.exp(-interval_minutes / np.minimum(lifetime, LIFETIME_MAX_MINUTES))
    carry = rho * np.exp(-2j * np.pi * (ky * step_km[0] + kx * step_km[1]))
    return (
        amplitude.astype(np.float32),
        carry.astype(np.complex64),
        (amplitude * np.sqrt(1.0 - rho**2)).astype(np.float32),
    )


def _complex_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex standard normal noise (complex64), each part of unit variance."""
    return rng.standard_normal((*shape, 2), dtype=np.float32).view(np.complex64)[..., 0]


def _match(gauss: np.ndarray, wet_fraction: float, mu: float, sigma: float) -> np.ndarray:
    """Probability-match a Gaussian field to rain (mm/h, float32, same shape).

    The ``wet_fraction`` highest pixels get lognormal(``mu``, ``sigma``) rates at evenly spaced
    quantiles in rank order, clipped to [:data:`WET_THRESHOLD_MMH`, :data:`CAP_MMH`]; the
    others are 0. Only ranks matter, so the field needs no normalisation.
    """
    flat = gauss.ravel()
    n = flat.size
    n_wet = round(wet_fraction * n)
    rain = np.zeros(n, dtype=np.float32)
    if n_wet:
        wettest = np.argpartition(flat, n - n_wet)[n - n_wet :]
        wettest = wettest[np.argsort(flat[wettest])]
        quantiles = (np.arange(n_wet) + 0.5) / n_wet
        rain[wettest] = np.clip(np.exp(mu + sigma * ndtri(quantiles)), WET_THRESHOLD_MMH, CAP_MMH)
    return rain.reshape(gauss.shape)


@dataclass(frozen=True, eq=False)
class Outage:
    """One outage: a static no-data mask over a span of steps.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    site
        Id of the radar it belongs to (:data:`~radinfill.radolan.sites.SITES`).
    start, stop
        First step and the step after the last (``stop`` exclusive), ``0 <= start < stop <= T``.
    mask
        bool (rows, cols), row 0 = south, True = missing; read-only (may be shared).

    Outages compare by identity (the mask is an array).
    """

    kind: str
    site: str
    start: int
    stop: int
    mask: np.ndarray

    def active(self, step: int) -> bool:
        """Whether the outage covers ``step``."""
        return self.start <= step < self.stop


def outage_events(
    grid: Grid | tuple[int, int],
    steps: int,
    seed: int,
    *,
    kinds: Sequence[str] = KINDS,
    p_fail: float = 0.02,
    mean_duration_steps: float = 12,
    radius_km: float = 150.0,
    sites: Iterable[str] = OPERATIONAL,
) -> list[Outage]:
    """Radar outages over ``steps`` steps from the geometry of real sites.

    Each site in ``sites`` runs a two-state (up/down) Markov chain over the steps:
    P(up -> down) = ``p_fail`` per step and P(down -> up) = 1/L, with L drawn per outage from
    a lognormal of mean ``mean_duration_steps`` (sd of ln L :data:`DURATION_LOG_SD`), so
    durations are geometric with a heavy tail, outages persist and may overlap. The chain
    starts near its stationary state, so outages can be under way at step 0. Each down-run
    is one event:

    * ``full``: the ``radius_km`` disc of the site (CAPPI range, the seed model's case);
    * ``exclusive``: that disc minus the discs of every other operational site, the hole a
      real composite shows (empty for interior radars such as ``fld``: then no event);

    with the kind drawn uniformly from those two of ``kinds``. A second and third chain per
    site, :data:`STATIC_PERSISTENCE` times rarer and longer (the same share of time down),
    make the static features:

    * ``wedge``: a beam-blockage sector seen from the site, width in :data:`WEDGE_WIDTH_DEG`,
      from a range in :data:`WEDGE_START_KM` out to ``radius_km``, any azimuth;
    * ``blind``: a disc of radius in :data:`BLIND_RADIUS_KM` around the site.

    Parameters
    ----------
    grid
        Target grid or its ``(rows, cols)``.
    steps
        Number of steps T (>= 1).
    seed
        Seed of every draw: same seed, same events.
    kinds
        Subset of :data:`KINDS` to generate.
    p_fail
        Probability per step that a working radar fails, in [0, 1].
    mean_duration_steps
        Mean outage length (steps, >= 1).
    radius_km
        Coverage radius of a radar (km): 150, or 128 for RADKLIM.
    sites
        Sites that may fail (ids of :data:`~radinfill.radolan.sites.SITES`).

    Returns
    -------
    list of Outage
        Events whose mask has at least one pixel on the grid, ordered by start step, site and
        kind.

    Raises
    ------
    ValueError
        For an unknown kind or site, or parameters out of range.
    """
    grid = grid if isinstance(grid, Grid) else grid_for(*grid)
    if unknown := sorted(set(kinds) - set(KINDS)):
        raise ValueError(f"unknown outage kind(s) {unknown}; known: {list(KINDS)}")
    if steps < 1 or not 0.0 <= p_fail <= 1.0 or mean_duration_steps < 1:
        raise ValueError(
            "need steps >= 1, 0 <= p_fail <= 1 and mean_duration_steps >= 1, got "
            f"{steps}, {p_fail} and {mean_duration_steps}"
        )
    rng = np.random.default_rng(seed)
    disc_kinds = [k for k in _DISC_KINDS if k in kinds]
    static_kinds = [k for k in ("wedge", "blind") if k in kinds]
    events = []
    for site in sites:
        full = coverage(grid, [site], radius_km)
        chains = [(disc_kinds, p_fail, mean_duration_steps)] if disc_kinds else []
        chains += [
            ([kind], p_fail / STATIC_PERSISTENCE, mean_duration_steps * STATIC_PERSISTENCE)
            for kind in static_kinds
        ]
        for choices, p_down, mean_steps in chains:
            for start, stop in _down_runs(rng, steps, p_down, mean_steps):
                kind = choices[rng.integers(len(choices))]
                mask = _outage_mask(kind, grid, site, full, radius_km, rng)
                if mask.any():
                    events.append(Outage(kind, site, start, stop, mask))
    return sorted(events, key=lambda e: (e.start, e.site, KINDS.index(e.kind), e.stop))


def outages(
    grid: Grid | tuple[int, int],
    steps: int,
    seed: int,
    *,
    kinds: Sequence[str] = KINDS,
    p_fail: float = 0.02,
    mean_duration_steps: float = 12,
    radius_km: float = 150.0,
    sites: Iterable[str] = OPERATIONAL,
) -> np.ndarray:
    """Outage masks per step: the union of the :func:`outage_events` active at each step.

    Takes the arguments of :func:`outage_events` and returns bool (T, rows, cols), row 0 =
    south, True = missing.
    """
    grid = grid if isinstance(grid, Grid) else grid_for(*grid)
    events = outage_events(
        grid,
        steps,
        seed,
        kinds=kinds,
        p_fail=p_fail,
        mean_duration_steps=mean_duration_steps,
        radius_km=radius_km,
        sites=sites,
    )
    masks = np.zeros((steps, *grid.shape), dtype=bool)
    for event in events:
        masks[event.start : event.stop] |= event.mask
    return masks


def failed_sites(events: Iterable[Outage], step: int) -> frozenset[str]:
    """Sites whose radar is down at ``step`` (an active ``full`` or ``exclusive`` outage):
    those a composite writer drops from the header ``MS`` list."""
    return frozenset(e.site for e in events if e.kind in _DISC_KINDS and e.active(step))


def _down_runs(
    rng: np.random.Generator, steps: int, p_down: float, mean_steps: float
) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of the down-runs of one up/down Markov chain over ``steps`` steps.

    Runs of a two-state chain are geometric: up-runs with success ``p_down``, down-runs with
    success 1/L (L lognormal of mean ``mean_steps``, at least 1). The first state is down with
    the chain's long-run share of down time.
    """
    if p_down <= 0.0:
        return
    down = rng.random() < p_down * mean_steps / (1.0 + p_down * mean_steps)
    step = 0
    while step < steps:
        if down:
            mean = rng.lognormal(np.log(mean_steps) - DURATION_LOG_SD**2 / 2, DURATION_LOG_SD)
            length = int(rng.geometric(1.0 / max(mean, 1.0)))
            yield step, min(step + length, steps)
        else:
            length = int(rng.geometric(p_down))
        step += length
        down = not down


def _outage_mask(
    kind: str,
    grid: Grid,
    site: str,
    full: np.ndarray,
    radius_km: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """bool (rows, cols) mask of one outage of ``kind`` at ``site`` (``full``: its disc)."""
    if kind == "full":
        return full
    if kind == "exclusive":
        others = coverage(grid, set(OPERATIONAL) - {site}, radius_km)
        mask = full & ~others
    else:
        inside = np.flatnonzero(full)
        lon, lat = (a.ravel()[inside] for a in grid.lonlat())
        distance, azimuth = great_circle(SITES[site].lon, SITES[site].lat, lon, lat)
        if kind == "wedge":
            width = rng.uniform(*WEDGE_WIDTH_DEG)
            begin = rng.uniform(*WEDGE_START_KM)
            centre = rng.uniform(0.0, 360.0)
            offset = np.abs((azimuth - centre + 180.0) % 360.0 - 180.0)
            hit = (offset <= width / 2) & (distance >= begin)
        else:
            hit = distance <= rng.uniform(*BLIND_RADIUS_KM)
        mask = np.zeros(grid.shape, dtype=bool)
        mask.ravel()[inside[hit]] = True
    mask.flags.writeable = False
    return mask
