"""Shared by the benchmark scripts: timing, peak memory, the anchors, a one-line machine description, and the rows
and results blocks of the resumable studies."""

from __future__ import annotations

import copy
import json
import platform
import statistics
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ddpm_signrelu.metrics.domain import fingerprint, fit_domain_classifier, load_classifier
from ddpm_signrelu.metrics.fid import FeatureDistances
from ddpm_signrelu.runs import as_list

# Dense bf16 tensor-core peaks (TFLOP/s) for model FLOP utilisation; other devices print no MFU.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def relocate_run(config: dict, run_dir: str | Path, wandb: bool = True, csv: bool = False) -> dict:
    """A copy of a train config (as loaded from YAML) whose run folder is ``run_dir``; ``wandb=False`` drops its W&B
    logger, ``csv=True`` adds a CSV log (``run_dir/metrics.csv``, continued when the run is resumed). For scripted
    sweeps, benchmarks and tests."""
    config = copy.deepcopy(config)
    trainer = config["trainer"]
    trainer["default_root_dir"] = str(run_dir)
    loggers = [lg for lg in as_list(trainer.get("logger")) if wandb or not lg["class_path"].endswith("WandbLogger")]
    if csv:
        loggers.append({"class_path": "ddpm_signrelu.lit.ResumableCSVLogger", "init_args": {"save_dir": str(run_dir)}})
    trainer["logger"] = loggers
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable, device: torch.device) -> float:
    """Wall time of one call, the device drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_medians(fns: dict[str, Callable], device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Median seconds per call of each function, timed in turns (a, b, c, a, b, c, ...) so that drift in the
    machine's speed falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an operator creates until the storage is freed; keeps the peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.tracked: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self.tracked.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self.tracked:
                    self.tracked.add(key)
                    self.live += nbytes
                    weakref.finalize(storage, self._freed, key, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def peak_bytes(fn: Callable, device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs, above what was allocated before it (CUDA: the caching allocator's
    own count; CPU: every tensor storage the operators create, forward and backward, until it is freed)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _LiveBytes() as counter:
        fn()
    return counter.peak


# Operator groups of the step profile: the optimizer's update, then the first group whose key is a substring of
# the aten operator's name.
OP_GROUPS = (("convolution", ("conv",)), ("matmul, attention", ("mm", "matmul", "linear", "attention", "einsum")),
             ("normalisation", ("norm",)))
OPTIMIZER_GROUP, OTHER_GROUP = "optimizer", "elementwise, other"


def op_group(event) -> str:
    """The group of a ``torch.profiler`` operator event (ops under ``Optimizer.step`` are the optimizer's)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return OPTIMIZER_GROUP
        parent = parent.cpu_parent
    return next((group for group, keys in OP_GROUPS if any(k in event.name for k in keys)), OTHER_GROUP)


def op_profile(fn: Callable, device: torch.device) -> dict[str, float]:
    """Seconds of one call of ``fn`` by operator group: the aten operators' self time on the device that runs
    them (CUDA kernels on a GPU, CPU time otherwise), from ``torch.profiler``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync(device)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        sync(device)
    groups = dict.fromkeys([g for g, _ in OP_GROUPS] + [OPTIMIZER_GROUP, OTHER_GROUP], 0.0)
    for event in prof.events():
        if event.name.startswith("aten::"):
            micros = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
            groups[op_group(event)] += micros / 1e6
    return groups


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def mfu(flop: float, secs: float, device: torch.device) -> str:
    """Achieved TFLOP/s, and the share of the device's dense bf16 peak where that peak is known."""
    achieved = flop / secs / 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak:
            return f"{achieved:7.2f} TFLOP/s  MFU {100 * achieved / peak:5.1f} %"
    return f"{achieved:7.3f} TFLOP/s"


def machine(device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return (f"{where}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def anchors_missing() -> list[str]:
    """The anchor packages that are not installed (``pip install -r benchmarks/requirements.txt``)."""
    missing = []
    for module, package in (("diffusers", "diffusers"), ("denoising_diffusion_pytorch", "denoising-diffusion-pytorch")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


END_OF_RESULTS = "<!-- end of results -->"


def read_rows(path: Path) -> list[dict]:
    """The JSON rows a resumable study has appended to ``path`` (none where it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_block(path: Path, marker: str, text: str) -> None:
    """Replace the text between ``marker`` and the end-of-results marker after it in ``path`` (appended, with the
    file, where missing)."""
    old = path.read_text() if path.is_file() else ""
    head, found, rest = old.partition(marker)
    tail = rest.partition(END_OF_RESULTS)[2] if found else "\n"
    path.write_text(f"{head}{marker}\n{text}\n{END_OF_RESULTS}{tail}")


def run_or_report(parser, argv, run: Callable, report: Callable) -> None:
    """Parse ``argv`` with ``parser`` plus ``--report``, then run the study (which reports at its end) or only
    report from the rows so far."""
    parser.add_argument("--report", action="store_true", help="only write the report from the rows so far")
    args = parser.parse_args(argv)
    (report if args.report else run)(args)


def domain_distances(dm, reference: int) -> FeatureDistances:
    """FID machinery in the domain features of the set-up data module ``dm`` (its classifier fitted first where
    missing), holding ``reference`` seeded training images as the real side, ready for generated sets."""
    if not Path(dm.classifier_path).is_file():
        fit_domain_classifier(dm, dm.classifier_path)
    distances = FeatureDistances(load_classifier(dm.classifier_path, fingerprint(dm.train_data)), dm.data_shape)
    rows = torch.randperm(len(dm.train_data), generator=torch.Generator().manual_seed(0))[:reference]
    for chunk in dm.train_data[rows].split(1000):
        distances.update(chunk, real=True)
    return distances
