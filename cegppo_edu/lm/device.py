"""Is there a usable CUDA device, and if not, why: what a run that asks for ``device="cuda"`` checks before it loads
anything, and what ``cegppo preflight`` prints.

The usual way a rented GPU fails silently: the NVIDIA driver is older than the CUDA build of torch needs. vLLM
0.33.0 pins torch 2.14.0, whose default wheel is built for CUDA 13, and a CUDA 13 build needs a driver of the R580
branch or newer; on an older driver ``torch.cuda.is_available()`` is simply False. A run with ``device="auto"``
would then load a 1.5B model's fp32 weights on the CPU and fail much later with an unrelated-looking error, so the
GPU presets ask for ``device="cuda"`` and ``require_cuda`` stops at once, naming the torch build, the driver and
what to do.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

# The oldest driver branch each CUDA major version of a torch build runs on (NVIDIA's CUDA compatibility notes:
# CUDA 13.x needs R580+; CUDA 12.x runs on R525+ through minor-version compatibility).
MIN_DRIVER_FOR_CUDA_MAJOR = {13: 580, 12: 525}


@dataclasses.dataclass
class CudaStatus:
    """What torch and the NVIDIA driver say about CUDA on this machine."""

    torch_version: str
    torch_cuda: str | None  # the CUDA version torch was built for; None for a CPU-only build
    usable: bool  # torch.cuda.is_available()
    devices: list[str]  # names of the visible devices
    driver: str | None  # the NVIDIA driver version (nvidia-smi), None when there is no nvidia-smi or no answer
    torch_error: str  # why torch cannot initialise CUDA ("" when it can)

    @property
    def needed_driver(self) -> int | None:
        """The oldest driver branch this torch build runs on, when known."""
        if not self.torch_cuda:
            return None
        return MIN_DRIVER_FOR_CUDA_MAJOR.get(int(self.torch_cuda.split(".")[0]))

    def problem(self) -> str:
        """"" when CUDA is usable; otherwise what is wrong and what to do, in a few sentences."""
        if self.usable:
            return ""
        if self.torch_cuda is None:
            return (f"torch {self.torch_version} is a CPU-only build. On a GPU machine install the GPU extra, which "
                    f"brings vLLM's CUDA build of torch: pip install -e '.[gpu]'")
        text = f"torch {self.torch_version} is built for CUDA {self.torch_cuda} but sees no usable CUDA device"
        if self.driver is None:
            text += "; nvidia-smi found no NVIDIA driver (is this a GPU machine, and is the GPU passed through?)"
        else:
            text += f"; the NVIDIA driver is {self.driver}"
            needed = self.needed_driver
            if needed is not None and _major(self.driver) < needed:
                text += (f", older than the R{needed} branch that a CUDA {self.torch_cuda} build needs. Update the "
                         f"driver to R{needed} or newer, or rent a machine whose image has it (nvidia-smi prints "
                         f"'CUDA Version: {self.torch_cuda.split('.')[0]}.x' or higher there)")
        if self.torch_error:
            text += f". torch says: {self.torch_error}"
        return text


def _major(driver: str) -> int:
    try:
        return int(driver.split(".")[0])
    except ValueError:
        return 0


def nvidia_driver_version(timeout_s: float = 10.0) -> str | None:
    """The driver version nvidia-smi reports, or None (no nvidia-smi, no driver, no answer in time)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def cuda_status() -> CudaStatus:
    """Ask torch (and nvidia-smi) whether CUDA works here; never raises."""
    import torch

    usable = torch.cuda.is_available()
    error = ""
    if not usable:
        try:
            torch.cuda.init()  # raises with torch's own reason: no driver, driver too old, CPU-only build
        except Exception as err:  # noqa: BLE001 - any reason is reported, none is fatal here
            error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if usable else []
    return CudaStatus(torch.__version__, torch.version.cuda, usable, devices, nvidia_driver_version(), error)


def require_cuda(device: str) -> None:
    """Raise ``ValueError`` naming the problem when ``device`` asks for CUDA and CUDA is not usable."""
    if not device.startswith("cuda"):
        return
    status = cuda_status()
    if not status.usable:
        raise ValueError(f"device={device!r}, but {status.problem()}. Check a machine with: cegppo preflight")
    index = int(device.partition(":")[2] or 0)
    if index >= len(status.devices):
        raise ValueError(f"device={device!r} is outside the allowed range: this machine has {len(status.devices)} "
                         f"CUDA device(s), cuda:0 to cuda:{len(status.devices) - 1}")


__all__ = ["CudaStatus", "MIN_DRIVER_FOR_CUDA_MAJOR", "cuda_status", "nvidia_driver_version", "require_cuda"]
