"""``edgeopt profiles``: list, show, validate and calibrate hardware profiles."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from edgeopt.profiles import (
    ComputeUnit,
    HardwareProfile,
    list_profiles,
    load_profile,
    validate_profile_file,
)


@click.group("profiles")
def profiles() -> None:
    """Hardware target profiles: what each target supports and its cost-model numbers.

    The host profile (alias 'cpu') is measured on this machine, a profile with a [runner]
    on the device it names; every other profile gives estimates, labelled
    'estimated (profile NAME)'.
    """


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def _src(p: HardwareProfile, path: str) -> str:
    s = p.provenance.get(path)
    if s is None or s.kind == "unstated":
        return ""
    return f"  [{s.kind}{', ' + s.src if s.src else ''}]"


@profiles.command("list")
def list_cmd() -> None:
    """List the shipped profiles and their aliases."""
    rows = list_profiles()
    width = max(len(p.name) for p in rows)
    for p in rows:
        how = p.label if p.measured else "estimated"
        aliases = ", ".join(p.aliases) or "-"
        click.echo(f"{p.name:<{width}}  {p.kind.value:<6}  {how:<20}  aliases: {aliases}")
        click.echo(f"{'':<{width}}  {p.description}")


@profiles.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Show one profile (an alias, a name, or a path to a .toml file)."""
    p = load_profile(name)
    click.echo(f"{p.name}  ({p.kind.value}; numbers are {p.label})")
    click.echo(f"  {p.description}")
    click.echo(f"  file: {p.source_path}")
    if p.aliases:
        click.echo(f"  aliases: {', '.join(p.aliases)}")
    click.echo(f"  threads: {p.threads}{_src(p, 'profile.threads')}")
    if p.runner is not None:
        r = p.runner
        click.echo(f"  runner: {r.device}, providers {', '.join(r.providers)}")
    q = p.quantization
    click.echo(
        f"  quantization: {', '.join(q.modes)}; activations {q.activation_type}"
        f"{' symmetric' if q.activation_symmetric else ''}, weights "
        f"{q.weight_type}, per-channel {'yes' if q.per_channel else 'no'}"
        f"{', int8 only' if q.int8_only else ''}"
    )
    click.echo(
        f"  pruning: channel multiple {p.pruning.channel_multiple}"
        f"{_src(p, 'pruning.channel_multiple')}"
    )
    assert p.memory is not None and p.runtime is not None
    m = p.memory
    click.echo(
        f"  memory: dram {_fmt_bytes(m.dram_bytes)}, sram {_fmt_bytes(m.sram_bytes)}, "
        f"flash {_fmt_bytes(m.flash_bytes)}; weights in {m.weights_in}, "
        f"activations in {m.activations_in}"
    )
    rt = p.runtime
    hint = f" (precision {rt.precision_hint})" if rt.name == "openvino" else ""
    if rt.io_type is not None:
        hint = f" (full-integer, {rt.io_type} inputs and outputs)"
    click.echo(
        f"  runtime: {rt.name.value}{hint}, partition {rt.partition_policy}, invoke overhead "
        f"{p.runtime.invoke_overhead_us:g} us, fusions {', '.join(sorted(p.runtime.fusions))}"
    )
    for u in p.units:
        _show_unit(p, u)
    if p.calibration is not None:
        c = p.calibration
        click.echo(
            f"  calibration: {c.date}, {c.method}; kendall tau {c.kendall_tau}, median relative "
            f"error {c.median_rel_error}, {c.n_models} models"
        )
    _show_provenance(p)
    if p.sources:
        click.echo("  sources:")
        for k, v in p.sources.items():
            click.echo(f"    {k}: {v}")


def _value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, int | float) else str(v)


def _show_provenance(p: HardwareProfile) -> None:
    """How many values cite a document, then every assumption with its reason and every
    value without a source."""
    kinds = Counter(s.kind for s in p.provenance.values() if s.cited)
    cited = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    missing = f", {len(p.without_source)} without a source" if p.without_source else ""
    click.echo(
        f"  values: {sum(kinds.values())} cite a document ({cited or 'none'}), "
        f"{len(p.assumptions)} are assumptions{missing}"
    )
    if p.assumptions:
        click.echo(f"  {len(p.assumptions)} assumptions (engineering estimates no document gives):")
        for key in p.assumptions:
            s = p.provenance[key]
            click.echo(
                f"    {key} = {_value(s.value)}  assumption: {s.note or '(no reason given)'}"
            )
    if p.without_source:
        click.echo(
            f"  without a source ({len(p.without_source)} values; give each src = a key of "
            '[sources], or kind = "assumption" with a note saying why):'
        )
        for key in p.without_source:
            s = p.provenance[key]
            kind = "" if s.kind == "unstated" else f"  [{s.kind}, no src]"
            click.echo(f"    {key} = {_value(s.value)}{kind}")


def _show_unit(p: HardwareProfile, u: ComputeUnit) -> None:
    base = f"units.{u.id}"
    click.echo(
        f"  unit {u.id} ({u.kind})" + (f", falls back to {u.fallback}" if u.fallback else "")
    )
    for d, g in u.peak_gops.items():
        click.echo(f"    peak {d}: {g:g} GOP/s{_src(p, f'{base}.peak_gops_{d}')}")
    click.echo(f"    bandwidth: {u.bandwidth_gbs:g} GB/s{_src(p, f'{base}.bandwidth_gbs')}")
    click.echo(
        f"    kernel overhead: {u.kernel_overhead_us:g} us{_src(p, f'{base}.kernel_overhead_us')}"
    )
    eff = ", ".join(f"{k} {v:g}" for k, v in u.efficiency["default"].items())
    click.echo(f"    efficiency: {eff}")
    for d, t in u.efficiency.items():
        if d != "default":
            click.echo(f"    efficiency {d}: " + ", ".join(f"{k} {v:g}" for k, v in t.items()))
    ops = "all" if u.supported_ops is None else ", ".join(sorted(u.supported_ops))
    click.echo(f"    supported ops: {ops}")
    click.echo(
        f"    power: idle {u.power.idle_w:g} W{_src(p, f'{base}.power.idle_w')}, "
        f"active {u.power.active_w:g} W{_src(p, f'{base}.power.active_w')}"
    )


@profiles.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate_cmd(file: Path) -> None:
    """Check a profile file; exit 2 with the offending key path when it is invalid."""
    p = validate_profile_file(file)
    click.echo(
        f"{file}: OK ({p.name}, {p.kind.value}, {len(p.units)} unit(s), "
        f"{len(p.assumptions)} assumption(s), {len(p.without_source)} without a source)"
    )


@profiles.command("calibrate")
@click.option(
    "--target",
    help="A profile with a [runner] (e.g. board.toml): calibrate it on its device. "
    "Default: this host's profile.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the calibrated profile, e.g. host.calibrated.toml (required, "
    "unless --write-shipped); use it afterwards with --target FILE.",
)
@click.option("--force", is_flag=True, help="Overwrite --out when it exists.")
@click.option(
    "--write-shipped",
    is_flag=True,
    help="Overwrite the shipped host profile (profiles/host-cpu.toml) instead.",
)
@click.option("--rounds", default=7, show_default=True, help="Interleaved timing rounds.")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Afterwards compare estimates with real ORT latency on a few example models.",
)
def calibrate_cmd(
    target: str | None,
    out: Path | None,
    force: bool,
    write_shipped: bool,
    rounds: int,
    check: bool,
) -> None:
    """Fit a measured profile's efficiencies and per-kernel overhead with ORT micro-benchmarks.

    The graphs are built here and timed on this host, or, with --target, on the device the
    profile's [runner] names (over SSH); the fitted numbers are marked measured.
    """
    from edgeopt.errors import ConfigError
    from edgeopt.measure.calibrate import calibrate_host, example_models
    from edgeopt.zoo import SMALL_BUILDERS

    device = load_profile(target) if target else None
    if device is not None and device.runner is None:
        raise ConfigError(
            f"profile '{device.name}' has no [runner]: nothing to measure it on",
            hint='add a [runner] table (kind = "ssh", host = ...), or omit --target to '
            "calibrate this host",
        )
    if device is not None and write_shipped:
        raise ConfigError("--write-shipped is for this host's profile; use --out with --target")
    if write_shipped and out is not None:
        raise ConfigError("give --out or --write-shipped, not both")
    base = device or load_profile("cpu")
    dest = base.source_path if write_shipped else _out_path(out, force, device)
    assert dest is not None
    # The file records how it was made, without this machine's folders.
    command = "edgeopt profiles calibrate " + (
        "--write-shipped" if write_shipped else f"--out {dest.name}"
    )
    if target:
        command += f" --target {Path(target).name}"
    where = device.runner.device if device and device.runner else "this host"
    click.echo(f"Running micro-benchmarks on {where} (ONNX Runtime, measured) ...")
    examples = example_models(SMALL_BUILDERS) if check else ()
    result = calibrate_host(
        dest, rounds=rounds, examples=examples, command=command, log=click.echo, target=device
    )
    click.echo(f"Wrote calibrated profile to {dest} (use it with --target {dest})")
    for line in result.summary():
        click.echo(f"  {line}")
    if result.median_rel_error is not None:
        click.echo(
            f"  (latency measured on {where} vs estimated by the cost model with the new profile)"
        )


def _out_path(out: Path | None, force: bool, device: HardwareProfile | None) -> Path:
    """Where ``profiles calibrate`` writes: ``--out``, which must be given and may replace an
    existing file only with ``--force`` (checked before any timing)."""
    from edgeopt.errors import ConfigError

    name = f"{device.name if device else 'host-cpu'}.calibrated.toml"
    if out is None:
        raise ConfigError(
            "profiles calibrate: say where to write the calibrated profile",
            hint=f"add --out {name} (or --write-shipped to replace the shipped host profile)",
        )
    if out.exists() and not force:
        raise ConfigError(
            f"{out} already exists", hint="pass --force to overwrite it, or choose another --out"
        )
    return out
