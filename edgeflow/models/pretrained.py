"""Pretrained weights by name, loaded by torchvision's and timm's own loaders from their own caches.

torchvision's weights are members of each model's weights enum (``IMAGENET1K_V2``, ``DEFAULT``) and live in
torch hub's cache, ``$TORCH_HOME/hub/checkpoints/<file named in the URL>``; timm's are pretrained tags
(``timm:efficientnet_b0.ra_in1k``, or ``--weights ra_in1k``) and live in the Hugging Face cache
(``HF_HUB_CACHE``; a few older ones in torch hub's). Both download where a network is. Where none is, the
load fails at once (``HF_HUB_OFFLINE=1``, or a first request that cannot connect, instead of the Hub client's
retries) with one line saying which file belongs where, and where to get it.

Example:
    >>> parse_model_name("timm:efficientnet_b0.ra_in1k")
    ('timm:efficientnet_b0', 'ra_in1k')
    >>> weights_preprocess("mobilenet_v3_large", "IMAGENET1K_V2").resize_side
    232
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.errors import ConfigError, ModelLoadError, first_line
from edgeflow.models._registry import ModelInfo, model_info
from edgeflow.models.checkpoint import LoadedWeights
from edgeflow.models.head import output_classes, replace_head
from edgeflow.models.timm_models import PREFIX as TIMM_PREFIX
from edgeflow.models.timm_models import is_timm_name

if TYPE_CHECKING:
    from timm.models import PretrainedCfg
    from torchvision.models import WeightsEnum

#: The weights name that means "the library's recommended weights for this architecture".
DEFAULT = "DEFAULT"


def parse_model_name(name: str) -> tuple[str, str | None]:
    """Split a timm pretrained tag off a model name; other names have no tags and come back as they are.

    Example:
        >>> parse_model_name("timm:mobilenetv3_small_050.lamb_in1k")
        ('timm:mobilenetv3_small_050', 'lamb_in1k')
        >>> parse_model_name("mobilenet_v3_large")
        ('mobilenet_v3_large', None)
    """
    from timm.models import split_model_name_tag

    name = name.strip()
    if not is_timm_name(name):
        return name, None
    arch, tag = split_model_name_tag(name)  # the "timm:" prefix holds no dot, so it stays with the architecture
    return arch, tag or None


def has_pretrained(model: str, *, width: float = 1.0) -> bool:
    """Whether ``model`` (a registry name, ``timm:<arch>`` with or without a tag) has pretrained weights at
    ``width``: the libraries publish weights at width 1 only.

    Raises:
        UnknownNameError: no such model.
    """
    name, tag = parse_model_name(model)
    info = model_info(name)
    if width != 1.0:
        return False
    if info.source == "torchvision":
        return bool(_torchvision_members(info.name))
    if info.source == "timm":
        return bool(_timm_tags(_timm_arch(info.name))) if tag is None else _timm_has_tag(info.name, tag)
    return False


def load_pretrained(arch: str, weights: str, *, num_classes: int | None = None) -> LoadedWeights:
    """Build ``arch`` with its pretrained ``weights``, read from the library's cache or downloaded into it.

    Args:
        arch: A registry name (``mobilenet_v3_large``) or ``timm:<arch>``; a timm name may carry the tag.
        weights: torchvision: a member of the model's weights enum, any case (``IMAGENET1K_V2``, ``DEFAULT``);
            timm: a pretrained tag (``ra_in1k``) or ``DEFAULT`` (timm's default tag for the architecture).
        num_classes: Classes of the head; where they differ from the weights', the head is replaced by a
            freshly initialised one (``new_head``). None keeps the weights' own head.

    Returns:
        The model in eval mode, with the weights' origin, classes, categories and input pipeline.

    Raises:
        UnknownNameError: no such model.
        ConfigError: the architecture has no such weights (the message lists the ones it has), or none at all.
        ModelLoadError: the weights file is not cached and cannot be downloaded (the message says where it
            belongs and where to get it), or the cached file is corrupt or of another architecture.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    info, weights = _resolve(arch, weights)
    if weights is None:
        raise ConfigError(f"name the pretrained weights of {info.name} (DEFAULT for the library's recommended ones)")
    if info.source == "torchvision":
        loaded = _load_torchvision(info.name, _torchvision_weights(info.name, weights))
    elif info.source == "timm":
        loaded = _load_timm(_timm_pretrained_cfg(info.name, weights))
    else:
        raise ConfigError(f"{info.name} has no pretrained weights; train it from random weights (leave out weights)")
    if num_classes is not None and num_classes != loaded.outputs:
        replace_head(loaded.module, num_classes=num_classes)
        loaded.module.eval()
        loaded.new_head = True
    loaded.preprocess = weights_preprocess(info.name, weights)
    return loaded


def weights_preprocess(arch: str, weights: str | None = None) -> PreprocessSpec | None:
    """The input pipeline ``weights`` were trained with, from the library's metadata (no weights are read):
    torchvision's ``weights.transforms()``, timm's ``pretrained_cfg``.

    Args:
        arch: A registry name or ``timm:<arch>`` (a timm name may carry the tag).
        weights: As for :func:`load_pretrained`; None means the architecture's default weights, the pipeline a
            checkpoint of this architecture most likely used.

    Returns:
        Size, resize policy, interpolation, mean and std; None where the architecture has no pretrained weights
        and none were named. timm's ``squash`` crop becomes ``stretch`` (exact at crop_pct 1, timm's usual), its
        ``border`` mode ``keep_ratio_pad`` (padded with 0 after normalisation, not timm's black pixels).

    Raises:
        UnknownNameError: no such model.
        ConfigError: the named weights do not exist for ``arch``.

    Example:
        >>> weights_preprocess("timm:tf_efficientnet_lite1").resize_side
        272
    """
    info, weights = _resolve(arch, weights)
    if weights is None and not has_pretrained(info.name):
        return None
    weights = weights or DEFAULT
    if info.source == "torchvision":
        return _torchvision_preprocess(_torchvision_weights(info.name, weights))
    if info.source == "timm":
        return _timm_preprocess(_timm_pretrained_cfg(info.name, weights))
    raise ConfigError(f"{info.name} has no pretrained weights, so no {weights} pipeline")


def scaled_preprocess(spec: PreprocessSpec, side: int) -> PreprocessSpec:
    """The same pipeline for a square input of ``side``, cropping the same fraction of the resized image.

    Example:
        >>> spec = weights_preprocess("mobilenet_v3_large", "IMAGENET1K_V2")  # 232 -> centre 224
        >>> scaled_preprocess(spec, 160).resize_side
        166
    """
    update: dict[str, object] = {"size": (side, side)}
    if spec.resize_side is not None and spec.size is not None:
        update["resize_side"] = round(spec.resize_side * side / spec.size[0])
    return spec.model_copy(update=update)


def _resolve(arch: str, weights: str | None) -> tuple[ModelInfo, str | None]:
    """The architecture's registry entry and the weights named by ``weights`` or by a tag in ``arch``."""
    name, tag = parse_model_name(arch)
    info = model_info(name)
    weights = weights.strip() if weights is not None else None
    if tag is not None and weights is not None and weights.lower() != tag.lower():
        raise ConfigError(f"{arch} names the weights {tag} and weights says {weights}; give one")
    return info, weights or tag


def _reason(error: BaseException) -> str:
    """One line of an exception: its first line, with the next one where the first only introduces it
    (``Error(s) in loading state_dict for X:``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{lines[0]} {lines[1]}" if len(lines) > 1 and lines[0].endswith(":") else first_line(error, limit=None)
    return text if len(text) <= 240 else text[:240].rstrip(" ,") + " ..."


# torchvision


def _torchvision_members(arch: str) -> list[str]:
    from torchvision.models import get_model_weights

    try:
        return list(get_model_weights(arch).__members__)
    except ValueError:  # a builder without a weights enum
        return []


def _torchvision_weights(arch: str, weights: str) -> WeightsEnum:
    """The member of ``arch``'s weights enum named ``weights`` (any case; ``Enum_Name.MEMBER`` too)."""
    from torchvision.models import get_model_weights

    members = _torchvision_members(arch)
    if not members:
        raise ConfigError(f"torchvision publishes no pretrained weights for {arch}")
    enum = get_model_weights(arch)
    prefix, dot, member = weights.rpartition(".")
    if dot and prefix.lower() == enum.__name__.lower():
        weights = member
    if weights.upper() not in members:
        raise ConfigError(f"{arch} has no weights {weights!r}; torchvision's are {', '.join(members)}")
    return enum[weights.upper()]


def _load_torchvision(arch: str, member: WeightsEnum) -> LoadedWeights:
    from torchvision.models import get_model

    origin = f"torchvision {member}"
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(member.url).path))
    cached = os.path.isfile(path)
    try:
        module = get_model(arch, weights=member)  # torch hub's cache, else a download into it
    except Exception as error:  # urllib, zip, unpickling and state_dict errors all mean "no usable file"
        if os.path.isfile(path):
            raise _unusable_file(path, origin=origin, error=error) from None
        raise ModelLoadError(
            f"weights {origin} are not in the torch hub cache and could not be downloaded ({_reason(error)}): "
            f"put {member.url} at {path}"
        ) from None
    categories = member.meta.get("categories")
    note = f"{'read from' if cached else 'downloaded to'} {path}"
    return LoadedWeights(
        module=module.eval(), origin=origin, outputs=output_classes(module),
        categories=list(categories) if categories else None, notes=[note],
    )  # fmt: skip


def _torchvision_preprocess(member: WeightsEnum) -> PreprocessSpec | None:
    transform = member.transforms()
    crop, resize = getattr(transform, "crop_size", None), getattr(transform, "resize_size", None)
    if not crop or not resize:  # not an ImageClassification preset
        return None
    return PreprocessSpec(
        size=(int(crop[0]), int(crop[-1])),
        resize="shorter_side_crop",
        resize_side=int(resize[0]),
        interpolation=transform.interpolation.value,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
    )


# timm


def _timm_arch(name: str) -> str:
    return name[len(TIMM_PREFIX) :]


def _timm_tags(arch: str) -> list[str]:
    """The pretrained tags timm has weights for, for architecture ``arch`` (no prefix)."""
    import timm
    from timm.models import split_model_name_tag

    return [split_model_name_tag(name)[1] for name in timm.list_pretrained(f"{arch}.*")]


def _timm_has_tag(name: str, tag: str) -> bool:
    return tag.upper() == DEFAULT or tag.lower() in {known.lower() for known in _timm_tags(_timm_arch(name))}


def _timm_pretrained_cfg(name: str, weights: str) -> PretrainedCfg:
    """timm's pretrained config of ``timm:<arch>`` for tag ``weights`` (``DEFAULT``: timm's default tag)."""
    import timm
    from timm.models import get_pretrained_cfg

    arch = _timm_arch(name)
    tags = _timm_tags(arch)
    if not tags:
        raise ConfigError(f"timm {timm.__version__} has no pretrained weights for {name}")
    prefix, dot, tag = weights.rpartition(".")
    if dot and prefix.lower() == arch.lower():
        weights = tag
    if weights.upper() == DEFAULT:
        return get_pretrained_cfg(arch)
    by_lower = {known.lower(): known for known in tags}
    if weights.lower() not in by_lower:
        raise ConfigError(
            f"{name} has no pretrained weights {weights!r}; timm's tags are {', '.join(tags)} (or DEFAULT)"
        )
    return get_pretrained_cfg(f"{arch}.{by_lower[weights.lower()]}")


def _load_timm(cfg: PretrainedCfg) -> LoadedWeights:
    import timm

    origin = f"timm {cfg.architecture}.{cfg.tag}"
    outputs = int(cfg.num_classes or 0)
    if outputs == 0:
        raise ConfigError(f"weights {origin} have no classifier (a feature extractor); edgeflow needs one")
    where = _TimmFile(cfg)
    cached = where.cached()
    if cached is None:
        where.check_reachable(origin=origin)
    try:
        # Loaded with its own head, strictly: a file of another architecture fails here rather than loading
        # nothing (timm loads non-strictly when it drops a head for other classes); load_pretrained then swaps it.
        module = timm.create_model(f"{cfg.architecture}.{cfg.tag}", pretrained=True)
    except Exception as error:  # hub, urllib, safetensors, unpickling and state_dict errors
        path = where.cached()
        if path is not None:
            raise _unusable_file(path, origin=origin, error=error) from None
        raise where.missing(origin=origin, reason=_reason(error)) from None
    path = where.cached()
    note = f"{'read from' if cached else 'downloaded to'} {path}" if path else "downloaded"
    return LoadedWeights(
        module=module.eval(), origin=origin, outputs=outputs, categories=_timm_categories(cfg, outputs), notes=[note]
    )


class _TimmFile:
    """Where timm reads a pretrained config's weights from: a Hugging Face Hub repo (most) or a URL through
    torch hub's cache (a few older ones). Resolved by timm's own rule."""

    def __init__(self, cfg: PretrainedCfg) -> None:
        from timm.models._builder import _resolve_pretrained_source
        from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, hf_split

        source, location = _resolve_pretrained_source(cfg.to_dict())
        self.hub = source == "hf-hub"
        if self.hub:
            repo, filename = location if isinstance(location, tuple) else (location, HF_WEIGHTS_NAME)
            self.repo, self.revision = hf_split(repo)
            # timm asks for a .safetensors alternative first (model.safetensors for pytorch_model.bin)
            self.filenames = [*_get_safe_alternatives(filename), filename]
        else:
            self.url = location if isinstance(location, str) else ""
            name = os.path.basename(urlparse(self.url).path)
            self.path = os.path.join(torch.hub.get_dir(), "checkpoints", name)

    def cached(self) -> str | None:
        """The cached file, or None."""
        if not self.hub:
            return self.path if os.path.isfile(self.path) else None
        from huggingface_hub import try_to_load_from_cache

        for filename in self.filenames:
            path = try_to_load_from_cache(self.repo, filename, revision=self.revision)
            if isinstance(path, str):  # not None, nor the "known not to exist" marker
                return path
        return None

    def url_of(self, filename: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo, filename, revision=self.revision)

    def check_reachable(self, *, origin: str) -> None:
        """Fail now where the Hub cannot be asked for the file: the Hub client would retry for ~45 s first.
        torch hub's downloads fail at once without a network, so URLs are left to the loader."""
        if not self.hub:
            return
        from huggingface_hub import get_hf_file_metadata, is_offline_mode
        from huggingface_hub.errors import HfHubHTTPError

        if is_offline_mode():
            raise self.missing(origin=origin, reason="HF_HUB_OFFLINE=1")
        try:  # one request, no retries (the Hub client's own fail-fast check before it falls back to its cache)
            get_hf_file_metadata(self.url_of(self.filenames[0]))
        except HfHubHTTPError:
            return  # the Hub answered (a missing alternative file, a rate limit): the loader handles it
        except Exception as error:  # connection refused, name resolution, timeout, proxy
            raise self.missing(origin=origin, reason=_reason(error)) from None

    def missing(self, *, origin: str, reason: str) -> ModelLoadError:
        if not self.hub:
            return ModelLoadError(
                f"weights {origin} are not in the torch hub cache and could not be downloaded ({reason}): "
                f"put {self.url} at {self.path}"
            )
        from huggingface_hub import constants

        filename = self.filenames[0]
        revision = f" --revision {self.revision}" if self.revision else ""
        return ModelLoadError(
            f"weights {origin} are not in the Hugging Face cache {constants.HF_HUB_CACHE} and could not be "
            f"downloaded ({reason}): they are {filename} of the hub repo {self.repo}, {self.url_of(filename)}; "
            f"where there is a network, 'hf download {self.repo} {filename}{revision}' puts them in that cache"
        )


def _timm_categories(cfg: PretrainedCfg, outputs: int) -> list[str] | None:
    """Class names from the config, else timm's ImageNet names where the class count says which subset."""
    if cfg.label_descriptions or cfg.label_names:
        names = cfg.label_descriptions or cfg.label_names
        return list(names.values() if isinstance(names, dict) else names)
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(cfg.to_dict())
    if subset is None:
        return None
    names = ImageNetInfo(subset).label_descriptions()
    return list(names) if len(names) == outputs else None


def _timm_preprocess(cfg: PretrainedCfg) -> PreprocessSpec:
    from timm.data import resolve_data_config

    config = resolve_data_config(pretrained_cfg=cfg.to_dict())
    height, width = (int(side) for side in config["input_size"][-2:])
    common = dict(
        size=(height, width),
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )
    mode = config.get("crop_mode") or "center"
    if mode == "squash":
        return PreprocessSpec(resize="stretch", **common)
    if mode == "border":
        return PreprocessSpec(resize="keep_ratio_pad", fit="within", pad="center", **common)
    # timm's transforms_factory: the shorter side to floor(side / crop_pct), then the centre crop
    return PreprocessSpec(
        resize="shorter_side_crop", resize_side=math.floor(min(height, width) / config["crop_pct"]), **common
    )


def _unusable_file(path: str, *, origin: str, error: BaseException) -> ModelLoadError:
    # The Hugging Face cache links each snapshot's file to a blob, which a new download would link again.
    real = os.path.realpath(path)
    also = f" and {real}, the file it links to," if real != os.path.abspath(path) else ""
    return ModelLoadError(
        f"{path} is not usable as weights {origin} (truncated, corrupt or of another architecture: "
        f"{_reason(error)}); delete it{also} to download it again"
    )
