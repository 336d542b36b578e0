"""The GPU check's bookkeeping, free of torch: the time budget it runs under, the decisions it
derives from its measurements, and its markdown summary (benchmarks/gpu_check.py)."""

from __future__ import annotations

import signal
import time
import traceback

# A variant counts only if every compared tensor is within this of the reference, measured as
# max |x - ref| / max |ref|: four units of bf16 rounding (2^-8 each) at the tensor's scale.
TOLERANCE = 2**-6
# Faster by less than this is within run-to-run noise: no reason to change the default.
MIN_SPEEDUP = 1.05
# torch.compile is worth its compile time and its failure modes only above this speedup.
MIN_COMPILE_SPEEDUP = 1.10
# Checkpointing goes off only where the unsharded step without it peaks under this share of
# the GPU: the sharded run adds its optimizer state, gathers and allocator slack.
MEMORY_SHARE = 0.8
TRAINED_REGIMES = ("trained_master", "trained_bf16")


class PartTimeout(Exception):
    """A part ran past its budget."""


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def timed_out(err: BaseException | None) -> bool:
    """Whether the alarm caused ``err``: torch.compile re-raises what interrupts it wrapped."""
    while err is not None:
        if isinstance(err, PartTimeout):
            return True
        err = err.__cause__ or err.__context__
    return False


class Budget:
    """A total time budget split into parts. A part starts only if its own budget fits in
    what is left, runs under an alarm at that budget, and what it had measured before the
    alarm stays. What did not run is listed under ``skipped``, what raised under ``failed``."""

    def __init__(self, total_s: float, report: dict, cleanup=lambda: None):
        self.total_s = total_s
        self.start = time.monotonic()
        self.report = report
        self.cleanup = cleanup
        self._part_end: float | None = None
        report.setdefault("skipped", [])
        report.setdefault("failed", [])

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)

    def part_left(self) -> float:
        return self._part_end - time.monotonic() if self._part_end else self.left()

    def skip(self, part: str, reason: str) -> None:
        self.report["skipped"].append(dict(part=part, reason=reason))
        print(f"skipped {part}: {reason}", flush=True)

    def run(self, part: str, seconds: float, fn, *args):
        """``fn(*args)``, or None when it did not fit, ran out of time or raised."""
        if self.left() < seconds:
            self.skip(part, f"needs up to {seconds:.0f} s, {max(self.left(), 0):.0f} s of "
                      f"the {self.total_s:.0f} s budget left")
            return None

        def alarm(signum, frame):
            raise PartTimeout

        previous = signal.signal(signal.SIGALRM, alarm)
        self._part_end = time.monotonic() + seconds
        signal.setitimer(signal.ITIMER_REAL, seconds)
        started = time.monotonic()
        try:
            return fn(*args)
        except Exception as err:  # one part failing must not cost the others their answers
            if timed_out(err):
                self.skip(part, f"stopped at its {seconds:.0f} s budget; what it measured "
                          "before is kept")
            else:
                traceback.print_exc()
                self.report["failed"].append(dict(part=part, error=one_line(err)))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self._part_end = None
            self.report.setdefault("part_seconds", {})[part] = round(
                time.monotonic() - started, 1)
            self.cleanup()
        return None


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def decide(report: dict) -> dict:
    """What the measurements decide, each with its reason. A variant that failed its check
    against the reference, ran out of memory or was not measured is never chosen."""
    out = {}
    sdpa = _ok(report.get("sdpa", []))
    if sdpa:
        best = min(sdpa, key=lambda r: r["seconds_fwd_bwd"])
        default = next((r for r in sdpa if r["backend"] == report.get("sdpa_kernel")), None)
        if default is None:
            out["sdpa_backend"] = dict(backend=best["backend"], pin=True, reason=(
                f"the dispatcher's pick ({report.get('sdpa_kernel')}) was not measured ok; "
                f"{best['backend']} is the fastest that passed"))
        else:
            speedup = default["seconds_fwd_bwd"] / best["seconds_fwd_bwd"]
            pin = best is not default and speedup >= MIN_SPEEDUP
            out["sdpa_backend"] = dict(
                backend=best["backend"] if pin else default["backend"], pin=pin,
                reason=f"{best['backend']} is {speedup:.2f}x the dispatcher's "
                       f"{default['backend']}" + ("" if pin else
                                                  f" (< {MIN_SPEEDUP}x: keep the default)"))
    else:
        out["sdpa_backend"] = dict(backend=None, pin=False,
                                   reason="no backend measured ok: keep the default")

    out["compile"] = {}
    for row in report.get("compile", []):
        if row.get("status") != "ok":
            use, reason = False, f"not usable: {row.get('status')}"
        else:
            use = row["speedup"] >= MIN_COMPILE_SPEEDUP
            reason = (f"{row['speedup']:.2f}x over eager after {row['compile_seconds']:.0f} s "
                      f"of compiling" + ("" if use else f" (< {MIN_COMPILE_SPEEDUP}x)"))
        out["compile"][row["regime"]] = dict(use=use, reason=reason)

    out["activation_checkpointing"] = {}
    trunk = {r["regime"]: r for r in report.get("trunk", [])}
    off = {r["regime"]: r for r in report.get("checkpointing", [])}
    memory = report.get("device_memory_gib")
    for regime in TRAINED_REGIMES:
        with_cp, without = trunk.get(regime), off.get(regime)
        if with_cp is None:
            continue
        if without is None or without.get("status") != "ok":
            status = without.get("status") if without else "not measured"
            out["activation_checkpointing"][regime] = dict(
                use=True, reason=f"without it: {status}")
            continue
        speedup = with_cp["seconds_per_iter"] / without["seconds_per_iter"]
        peak = without.get("peak_memory_gib")
        fits = memory is not None and peak is not None and peak <= MEMORY_SHARE * memory
        use = not (fits and speedup >= MIN_SPEEDUP)
        where = (f"peaks at {peak} GiB of {memory} GiB" if None not in (peak, memory)
                 else "no GPU memory figure")
        out["activation_checkpointing"][regime] = dict(
            use=use, reason=f"without it {speedup:.2f}x as fast, {where}"
            + (f" (needs <= {MEMORY_SHARE:.0%} of the GPU and >= {MIN_SPEEDUP}x)" if use
               else ""))

    amp = next((c for c in report.get("checks", []) if c.get("check") == "adapter_amp_step"),
               None)
    if amp is None:
        out["adapter_amp_fp16"] = "not run"
    elif not amp.get("amp"):
        out["adapter_amp_fp16"] = f"not run: the step ran with {amp.get('optim_wrapper')}"
    else:
        out["adapter_amp_fp16"] = "works" if amp.get("status") == "ok" else (
            f"fails: {amp.get('status')}")
    return out


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("–" if r.get(c) is None else str(r.get(c)) for c in columns)
              + " |" for r in rows]
    return lines


def markdown(report: dict) -> str:
    """A short summary of the JSON: what ran where, the tables, and the decisions."""
    lines = [f"# GPU check: {report['device']}",
             "",
             f"torch {report['torch']}, {'tiny trunk (CPU smoke run)' if report['tiny'] else 'full size'}, "
             f"{report.get('elapsed_s')} s of a {report.get('budget_s')} s budget; variants are "
             f"checked against the eager reference at max |x - ref| / max |ref| <= "
             f"{report['tolerance']['max_rel_error']:.4g} before they are timed.",
             "", "## Trunk step, batch 2", ""]
    lines += _table(report.get("trunk", []), ["regime", "seconds_per_iter", "images_per_s",
                                              "peak_memory_gib", "tflops_per_s"])
    lines += ["", "## Without activation checkpointing", ""]
    lines += _table(report.get("checkpointing", []), ["regime", "status", "max_rel_error",
                                                      "seconds_per_iter", "peak_memory_gib"])
    lines += ["", f"## SDPA backends (the dispatcher picks {report.get('sdpa_kernel')})", ""]
    lines += _table(report.get("sdpa", []), ["backend", "status", "max_rel_error",
                                             "seconds_fwd_bwd", "peak_memory_gib"])
    lines += ["", "## torch.compile of one block", ""]
    lines += _table(report.get("compile", []), ["regime", "backend", "status", "max_rel_error",
                                                "compile_seconds", "eager_seconds",
                                                "compiled_seconds", "speedup"])
    lines += ["", "## Other checks", ""]
    for check in report.get("checks", []):
        lines.append(f"- `{check['check']}`: " + ", ".join(
            f"{k} {v}" for k, v in check.items() if k != "check"))
    lines += ["", "## Decisions", ""]
    for key, value in report.get("decisions", {}).items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            for regime, choice in value.items():
                lines.append(f"- {key} / {regime}: use {choice['use']} ({choice['reason']})")
        elif isinstance(value, dict):
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            lines.append(f"- {key}: {value}")
    for title, key, field in (("Skipped", "skipped", "reason"), ("Failed", "failed", "error")):
        if report.get(key):
            lines += ["", f"## {title}", ""]
            lines += [f"- {item['part']}: {item[field]}" for item in report[key]]
    return "\n".join(lines) + "\n"
