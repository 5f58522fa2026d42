"""Pushing MetaEmbed checkpoints to the Hugging Face Hub.

A checkpoint is pushed as a plan: the exact list of files to upload, checked for completeness first (weights,
`config.json` with `auto_map`, every code file the `auto_map` entries and their relative imports need, the
processor, the sentence-transformers files and the model card). The same plan drives the upload and the offline
test that rebuilds a repo from it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Training leftovers and local caches that never belong in a published checkpoint.
EXCLUDED_PATTERNS = (
    ".*",
    "*.tmp",
    "__pycache__",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "checkpoint-*",
    "runs",
)
REQUIRED_FILES = ("config.json", "processor_config.json", "modules.json", "README.md")


@dataclass(frozen=True)
class UploadPlan:
    """The files of a checkpoint to upload, relative to `checkpoint_dir`."""

    checkpoint_dir: Path
    files: tuple[str, ...]

    def total_bytes(self) -> int:
        return sum((self.checkpoint_dir / name).stat().st_size for name in self.files)


def _excluded(relative: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in EXCLUDED_PATTERNS)


def _relative_imports(source: Path) -> set[str]:
    text = source.read_text(encoding="utf-8")
    return {f"{name}.py" for name in re.findall(r"^\s*from \.(\w+) import", text, flags=re.MULTILINE)}


def _required_code_files(checkpoint_dir: Path, files: set[str]) -> set[str]:
    """Code files named by `auto_map` entries (and modules.json) plus, transitively, their relative imports."""
    modules: set[str] = set()
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        if name in files:
            auto_map = json.loads((checkpoint_dir / name).read_text()).get("auto_map", {})
            modules.update(f"{ref.split('.')[0]}.py" for ref in auto_map.values() if isinstance(ref, str))
    if "modules.json" in files:
        for entry in json.loads((checkpoint_dir / "modules.json").read_text()):
            # Built-in modules come with sentence-transformers; any other type is a file in the checkpoint.
            if not entry["type"].startswith("sentence_transformers."):
                modules.add(f"{entry['type'].rsplit('.', 1)[0]}.py")
    pending, needed = list(modules), set()
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in files:
            pending.extend(_relative_imports(checkpoint_dir / name))
    return needed


def upload_plan(checkpoint_dir: str | os.PathLike) -> UploadPlan:
    """Lists the files to upload and checks that the checkpoint is complete.

    Raises:
        FileNotFoundError: naming every missing file, if the checkpoint lacks weights, configs, code, the processor,
            the sentence-transformers files or the model card.
        ValueError: if the weights are not safetensors or `config.json` is not a MetaEmbed config.

    Example:
        >>> plan = upload_plan("outputs/checkpoint")
        >>> "modeling_metaembed.py" in plan.files
        True
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"Checkpoint directory {checkpoint_dir} does not exist.")
    files = {
        path.relative_to(checkpoint_dir).as_posix()
        for path in checkpoint_dir.rglob("*")
        if path.is_file() and not _excluded(path.relative_to(checkpoint_dir))
    }
    missing = [name for name in REQUIRED_FILES if name not in files]
    if "config.json" in files:
        config = json.loads((checkpoint_dir / "config.json").read_text())
        if config.get("model_type") != "metaembed":
            raise ValueError(
                f"{checkpoint_dir}/config.json is not a MetaEmbed config (model_type 'metaembed')."
            )
        if not {"AutoConfig", "AutoModel"} <= set(config.get("auto_map", {})):
            missing.append("config.json auto_map entries for AutoConfig and AutoModel")
    if any(name.endswith((".bin", ".pt", ".pth")) for name in files):
        raise ValueError(
            f"{checkpoint_dir} holds pickle weights; MetaEmbed checkpoints are safetensors only."
        )
    if not any(name.endswith(".safetensors") for name in files):
        missing.append("*.safetensors weights")
    if not ({"tokenizer.json", "vocab.txt", "tokenizer.model"} & files):
        missing.append("tokenizer files (tokenizer.json, vocab.txt or tokenizer.model)")
    missing.extend(sorted(_required_code_files(checkpoint_dir, files) - files))
    if "modules.json" in files:
        for entry in json.loads((checkpoint_dir / "modules.json").read_text()):
            if entry.get("path") and not any(
                name.startswith(entry["path"].rstrip("/") + "/") for name in files
            ):
                missing.append(f"{entry['path']}/ (sentence-transformers module {entry['name']})")
    if missing:
        raise FileNotFoundError(
            f"Checkpoint {checkpoint_dir} is incomplete; missing: {', '.join(missing)}. "
            "Save it with metaembed.checkpoint.save_checkpoint and write its card with metaembed.model_cards."
        )
    return UploadPlan(checkpoint_dir=checkpoint_dir, files=tuple(sorted(files)))


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload MetaEmbed checkpoint",
    dry_run: bool = False,
) -> UploadPlan:
    """Uploads a complete checkpoint (see [`upload_plan`]) to `repo_id`, creating the repo if needed.

    Example:
        >>> push_checkpoint("outputs/checkpoint", "my-org/metaembed-minilm", private=True)
    """
    plan = upload_plan(checkpoint_dir)
    logger.info("Upload plan for %s: %d files, %.1f MB", repo_id, len(plan.files), plan.total_bytes() / 1e6)
    if dry_run:
        return plan
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(plan.checkpoint_dir),
        allow_patterns=list(plan.files),
        revision=revision,
        commit_message=commit_message,
    )
    logger.info("Pushed %s to https://huggingface.co/%s", plan.checkpoint_dir, repo_id)
    return plan


def copy_plan(plan: UploadPlan, destination: str | os.PathLike) -> Path:
    """Copies exactly the planned files to `destination` (what the Hub repo will hold)."""
    import shutil

    destination = Path(destination)
    for name in plan.files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plan.checkpoint_dir / name, target)
    return destination


__all__ = ["UploadPlan", "copy_plan", "push_checkpoint", "upload_plan"]
