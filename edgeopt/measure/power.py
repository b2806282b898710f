"""Energy readings where a device exposes them: Linux powercap/RAPL and Jetson INA3221 rails.

Imports only the standard library: the timing child carries this module to remote devices.

- RAPL (``/sys/class/powercap/intel-rapl:0/energy_uj``, x86; AMD since Linux 5.8 through the
  same interface): a package energy counter in microjoules, read before and after a timed
  loop (wrap-around handled with ``max_energy_range_uj``). Readable by root only on kernels
  patched for CVE-2020-8694; then there is no reading and energy stays an estimate.
- INA3221 (Jetson): board power rails sampled every ``SAMPLE_S`` while the model runs and
  integrated. JetPack 5/6 expose hwmon ``inN_input`` (mV) and ``currN_input`` (mA) with
  ``inN_label``; JetPack 4 exposes IIO ``in_powerN_input`` (mW) with ``rail_name_N``. The rail
  named like ``VDD_IN``/``POM_5V_IN`` (the whole module's input) is used when present,
  else the sum of all rails.

The energy per inference is the device's total energy while it runs the model back to back
(idle draw included), divided by the number of runs: what a battery pays per inference.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from typing import Any

SAMPLE_S = 0.01
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _read_str(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def find_power_source(root: str = "/") -> dict[str, Any] | None:
    """The first readable power reading under ``root`` (``/`` on a real device), as a plain
    dict a timing request can carry, or None when the device exposes none."""
    rapl = os.path.join(root, "sys/class/powercap/intel-rapl:0")
    if _read_int(os.path.join(rapl, "energy_uj")) is not None:
        return {
            "kind": "rapl",
            "counter": os.path.join(rapl, "energy_uj"),
            "max_uj": _read_int(os.path.join(rapl, "max_energy_range_uj")) or 2**32,
            "label": "RAPL package 0 (powercap)",
        }
    rails = _ina3221_rails(root)
    if rails:
        inputs = [r for r in rails if r["name"].upper() in _INPUT_RAILS]
        chosen = inputs[:1] or rails
        names = "+".join(r["name"] or "rail" for r in chosen)
        return {"kind": "ina3221", "rails": chosen, "label": f"INA3221 {names}"}
    return None


def _ina3221_rails(root: str) -> list[dict[str, Any]]:
    """Readable INA3221 channels: hwmon (mV x mA) or IIO (mW), with their rail names."""
    rails: list[dict[str, Any]] = []
    pattern = os.path.join(root, "sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*")
    for hw in sorted(glob.glob(pattern)):
        for volt in sorted(glob.glob(os.path.join(hw, "in[0-9]_input"))):
            n = os.path.basename(volt)[2]
            curr = os.path.join(hw, f"curr{n}_input")
            if _read_int(volt) is None or _read_int(curr) is None:
                continue
            name = _read_str(os.path.join(hw, f"in{n}_label"))
            rails.append({"name": name, "mv": volt, "ma": curr})
    pattern = os.path.join(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*")
    for dev in sorted(glob.glob(pattern)):
        for power in sorted(glob.glob(os.path.join(dev, "in_power[0-9]_input"))):
            n = os.path.basename(power)[len("in_power")]
            if _read_int(power) is None:
                continue
            rails.append({"name": _read_str(os.path.join(dev, f"rail_name_{n}")), "mw": power})
    return rails


def _rails_watts(rails: list[dict[str, Any]]) -> float:
    total = 0.0
    for r in rails:
        if "mw" in r:
            total += (_read_int(r["mw"]) or 0) / 1e3
        else:
            total += (_read_int(r["mv"]) or 0) * (_read_int(r["ma"]) or 0) / 1e6
    return total


def energy_per_run_mj(
    run: Callable[[], object], source: dict[str, Any], duration_s: float
) -> dict[str, Any]:
    """Run ``run`` back to back for about ``duration_s`` while reading ``source``; the energy
    per run in mJ, the runs counted, the mean power in W and the source's label."""
    if source["kind"] == "rapl":
        before = _read_int(source["counter"])
        t0 = time.perf_counter()
        n = _loop(run, duration_s)
        elapsed = time.perf_counter() - t0
        after = _read_int(source["counter"])
        if before is None or after is None:
            raise RuntimeError(f"cannot read {source['counter']}")
        delta_uj = after - before if after >= before else after + int(source["max_uj"]) - before
        joules = delta_uj / 1e6
    else:
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(_rails_watts(source["rails"]))
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.perf_counter()
        sampler.start()
        n = _loop(run, duration_s)
        elapsed = time.perf_counter() - t0
        stop.set()
        sampler.join()
        joules = (sum(samples) / max(len(samples), 1)) * elapsed
    return {
        "energy_mj": joules * 1e3 / n,
        "runs": n,
        "mean_w": joules / elapsed if elapsed > 0 else 0.0,
        "source": source["label"],
    }


def _loop(run: Callable[[], object], duration_s: float) -> int:
    n = 0
    end = time.perf_counter() + duration_s
    while n < 3 or time.perf_counter() < end:
        run()
        n += 1
    return n
