"""Model files: safetensors weights plus a JSON config, written atomically, read safely.

A model is a folder holding two files:

* ``model.safetensors``: the module's tensors (``module.<name>``) and any extra tensors
  (``extra.<name>``, e.g. the fitted scaling), float32/float64;
* ``model.json``: ``format``, ``format_version``, the library version, the module's
  ``CAEConfig``, free metadata (the estimator's parameters and fitted attributes) and the
  SHA-256 of the weights file.

Each file is written to a temporary name, flushed to disk and renamed, so a crash never
leaves a half-written file under the final name. Loading reads JSON and safetensors only
(never pickle) and checks the checksum, so a truncated, corrupted or foreign file gives one
``ValueError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ._version import __version__
from .models import CAEConfig, ContractiveAutoencoderModule

FORMAT = "contractive.model"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "model.json"


def default_mode(directory: bool = False) -> int:
    """The permission bits a plain ``open`` / ``mkdir`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders that creating ``path`` (``mkdir(parents=True)``) would make, innermost
    first: what ``remove_empty_folders`` takes back after a failure."""
    path = Path(path)
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty; stop at the first that is
    not (it and its parents are kept)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure rendered as PNG bytes (to write with ``atomic_write_bytes``)."""
    import io as _io

    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, rename.

    The file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file the caller asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _jsonable(obj: Any) -> Any:
    """JSON for NumPy scalars and arrays (e.g. parameters from a grid built with NumPy)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} in a model config")


def _config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the config's content (all but this digest), in a canonical JSON form."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, allow_nan=False, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def _model_dir(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if not os.fspath(path):
        raise ValueError("path is empty: name the model's folder")
    p = Path(path)
    if p.name in (WEIGHTS_NAME, CONFIG_NAME):
        return p.parent
    return p


def storable_params(params: dict[str, Any]) -> dict[str, Any]:
    """Estimator parameters to write as JSON: a ``random_state`` that is a generator, not a
    seed, is stored as None (a generator's state is not a parameter one can write down)."""
    params = dict(params)
    if not isinstance(params.get("random_state"), (numbers.Integral, type(None))):
        params["random_state"] = None
    return params


def params_from_json(params: dict[str, Any]) -> dict[str, Any]:
    """Estimator parameters read from JSON: ``hidden_layer_sizes`` back to a tuple."""
    params = dict(params)
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    return params


def format_header(fmt: str, version: int) -> dict[str, Any]:
    """The first entries of every JSON file a model folder holds: what it is, in which
    version of its format, written by which version of contractive, when."""
    return {"format": fmt, "format_version": version, "library_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def check_format(config: Any, path: Path, fmt: str, version: int, what: str) -> None:
    """Refuse (``ValueError`` naming ``path``) a JSON file that is not ``fmt`` up to
    ``version`` (see ``format_header``)."""
    if not isinstance(config, dict) or config.get("format") != fmt:
        raise ValueError(f"{path}: not a {what} (format is not {fmt!r})")
    found = config.get("format_version")
    if type(found) is not int or not 1 <= found <= version:
        raise ValueError(
            f"{path}: format_version {found!r} is not supported by contractive "
            f"{__version__} (reads up to {version}); upgrade contractive"
        )


def write_tensor_folder(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], fields: dict[str, Any], *,
    fmt: str = FORMAT, version: int = FORMAT_VERSION, weights_name: str = WEIGHTS_NAME,
    config_name: str = CONFIG_NAME,
) -> str:
    """Write ``tensors`` (safetensors) and a JSON config (``format``, versions, ``fields``
    and the SHA-256 of the weights and of the config itself) to the folder ``path``, each
    file atomically, the config last; returns the folder."""
    folder = _model_dir(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder; a model is saved as a folder")
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                   metadata={"format": fmt})
    config = {
        **format_header(fmt, version),
        "weights_file": weights_name,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        **fields,
    }
    config["config_sha256"] = _config_digest(config)
    text = json.dumps(config, indent=1, allow_nan=False, default=_jsonable)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way, no permission, a read-only file system
        raise ValueError(f"{folder}: cannot create the model folder ({exc.strerror or exc})"
                         ) from None
    atomic_write_bytes(folder / weights_name, blob)
    atomic_write_bytes(folder / config_name, text.encode())
    return str(folder)


def read_tensor_folder(
    folder: Path, *, fmt: str = FORMAT, version: int = FORMAT_VERSION,
    weights_name: str = WEIGHTS_NAME, config_name: str = CONFIG_NAME,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder written by ``write_tensor_folder``: ``(config, tensors)``, every check
    made (format, version, both checksums, finite floating-point tensors); a problem is
    one ``ValueError`` naming the file."""
    cfg_path, w_path = folder / config_name, folder / weights_name
    if not cfg_path.is_file():
        raise ValueError(f"{folder}: no model here (expected {config_name} and {weights_name})")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{cfg_path}: not a contractive model config (invalid JSON: {exc})"
        ) from None
    check_format(config, cfg_path, fmt, version, "contractive model config")
    if config.get("config_sha256") != _config_digest(config):
        raise ValueError(f"{cfg_path}: checksum mismatch: the config is corrupted or was edited")
    if not w_path.is_file():
        raise ValueError(f"{w_path}: missing weights file")
    blob = w_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != config.get("weights_sha256"):
        raise ValueError(
            f"{w_path}: checksum mismatch: the weights file is truncated or corrupted"
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{w_path}: unreadable safetensors file ({exc})") from None
    for name, tensor in tensors.items():  # load_state_dict casts to the module's float32
        if not tensor.is_floating_point():
            raise ValueError(f"{w_path}: tensor {name} must be floating point (it is "
                             f"{str(tensor.dtype).removeprefix('torch.')})")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{w_path}: tensor {name} holds NaN or infinite values")
    return config, tensors


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with the shapes checked first, so a
    mismatch names the tensor (``prefix + name``) and both shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    for name, tensor in state.items():
        if name in expected and tuple(tensor.shape) != expected[name]:
            raise ValueError(f"tensor {prefix}{name} has shape {tuple(tensor.shape)}, the "
                             f"config needs {expected[name]}")
    module.load_state_dict(state, strict=True)


def save_module(
    path: str | os.PathLike, module: ContractiveAutoencoderModule, metadata: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write ``module`` (and ``extra`` tensors, ``metadata``) to the folder ``path``."""
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v
    return write_tensor_folder(path, tensors, {"module_config": module.config.to_dict(),
                                               "metadata": metadata})


def load_module(
    path: str | os.PathLike,
) -> tuple[ContractiveAutoencoderModule, dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder written by ``save_module``: ``(module on CPU, metadata, extra)``."""
    folder = _model_dir(path)
    config, tensors = read_tensor_folder(folder)
    try:
        module = ContractiveAutoencoderModule(CAEConfig(**config["module_config"]))
        state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
        load_state(module, state, "module.")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0]
        raise ValueError(f"{folder}: model config and weights do not match ({msg})") from None
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return module, config.get("metadata", {}), extra
