"""`trd-edge doctor`: a first-boot check of everything a station needs, each with a fix.

Checks (each ``ok`` / ``warn`` / ``fail`` with a detail line and, unless ok, a FIX line):

- Python and package versions (numpy, OpenCV, pydantic, paho-mqtt, onnxruntime, ...);
- configuration loads (file + environment + flags);
- camera: found and streaming (opens the configured source and reads a few frames under a
  timeout); for RealSense also pyrealsense2, libusb, the device count and the USB link type;
- GPU and TensorRT: nvidia-smi / Jetson L4T release, ``tensorrt`` and ``cuda-python`` versions,
  onnxruntime execution providers (absence is a warning: the CPU path still works);
- bundle: loads and every file hash verifies;
- engine: a TensorRT engine for *this* GPU + TensorRT version is present, or can be built;
- broker: reachable with the configured credentials; a refused port, an unknown host, a TLS
  failure and an authentication failure are reported distinctly; with MQTT 5 also whether the
  ACL lets this station write under its topic prefix;
- disk space and write access for the outbox, and how many verdicts wait in it.

Exit code 0 when nothing failed (warnings allowed), 1 otherwise. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib
import json
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]

# Outbox disk budget: a verdict with a few defect boxes is ~1-2 KB of JSON in SQLite.
BYTES_PER_VERDICT = 2048
DEFAULT_MIN_FREE_MB = 500.0


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


# --------------------------------------------------------------------------- helpers


def _version(module: str) -> str | None:
    """``module.__version__`` (or the distribution version), None when not importable."""
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - broken installs raise anything (ImportError, OSError...)
        return None
    ver = getattr(mod, "__version__", None)
    if ver is None:
        from importlib import metadata

        for dist in (module, module.replace("_", "-")):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return "unknown"
    return str(ver)


def _dist_version(*names: str) -> str | None:
    """Installed version of the first distribution found (for namespace packages like cuda)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _run_with_timeout(fn: Callable[[], Any], timeout_s: float) -> tuple[bool, Any]:
    """Run `fn` in a daemon thread: (finished, result or exception)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="doctor-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None
    return True, box.get("error", box.get("result"))


# --------------------------------------------------------------------------- python


RUNTIME_PACKAGES = ("numpy", "cv2", "pydantic", "paho.mqtt", "onnxruntime", "yaml")


def check_python() -> list[Check]:
    """Python version and the runtime packages' versions."""
    checks: list[Check] = []
    py = platform.python_version()
    # pyproject requires Python >= 3.10, so an installed trd-edge always has it.
    checks.append(Check("python", "ok", f"Python {py} on {platform.machine()}"))
    found, missing = [], []
    for name in RUNTIME_PACKAGES:
        ver = _version(name)
        (found if ver else missing).append(f"{name} {ver}" if ver else name)
    trd = _version("edge") or "?"
    try:
        from edge.comms.verdict import software_version

        trd = software_version()
    except Exception:  # noqa: BLE001 - version lookup must not break the doctor
        pass
    detail = f"trd-edge {trd}; " + ", ".join(found)
    if missing:
        checks.append(
            Check("packages", "fail", detail + f"; missing: {', '.join(missing)}",
                  "reinstall the runtime: pip install 'trd-edge[realsense,trt]'")
        )  # fmt: skip
    else:
        checks.append(Check("packages", "ok", detail))
    if "torch" in sys.modules:
        checks.append(
            Check("torch", "warn", "torch was imported by the runtime",
                  "report this: edge/ must not import torch")
        )  # fmt: skip
    return checks


# --------------------------------------------------------------------------- camera


def check_realsense_runtime(need_device: bool) -> list[Check]:
    """pyrealsense2, libusb and (for a live camera) the connected devices and their USB link."""
    checks: list[Check] = []
    libusb = ctypes.util.find_library("usb-1.0")
    if libusb is None:
        checks.append(
            Check("libusb", "fail", "libusb-1.0 not found (pyrealsense2 needs it at import)",
                  "sudo apt-get install libusb-1.0-0")
        )  # fmt: skip
    else:
        checks.append(Check("libusb", "ok", libusb))
    try:
        import pyrealsense2 as rs  # type: ignore[import-not-found]
    except ImportError as exc:
        checks.append(
            Check("pyrealsense2", "fail", f"cannot import pyrealsense2: {exc}",
                  "pip install 'trd-edge[realsense]' (and libusb-1.0-0)")
        )  # fmt: skip
        return checks
    checks.append(Check("pyrealsense2", "ok", f"pyrealsense2 {_version('pyrealsense2')}"))
    if not need_device:
        return checks
    try:
        devices = list(rs.context().query_devices())
    except RuntimeError as exc:
        checks.append(
            Check("realsense devices", "fail", f"cannot list cameras: {exc}",
                  "check the udev rules (deploy/udev) and that this user is in group plugdev")
        )  # fmt: skip
        return checks
    if not devices:
        checks.append(
            Check("realsense devices", "fail", "no RealSense camera found",
                  "plug the camera into a USB 3 port (`lsusb | grep 8086`), install "
                  "deploy/udev/99-trd-edge-realsense.rules, add the user to plugdev; in a "
                  "container pass /dev/bus/usb and --device-cgroup-rule 'c 189:* rmw'")
        )  # fmt: skip
        return checks

    def info(dev: Any, key: str) -> str:
        field = getattr(rs.camera_info, key)
        return dev.get_info(field) if dev.supports(field) else "?"

    names = []
    slow = []
    for dev in devices:
        usb = info(dev, "usb_type_descriptor")
        names.append(
            f"{info(dev, 'name')} serial {info(dev, 'serial_number')} "
            f"fw {info(dev, 'firmware_version')} USB {usb}"
        )
        if usb.startswith("2"):
            slow.append(info(dev, "serial_number"))
    checks.append(Check("realsense devices", "ok", f"{len(devices)} found: " + "; ".join(names)))
    if slow:
        checks.append(
            Check("usb link", "warn", f"camera(s) {', '.join(slow)} on a USB 2 link: "
                  "reduced resolution/frame rate and dropped frames",
                  "use a USB 3 port and a short USB 3 cable (blue port / SS logo)")
        )  # fmt: skip
    return checks


def check_camera(
    spec: str, options: Any = None, frames: int = 3, timeout_s: float = 10.0
) -> list[Check]:
    """Open the configured source and read `frames` frames within `timeout_s` seconds."""
    from edge.sources import SourceError, open_source, parse_spec

    try:
        kind, arg, _ = parse_spec(spec)
    except SourceError as exc:
        return [Check("camera", "fail", str(exc), "fix camera.source / --camera")]
    checks: list[Check] = []
    if kind in ("file", "folder"):
        path = Path(arg).expanduser()
        exists = path.is_file() if kind == "file" else path.is_dir()
        if not exists:
            what = "recording" if kind == "file" else "folder"
            return [
                Check("camera", "fail", f"{what} not found: {path}",
                      f"fix camera.source (or --camera {kind}:PATH) to point at an existing {what}")
            ]  # fmt: skip
    if kind in ("realsense", "file"):
        checks += check_realsense_runtime(need_device=kind == "realsense")
        if any(c.status == "fail" for c in checks):
            return checks

    def grab() -> list[tuple[int, int]]:
        shapes = []
        source = open_source(spec, options)
        # the camera's own frames: an averaging wrapper delivers one per stop of a part
        camera = getattr(source, "inner", source)
        with source:
            for _ in range(frames):
                frame = camera.read(timeout_s=timeout_s)
                if frame is None:
                    break
                shapes.append(tuple(frame.rgb.shape[:2]))
        return shapes

    started = time.monotonic()
    finished, result = _run_with_timeout(grab, timeout_s + 5.0)
    took = time.monotonic() - started
    if not finished:
        checks.append(
            Check("camera", "fail", f"{spec}: no frames within {timeout_s + 5:.0f}s",
                  "check the cable and that no other process holds the camera "
                  "(stop trd-edge.service while running the doctor)")
        )  # fmt: skip
    elif isinstance(result, BaseException):
        checks.append(
            Check("camera", "fail", f"{spec}: {type(result).__name__}: {result}",
                  "fix what the message names (camera.source, the device, the recording)")
        )  # fmt: skip
    elif len(result) < frames:
        checks.append(
            Check("camera", "fail", f"{spec}: ended after {len(result)} of {frames} frames",
                  "use a longer recording / a folder with more samples")
        )  # fmt: skip
    else:
        h, w = result[0]
        checks.append(Check("camera", "ok", f"{spec}: {len(result)} frames {w}x{h} in {took:.1f}s"))
    return checks


# --------------------------------------------------------------------------- GPU / TensorRT


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or None


def _jetson_release() -> str | None:
    path = Path("/etc/nv_tegra_release")
    if not path.is_file():
        return None
    first = path.read_text(errors="replace").splitlines()[:1]
    return first[0].lstrip("# ").strip() if first else "Jetson"


def gpu_state() -> dict[str, Any]:
    """What is known about the GPU stack.

    Keys: smi, jetson, trt (version), cuda (cuda-python version), driver_cuda (CUDA version
    the driver supports, 0 = no driver), gpu (GpuInfo) or gpu_error, and trt_problem: why
    ``--backend auto`` would fall back to onnxruntime, the same text it logs (None = it would not).
    """
    state: dict[str, Any] = {
        "smi": _nvidia_smi(),
        "jetson": _jetson_release(),
        "trt": _version("tensorrt"),
        "cuda": None,
        "driver_cuda": None,
        "gpu": None,
        "gpu_error": None,
        "trt_problem": None,
    }
    try:
        from edge.backends.tensorrt_backend import tensorrt_problem
        from edge.backends.tensorrt_build import (
            cuda_python_version,
            driver_cuda_version,
            gpu_info,
            import_cudart,
        )

        import_cudart()
        state["cuda"] = cuda_python_version()
        state["driver_cuda"] = driver_cuda_version()
    except Exception:  # noqa: BLE001 - BackendError (not installed), or a broken install
        state["cuda"] = _dist_version("cuda-python", "cuda-bindings")
    try:
        state["gpu"] = gpu_info(0)
    except Exception as exc:  # noqa: BLE001 - BackendError, or a driver error of any kind
        state["gpu_error"] = str(exc)
    try:
        problem = tensorrt_problem(0)
        state["trt_problem"] = None if problem is None else str(problem)
    except Exception as exc:  # noqa: BLE001 - the doctor reports, it does not crash
        state["trt_problem"] = str(exc)
    return state


def _reason_fix(message: str) -> tuple[str, str]:
    """Split a backend error ("...; fix: ...") into its reason and its fix."""
    reason, _, fix = message.partition("; fix: ")
    return reason, fix


def check_gpu(state: dict[str, Any], backend: str = "auto") -> list[Check]:
    """GPU, TensorRT, cuda-python against the driver, what ``auto`` picks, onnxruntime."""
    from edge.backends.tensorrt_build import CUDA13_MIN_DRIVER, CUDA_PYTHON_PIN

    checks: list[Check] = []
    gpu = state["gpu"]
    where = state["jetson"] or state["smi"]
    driver = state.get("driver_cuda")
    if gpu is not None:
        checks.append(
            Check("gpu", "ok", f"{gpu.name} (sm{gpu.compute_capability})"
                  + (f"; {where}" if where else ""))
        )  # fmt: skip
    elif where or driver:  # a driver is there, but CUDA does not work from Python
        reason, fix = _reason_fix(str(state["gpu_error"]))
        checks.append(
            Check("gpu", "warn", f"{where or 'NVIDIA driver'}; CUDA not usable from Python: "
                  f"{reason}", fix or "pip install 'trd-edge[trt]' (cuda-python); in a "
                  "container use --runtime nvidia / --gpus all")
        )  # fmt: skip
    else:
        checks.append(
            Check("gpu", "warn", "no NVIDIA GPU found (not present): inference runs on the CPU",
                  "fine for tests; for production use a Jetson or an NVIDIA GPU")
        )  # fmt: skip
    trt_status: Status = "fail" if backend == "tensorrt" else "warn"
    trt_major = int(str(state["trt"]).split(".")[0]) if str(state["trt"])[:1].isdigit() else 0
    if state["trt"] and trt_major >= 10:
        checks.append(Check("tensorrt", "ok", f"TensorRT {state['trt']}"))
    elif state["trt"]:
        checks.append(
            Check("tensorrt", trt_status, f"TensorRT {state['trt']} is too old (trd-edge builds "
                  "strongly typed engines: TensorRT >= 10; JetPack 6.0 ships 8.6)",
                  "update the Jetson to JetPack 6.1 or later (TensorRT 10.3); x86: TensorRT >= 10")
        )  # fmt: skip
    else:
        checks.append(
            Check("tensorrt", trt_status, "TensorRT not present (backend auto -> onnxruntime)",
                  "Jetson: sudo apt-get install python3-libnvinfer (JetPack); x86: NVIDIA's "
                  "TensorRT packages or the nvcr.io/nvidia/tensorrt image")
        )  # fmt: skip
    cuda = state["cuda"]
    cuda_major = int(str(cuda).split(".")[0]) if str(cuda)[:1].isdigit() else 0
    supports = f"CUDA {driver // 1000}.{driver % 1000 // 10}" if driver else None
    if not cuda:
        checks.append(
            Check("cuda-python", trt_status, "cuda-python not present (needed by TensorRT backend)",
                  "pip install 'trd-edge[trt]'")
        )  # fmt: skip
    elif driver and cuda_major > driver // 1000:
        # cuda-python 13 on JetPack 6's 540 driver: every call fails, auto falls back to the CPU
        checks.append(
            Check("cuda-python", trt_status, f"cuda-python {cuda} needs an NVIDIA driver >= "
                  f"{CUDA13_MIN_DRIVER} (CUDA {cuda_major}); this driver supports {supports}: "
                  "every CUDA call fails with cudaErrorInsufficientDriver",
                  f"pip install '{CUDA_PYTHON_PIN}' (what `pip install 'trd-edge[trt]'` "
                  f"installs), or upgrade the driver to >= {CUDA13_MIN_DRIVER}")
        )  # fmt: skip
    else:
        detail = f"cuda-python {cuda}" + (f"; driver supports {supports}" if supports else "")
        checks.append(Check("cuda-python", "ok", detail))
    if backend != "onnxruntime":
        problem = state.get("trt_problem")
        if problem:
            reason, fix = _reason_fix(problem)
            checks.append(
                Check("gpu backend", trt_status, "--backend auto would use onnxruntime, not "
                      f"TensorRT: {reason}", fix)
            )  # fmt: skip
        else:
            checks.append(
                Check("gpu backend", "ok", f"--backend auto uses TensorRT {state['trt']}")
            )  # fmt: skip
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        checks.append(
            Check("onnxruntime", "ok", f"onnxruntime {ort.__version__}: {', '.join(providers)}")
        )
    except ImportError as exc:
        checks.append(
            Check("onnxruntime", "fail", f"cannot import onnxruntime: {exc}",
                  "pip install onnxruntime (or onnxruntime-gpu)")
        )  # fmt: skip
    return checks


# --------------------------------------------------------------------------- bundle / engine


def check_bundle(path: Path | None) -> tuple[Check, Any]:
    """(check, Bundle or None): the bundle loads and every file hash matches its manifest."""
    if path is None:
        return (
            Check("bundle", "fail", "no model bundle configured",
                  "set `bundle:` in the config or pass --bundle DIR (from trd-edge export)"),
            None,
        )  # fmt: skip
    from edge.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(path, verify_hashes=True)
    except BundleError as exc:
        return Check(
            "bundle",
            "fail",
            str(exc),
            "copy the complete bundle folder again or "
            "re-export it (trd-edge export); never edit files inside it",
        ), None
    m = bundle.manifest
    detail = (
        f"{path}: model {bundle.model_id} ({m.model.backbone}, {bundle.image_size}px, "
        f"{m.model.modality}); hashes verified"
    )
    if m.scoring.threshold is None:
        return Check(
            "bundle",
            "warn",
            detail + "; not calibrated (no threshold)",
            "run trd-edge calibrate on good frames from this station",
        ), bundle
    return Check("bundle", "ok", detail + f"; threshold {m.scoring.threshold:g}"), bundle


def check_acquisition(config: Any, bundle: Any) -> Check | None:
    """The station's depth chain (filters, average_frames) vs the bundle's training data
    (`edge.sources.acquisition.station_options`, what `run` decides at start); None without
    a bundle."""
    if bundle is None:
        return None
    chain = bundle.manifest.acquisition
    if chain is None:
        return Check("depth chain", "ok", "the bundle records no acquisition chain (exported "
                     "before it): not checked")
    from edge.sources import SourceError
    from edge.sources.acquisition import station_options

    try:
        station_options(config.camera, config.camera.source, chain, f"bundle {bundle.path.name}")
    except SourceError as exc:  # a bad camera spec: the camera check reports it
        return Check("depth chain", "warn", f"not checked: {exc}", "fix camera.source")
    except ValueError as exc:
        return Check("depth chain", "fail", str(exc),
                     "set camera.realsense filters / average_frames as the bundle's training "
                     "data had them (or leave them unset), or record again and retrain")
    return Check("depth chain", "ok", f"the bundle's training data: {chain.describe()}; "
                 "run repeats it (settings the config leaves unset are taken from the bundle)")


def check_engine(bundle: Any, state: dict[str, Any], backend: str = "auto") -> Check:
    """A TensorRT engine for this GPU + TensorRT version exists, or can be built here."""
    if bundle is None:
        return Check("engine", "warn", "skipped: no usable bundle", "fix the bundle first")
    gpu, trt = state["gpu"], state["trt"]
    status: Status = "fail" if backend == "tensorrt" else "warn"
    if gpu is None or not trt:
        return Check(
            "engine",
            status,
            "no TensorRT/GPU here: the bundle's ONNX runs on onnxruntime",
            "install TensorRT + cuda-python on the target to build an engine",
        )
    from edge.backends.tensorrt_build import engine_key

    precision = "fp16" if bundle.has_file("model_fp16") else "fp32"
    key = engine_key(gpu.name, gpu.compute_capability, trt, precision)
    path = bundle.engine_path(key)
    if path.is_file():
        return Check("engine", "ok", f"{key} present ({path.stat().st_size / 1e6:.1f} MB)")
    writable = os.access(bundle.path, os.W_OK) and (
        not path.parent.exists() or os.access(path.parent, os.W_OK)
    )
    if not writable:
        return Check(
            "engine",
            "fail",
            f"no engine {key}, and the bundle folder is read-only here",
            f"make {bundle.path} writable for this user (engines are built into engines/), "
            "or build it once: trd-edge build-engine --bundle DIR",
        )
    return Check(
        "engine",
        "warn",
        f"no engine {key} yet: it is built on first start (minutes)",
        f"build it now to avoid the wait: trd-edge build-engine --bundle {bundle.path}",
    )


# --------------------------------------------------------------------------- broker


def _is_auth_failure(reason_code: Any) -> bool:
    value = getattr(reason_code, "value", reason_code)
    name = str(getattr(reason_code, "getName", lambda: reason_code)()).lower()
    # MQTT 5: 0x86 bad user name or password, 0x87 not authorized; MQTT 3.1.1 CONNACK 4 and 5.
    return value in (0x86, 0x87, 4, 5) or "password" in name or "authori" in name


def check_broker(
    config: Any, timeout_s: float = 5.0, mes_url: str | None = None, _protocol: str | None = None
) -> list[Check]:
    """Connect with the station's credentials and TLS and prove the ACL lets it publish.

    The ACL probe needs MQTT 5 (a 3.1.1 broker drops a refused publish and acknowledges it as
    if delivered), so for a 3.1.1 station it is made over a second, MQTT 5 connection. With
    `mes_url` (the MES's credentials) a subscriber on that account must also receive the probe:
    the station can publish and the MES can read, whatever the protocol.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    cfg = config.mqtt
    if not cfg.url:
        return [
            Check("broker", "warn", "no broker configured (mqtt.url): verdicts stay local",
                  "set mqtt.url (or --mqtt mqtts://HOST:8883) to publish to the MES")
        ]  # fmt: skip
    ep = cfg.endpoint()
    where = f"{ep.url} as {ep.username or 'anonymous'}"
    protocol = _protocol or cfg.protocol
    v5 = protocol == "5"
    # A different client id: reusing the station's would disconnect a running station.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=config.client_id() + "-doctor",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    client.connect_timeout = timeout_s
    if ep.username is not None:
        client.username_pw_set(ep.username, ep.password.get_secret_value() if ep.password else None)
    if ep.tls:
        try:
            client.tls_set(
                ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError) as exc:
            return [
                Check(
                    "broker",
                    "fail",
                    f"{where}: TLS files unusable: {exc}",
                    "fix mqtt.tls.ca / cert / key (PEM files readable by this user)",
                )
            ]
        client.tls_insecure_set(cfg.tls.insecure)
    events: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, rc, p: events.setdefault("connack", rc)
    client.on_disconnect = lambda c, u, f, rc, p: events.setdefault("disconnect", rc)
    client.on_publish = lambda c, u, mid, rc, p: events.setdefault("puback", rc)

    tls_fix = (
        "set mqtt.tls.ca to the CA that signed the broker certificate (deploy/mosquitto/"
        "gen-certs.sh: broker/ca.crt) and use a host name listed in the certificate"
    )
    try:
        client.connect(ep.host, ep.port, keepalive=10)
    except ssl.SSLCertVerificationError as exc:
        return [
            Check(
                "broker",
                "fail",
                f"{where}: TLS: broker certificate not trusted ({exc.verify_message or exc})",
                tls_fix,
            )
        ]
    except ssl.SSLError as exc:
        return [Check("broker", "fail", f"{where}: TLS handshake failed ({exc})",
                      "is this a TLS port? mqtts:// needs the broker's TLS listener (8883); "
                      + tls_fix)]  # fmt: skip
    except ConnectionRefusedError:
        return [
            Check(
                "broker",
                "fail",
                f"{where}: connection refused (nothing listens there)",
                "start the broker, or fix host/port in mqtt.url; check firewalls",
            )
        ]
    except socket.gaierror as exc:
        return [
            Check(
                "broker",
                "fail",
                f"{where}: unknown host ({exc})",
                "fix the host name in mqtt.url or add it to DNS / /etc/hosts",
            )
        ]
    except ConnectionResetError:
        hint = (
            "a plain (non-TLS) port? use mqtt:// or the TLS port"
            if ep.tls
            else "check the broker's log"
        )
        return [
            Check(
                "broker",
                "fail",
                f"{where}: the broker closed the connection"
                + (" during the TLS handshake" if ep.tls else ""),
                hint,
            )
        ]
    except TimeoutError:
        return [
            Check(
                "broker",
                "fail",
                f"{where}: no answer within {timeout_s:g}s",
                "check the network route and firewall (port open?)",
            )
        ]
    except OSError as exc:
        return [Check("broker", "fail", f"{where}: {exc}", "check the network and mqtt.url")]

    deadline = time.monotonic() + timeout_s
    while "connack" not in events and "disconnect" not in events:
        if time.monotonic() > deadline:
            break
        client.loop(timeout=0.1)
    rc = events.get("connack")
    if rc is None:
        client.disconnect()
        hint = "a TLS port? use mqtts:// there" if not ep.tls else "check the broker's log"
        what = (
            "closed the connection before accepting it"
            if "disconnect" in events
            else f"did not accept the MQTT connection within {timeout_s:g}s"
        )
        return [Check("broker", "fail", f"{where}: the broker {what}", hint)]
    if rc.is_failure:
        client.disconnect()
        if _is_auth_failure(rc):
            return [
                Check(
                    "broker",
                    "fail",
                    f"{where}: authentication failed ({rc})",
                    "check mqtt.username and the password (TRD_EDGE_MQTT_PASSWORD); "
                    "add/reset the user: deploy/mosquitto/add-station.sh PASSWD USER",
                )
            ]
        return [
            Check(
                "broker",
                "fail",
                f"{where}: connection refused by the broker ({rc})",
                "check the client id and protocol version (mqtt.protocol)",
            )
        ]
    checks = [Check("broker", "ok", f"{where}: connected (MQTT {protocol})")]
    if v5:
        checks.append(_check_acl(client, config, events, timeout_s, mes_url))
    else:
        probe = check_broker(config, timeout_s, mes_url, _protocol="5")
        acl = [c for c in probe if c.name.startswith("broker acl")]
        checks += acl or [Check(
            "broker acl", "warn", "MQTT 3.1.1 cannot report refused publishes, and the broker "
            "did not accept MQTT 5 for the probe: ACL not checked",
            "make sure the ACL lets this user write " + config.topic("") + "# (a refused "
            "publish is dropped silently under 3.1.1), or use mqtt.protocol 5")]  # fmt: skip
    client.disconnect()
    client.loop(timeout=0.1)
    return checks


def _mes_subscriber(
    mes_url: str, topic: str, timeout_s: float, ca: Any = None
) -> tuple[Any, list, str | None]:
    """A client on the MES's account subscribed to `topic`: (client, received, problem)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.config import parse_mqtt_url

    ep = parse_mqtt_url(mes_url)
    got: list = []
    acked: dict[str, Any] = {}
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"trd-doctor-mes-{os.getpid()}",
                      protocol=mqtt.MQTTv5)  # fmt: skip
    if ep.username is not None:
        sub.username_pw_set(ep.username, ep.password.get_secret_value() if ep.password else None)
    if ep.tls:
        sub.tls_set(ca_certs=str(ca) if ca else None)  # the station's CA signs the broker
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_subscribe = lambda c, u, mid, rcs, p: acked.setdefault("rc", rcs[0])
    try:
        sub.connect(ep.host, ep.port, keepalive=10)
    except OSError as exc:
        return sub, got, f"MES account {ep.url} cannot connect: {exc}"
    sub.subscribe(topic, qos=1)
    deadline = time.monotonic() + timeout_s
    while "rc" not in acked and time.monotonic() < deadline:
        sub.loop(timeout=0.1)
    rc = acked.get("rc")
    if rc is None or rc.is_failure:
        return sub, got, f"MES account {ep.url} may not subscribe to {topic} ({rc})"
    return sub, got, None


def _check_acl(
    client: Any, config: Any, events: dict[str, Any], timeout_s: float, mes_url: str | None = None
) -> Check:
    """Publish one QoS 1 message under the station prefix; MQTT 5 PUBACK says if it was denied.

    With `mes_url`, a subscriber on the MES's account must receive it too.
    """
    topic = config.topic("doctor")
    payload = json.dumps({"doctor": time.time(), "station": config.station})
    mes = None
    if mes_url:
        mes, received, problem = _mes_subscriber(mes_url, topic, timeout_s, config.mqtt.tls.ca)
        if problem:
            mes.disconnect()
            return Check("broker acl", "fail", problem,
                         "the ACL must let the MES user read trd/# (deploy/mosquitto/acl)")
    client.publish(topic, payload, qos=1)
    deadline = time.monotonic() + timeout_s
    while "puback" not in events and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    rc = events.get("puback")
    if mes is not None:
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline and rc is not None:
            mes.loop(timeout=0.1)
        mes.disconnect()
        if rc is not None and not rc.is_failure and not received:
            return Check(
                "broker acl", "fail",
                f"the broker acknowledged {topic} but the MES account did not receive it",
                f"the ACL must let user {config.mqtt.username!r} write {config.topic('')}# "
                "and the MES read it (deploy/mosquitto/acl); MQTT 3.1.1 drops refused "
                "publishes silently",
            )  # fmt: skip
    if rc is None:
        return Check(
            "broker acl",
            "warn",
            f"no acknowledgement for {topic} within {timeout_s:g}s",
            "check the broker's log",
        )
    if rc.is_failure:
        return Check(
            "broker acl",
            "fail",
            f"the broker refuses writes to {topic} ({rc})",
            f"the ACL must let user {config.mqtt.username!r} write "
            f"{config.topic('')}#: use the station id as username (deploy/mosquitto/acl)",
        )
    if mes is not None:
        return Check("broker acl", "ok", f"may publish under {config.topic('')}; the MES reads it")
    return Check("broker acl", "ok", f"may publish under {config.topic('')}")


# --------------------------------------------------------------------------- outbox / disk


def check_disk(outbox_path: Path, min_free_mb: float, max_messages: int = 0) -> Check:
    """Free space and write access where the outbox lives."""
    folder = outbox_path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check(
            "disk",
            "fail",
            f"{probe} is not writable: the outbox {outbox_path} cannot be created",
            "give this user write access (host install: /var/lib/trd-edge belongs to trd-edge) "
            "or set outbox.path elsewhere",
        )
    free_mb = shutil.disk_usage(probe).free / 1e6
    full_mb = max_messages * BYTES_PER_VERDICT / 1e6
    detail = (
        f"{free_mb:,.0f} MB free at {probe} (outbox {outbox_path}; full outbox ~{full_mb:,.0f} MB)"
    )
    if free_mb < min_free_mb:
        return Check(
            "disk",
            "fail",
            detail + f"; below the {min_free_mb:g} MB minimum",
            "free disk space or move outbox.path to a larger filesystem",
        )
    if free_mb < max(2 * min_free_mb, full_mb):
        return Check(
            "disk", "warn", detail + "; little headroom", "free space or lower outbox.max_messages"
        )
    return Check("disk", "ok", detail)


def check_outbox(outbox_path: Path) -> Check:
    """Verdicts waiting in the outbox (a busy outbox means the broker has been away)."""
    if not outbox_path.exists():
        return Check("outbox", "ok", f"{outbox_path}: not created yet (empty)")
    from edge.comms.outbox import Outbox, OutboxError

    try:
        with Outbox(outbox_path) as box:
            depth, counters = len(box), box.counters
    except OutboxError as exc:
        if "in use" in str(exc):
            return Check("outbox", "ok", f"{outbox_path}: in use by the running station")
        return Check("outbox", "fail", str(exc), "move the damaged file away; a new one is created")
    except Exception as exc:  # noqa: BLE001 - sqlite3 errors of a damaged file
        return Check(
            "outbox",
            "fail",
            f"{outbox_path}: {exc}",
            "move the damaged file away; a new one is created",
        )
    dropped = counters.get("dropped_total", 0)
    detail = f"{depth} verdicts waiting, {dropped} dropped when full (since creation)"
    if depth:
        return Check(
            "outbox", "warn", detail, "they are delivered once the station reaches the broker"
        )
    return Check("outbox", "ok", detail)


# --------------------------------------------------------------------------- driver


def add_doctor_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trd-edge doctor`` (for the CLI's sub-parser)."""
    parser.add_argument("--config", default=None, help="station config (YAML/TOML)")
    parser.add_argument("--bundle", default=None, help="model bundle (overrides the config)")
    parser.add_argument("--mqtt", default=None, help="broker URL (overrides the config)")
    parser.add_argument("--camera", default=None, help="camera source (overrides the config)")
    parser.add_argument("--station", default=None, help="station id (overrides the config)")
    parser.add_argument("--frames", type=int, default=3, help="frames to read from the camera")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per probe")
    parser.add_argument(
        "--min-free-mb",
        type=float,
        default=DEFAULT_MIN_FREE_MB,
        help="fail below this much free disk for the outbox",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["camera", "gpu", "bundle", "broker", "disk"],
        help="leave out these checks",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--mes-url",
        default=os.environ.get("TRD_EDGE_DOCTOR_MES_URL"),
        help="the MES's broker account (mqtt://mes:PASS@host:port); the ACL probe must then "
        "reach it too (env TRD_EDGE_DOCTOR_MES_URL)",
    )


def collect(args: argparse.Namespace) -> list[Check]:
    """Run every check the arguments ask for and return them in report order."""
    from edge.config import ConfigError, load_config

    skip = set(getattr(args, "skip", None) or [])
    timeout = float(getattr(args, "timeout", 10.0))
    checks = check_python()
    overrides = {
        "bundle": getattr(args, "bundle", None),
        "mqtt.url": getattr(args, "mqtt", None),
        "camera.source": getattr(args, "camera", None),
        "station": getattr(args, "station", None),
    }
    try:
        config = load_config(getattr(args, "config", None), overrides=overrides)
    except ConfigError as exc:
        checks.append(
            Check(
                "config",
                "fail",
                "; ".join(exc.problems),
                "fix the config file (trd-edge config --check FILE lists every problem)",
            )
        )
        return checks
    source = getattr(args, "config", None) or "defaults"
    checks.append(Check("config", "ok", f"{source}: station {config.station}"))
    backend = config.runtime.backend
    if "camera" not in skip:
        checks += check_camera(
            config.camera.source, config.camera, int(getattr(args, "frames", 3)), timeout
        )
    state = gpu_state() if ("gpu" not in skip or "bundle" not in skip) else None
    if "gpu" not in skip and state is not None:
        checks += check_gpu(state, backend)
    if "bundle" not in skip:
        bundle_check, bundle = check_bundle(config.bundle)
        checks.append(bundle_check)
        if (chain_check := check_acquisition(config, bundle)) is not None:
            checks.append(chain_check)
        checks.append(check_engine(bundle, state or {"gpu": None, "trt": None}, backend))
    if "broker" not in skip:
        checks += check_broker(config, timeout, getattr(args, "mes_url", None))
    if "disk" not in skip:
        path = config.outbox_path()
        checks.append(
            check_disk(path, float(getattr(args, "min_free_mb", DEFAULT_MIN_FREE_MB)),
                       config.outbox.max_messages)
        )  # fmt: skip
        checks.append(check_outbox(path))
    return checks


def format_report(checks: Iterable[Check]) -> str:
    """Human-readable report: one line per check, a FIX line under each problem."""
    marks = {"ok": " OK ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.status]}] {c.name}: {c.detail}")
        if c.status != "ok" and c.fix:
            lines.append(f"       FIX: {c.fix}")
    return "\n".join(lines)


def run_doctor(args: argparse.Namespace) -> int:
    """Handler of ``trd-edge doctor``: print the report; 0 when no check failed, else 1."""
    checks = collect(args)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    if getattr(args, "json", False):
        print(json.dumps({"ok": failed == 0, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(format_report(checks))
        print(f"\n{len(checks)} checks: {failed} failed, {warned} warnings")
    return 0 if failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.commands.doctor`` (same as ``trd-edge doctor``)."""
    parser = argparse.ArgumentParser(prog="trd-edge doctor", description=__doc__.split("\n")[0])
    add_doctor_args(parser)
    return run_doctor(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
