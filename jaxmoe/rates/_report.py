"""The rates table, figure and saved folder (and reading it back)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..files import read_header, write_atomic, write_header
from ._config import K_STAR, SETTINGS, RatesConfig
from ._experiment import RatesResult, fit_rate


def format_table(result: RatesResult) -> str:
    """The measured exponents beside the theory, as a markdown table.

    Example::

        import jaxmoe.rates
        result = jaxmoe.rates.rates(jaxmoe.rates.RatesConfig(settings=("softmax-exact",), ns=(100, 1000), replicates=4))
        table = jaxmoe.rates.format_table(result)
        assert len(table.splitlines()) == 2 + 1     # head, rule, one row per setting
    """
    lines = ["| setting | gate | experts | k / k* | fit | measured exponent | 95% bootstrap interval | theory | "
             "exponent over the last decade | median loss at largest n | fits used |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, f in enumerate(result.fits):
        s = SETTINGS[f.setting]
        theory = "—" if not np.isfinite(f.theory) else f"{f.theory:g}"
        last = result.loss[i, -1]
        median = np.median(last[np.isfinite(last)]) if np.any(np.isfinite(last)) else np.nan
        lines.append(f"| {f.setting} | {s.gate} | {s.expert} | {s.fitted} / {K_STAR} | {f.likelihood} | "
                     f"{f.exponent:.3f} | [{f.low:.3f}, {f.high:.3f}] | {theory}: {f.theory_text} | "
                     f"{f.tail_exponent:.3f} [{f.tail_low:.3f}, {f.tail_high:.3f}] | {median:.3g} | "
                     f"{f.points}" + (f" ({f.failed} failed)" if f.failed else "") + " |")
    return "\n".join(lines)


def plot_rates(result: RatesResult, ax=None):
    """Voronoi loss against n on log axes: every fit (dots), the median per n
    (markers) and the fitted line a n^b per setting, with n^(-1/2) for reference.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.rates
        result = jaxmoe.rates.rates(jaxmoe.rates.RatesConfig(settings=("softmax-exact",), ns=(100, 1000), replicates=4))
        fig = jaxmoe.rates.plot_rates(result)
    """
    from ..plot import colors, figure

    fig, ax = figure(ax, figsize=(7.5, 5))
    ns = result.ns.astype(float)
    grid = np.geomspace(ns.min(), ns.max(), 50)
    palette = colors(len(result.fits))
    for i, (f, color) in enumerate(zip(result.fits, palette)):
        loss = result.loss[i]
        jitter = np.exp(0.03 * (i - (len(result.fits) - 1) / 2))
        for g, n in enumerate(ns):
            ax.scatter(np.full(loss.shape[1], n * jitter), loss[g], s=5, color=color, alpha=0.3)
        medians = [np.median(row[np.isfinite(row)]) if np.any(np.isfinite(row)) else np.nan for row in loss]
        ax.plot(ns * jitter, medians, "o", color=color, ms=4)
        if np.isfinite(f.exponent):
            ax.plot(grid, f.prefactor * grid**f.exponent, color=color,
                    label=f"{f.setting}: b = {f.exponent:.2f} [{f.low:.2f}, {f.high:.2f}]")
    finite = result.loss[np.isfinite(result.loss) & (result.loss > 0)]
    if finite.size:
        anchor = np.median(finite) * (grid / np.sqrt(ns.min() * ns.max())) ** -0.5
        ax.plot(grid, anchor, color="k", ls=":", label="n^(-1/2)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size n")
    ax.set_ylabel("Voronoi loss to the truth")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def write_rates(result: RatesResult, folder: str | os.PathLike) -> list[Path]:
    """Write ``rates.md``, ``rates.csv`` (every fit), ``fit.csv`` (per setting),
    ``rates.npz`` (arrays; loads with ``allow_pickle=False``), ``config.json`` and
    ``rates.png`` into `folder` (created), each file atomically.

    **Returns:** the paths written.

    Example::

        import jaxmoe.rates
        result = jaxmoe.rates.rates(jaxmoe.rates.RatesConfig(settings=("softmax-exact",), ns=(100, 1000), replicates=4))
        paths = jaxmoe.rates.write_rates(result, "runs/rates")
        assert all(path.is_file() for path in paths)
    """
    from ..plot import write_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = result.config
    write_header(folder / "config.json", "jaxmoe.rates", 1, config=config.to_dict())
    csv = io.StringIO()
    csv.write("setting,likelihood,n,replicate,voronoi_loss,objective,grad_norm,steps\n")
    for i, setting in enumerate(config.settings):
        for g, n in enumerate(result.ns):
            for r in range(config.replicates):
                csv.write(f"{setting},{config.likelihood_of(setting)},{n},{r},{result.loss[i, g, r]:.9g},"
                          f"{result.objective[i, g, r]:.9g},{result.grad_norm[i, g, r]:.3g},{int(result.steps[i, g, r])}\n")
    write_atomic(folder / "rates.csv", csv.getvalue().encode())
    fit_csv = ("setting,likelihood,exponent,low,high,prefactor,theory,tail_exponent,tail_low,tail_high,points,failed,"
               "wall_s\n") + "".join(
        f"{f.setting},{f.likelihood},{f.exponent:.6g},{f.low:.6g},{f.high:.6g},{f.prefactor:.6g},{f.theory:g},"
        f"{f.tail_exponent:.6g},{f.tail_low:.6g},{f.tail_high:.6g},{f.points},{f.failed},{w:.3f}\n"
        for f, w in zip(result.fits, result.wall))
    write_atomic(folder / "fit.csv", fit_csv.encode())
    report = ("## Parameter-estimation rates (Voronoi loss ≈ a n^b)\n\n" + format_table(result) + "\n\n"
              f"{config.replicates} replicates per n, n in {list(map(int, result.ns))}, {config.restarts} restarts, "
              f"optimizer {config.optimizer}, noise σ = {config.noise:g}, D = {config.dim}, dtype {config.dtype}.\n")
    write_atomic(folder / "rates.md", report.encode())
    buffer = io.BytesIO()
    np.savez(buffer, settings=np.array(config.settings), likelihoods=np.array([f.likelihood for f in result.fits]),
             ns=result.ns, loss=result.loss, objective=result.objective, grad_norm=result.grad_norm,
             steps=result.steps, wall=result.wall,
             exponent=np.array([[f.exponent, f.low, f.high, f.prefactor, f.theory] for f in result.fits]))
    write_atomic(folder / "rates.npz", buffer.getvalue())
    write_png(plot_rates(result), folder / "rates.png")
    return [folder / n for n in ("rates.md", "rates.csv", "fit.csv", "rates.npz", "config.json", "rates.png")]


def load_rates(folder: str | os.PathLike) -> RatesResult:
    """Read a folder written by `write_rates` back into a `RatesResult`
    (the fits are recomputed from the stored losses, with the stored seed).

    Example::

        import jaxmoe.rates
        result = jaxmoe.rates.rates(jaxmoe.rates.RatesConfig(settings=("softmax-exact",), ns=(100, 1000), replicates=4))
        jaxmoe.rates.write_rates(result, "runs/rates")
        again = jaxmoe.rates.load_rates("runs/rates")
        assert np.array_equal(again.loss, result.loss)
    """
    folder = Path(folder)
    header = read_header(folder / "config.json", "jaxmoe.rates", 1)
    config = RatesConfig.from_dict(header["config"])
    with np.load(folder / "rates.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    fits = tuple(fit_rate(s, config, arrays["ns"], arrays["loss"][i]) for i, s in enumerate(config.settings))
    return RatesResult(config, arrays["ns"], arrays["loss"], arrays["objective"], arrays["grad_norm"],
                       arrays["steps"], fits, arrays["wall"])
