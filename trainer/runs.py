"""The pipeline's steps over a training run's directory (`trainer.rundir`), each runnable on
its own.

A step reads what the steps before it wrote and refuses, with the command to run, when that
is missing. `run_all` skips steps whose outputs exist, so re-running a killed run resumes it
(training continues from its last checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from hosting.model_config import ENTRY_POINT
from registry.db import RegistryDatabase
from registry.manifest import VersionRef
from registry.schemas import VersionPublic
from trainer.checkpoint import load_model
from trainer.data.pipeline import build_dataset, load_dataset
from trainer.data.report import render
from trainer.distill import DistillConfig
from trainer.export_onnx import check_parity, export_onnx
from trainer.provenance import code_revision
from trainer.publish import ArtifactSource, PublishRequest, publish
from trainer.quantize import build_tensorrt_engine, compare_quantized, export_qdq, quantize
from trainer.rundir import Run, StepError
from trainer.tokenizer import encode_corpus, load_tokenizer, save_tokenizer, train_tokenizer
from trainer.train import train


def step_data(run: Run, console: Console) -> None:
    """Clean, hash and split the inputs; train the tokenizer (or take the teacher's); encode."""
    spec, preset = run.spec(), run.preset()
    dataset = build_dataset(inputs=spec.inputs, out_dir=run.data_dir, options=preset.data)
    render(console, dataset.report)
    if spec.teacher is not None:
        tokenizer = load_tokenizer(Path(spec.teacher["tokenizer"]))
        save_tokenizer(tokenizer, run.tokenizer)
    else:
        tokenizer = train_tokenizer(texts=dataset.train, vocab_size=preset.vocab_size)
        save_tokenizer(tokenizer, run.tokenizer)
    run.ids_dir.mkdir(exist_ok=True)
    train_ids = encode_corpus(tokenizer=tokenizer, texts=dataset.train)
    val_ids = encode_corpus(tokenizer=tokenizer, texts=dataset.val)
    context = preset.model_config(tokenizer.get_vocab_size()).context_length
    if len(val_ids) <= context + 1 or len(train_ids) <= context + 1:
        raise StepError(
            f"too little text: {len(train_ids)} training and {len(val_ids)} validation tokens "
            f"cannot fill one window of {context}; give more data"
        )
    np.save(run.ids_dir / "train.npy", train_ids)
    np.save(run.ids_dir / "val.npy", val_ids)
    console.print(
        f"tokenizer: {tokenizer.get_vocab_size():,} tokens; "
        f"{len(train_ids):,} training and {len(val_ids):,} validation tokens"
    )


def step_train(
    run: Run, console: Console, *, device: str = "auto", resume: bool = True
) -> dict[str, Any]:
    spec, preset = run.spec(), run.preset()
    train_ids, val_ids = run.ids()
    vocab = load_tokenizer(run.require(run.tokenizer, "data")).get_vocab_size()
    teacher = load_model(Path(spec.teacher["weights"])) if spec.teacher else None
    result = train(
        config=preset.training,
        model_config=preset.model_config(vocab),
        train_ids=train_ids,
        val_ids=val_ids,
        run_dir=run.path,
        resume=resume,
        teacher=teacher,
        distill=DistillConfig(**spec.teacher.get("distill", {})) if spec.teacher else None,
        device=device,
    )
    console.print(
        f"trained {result.steps:,} steps ({result.stopped_by} budget) in "
        f"{result.elapsed_s:.0f} s at {result.tokens_per_s:,.0f} tokens/s, "
        f"{result.precision} on {result.device}: "
        f"validation loss {result.val_loss:.3f}, perplexity {result.val_perplexity:.1f}"
    )
    return asdict(result)


def step_export(run: Run, console: Console) -> dict[str, Any]:
    model = load_model(run.require(run.weights, "train"))
    onnx_path = export_onnx(model=model, out_path=run.export_dir / "model.onnx")
    report = check_parity(model=model, onnx_path=onnx_path)
    summary = {
        "max_abs_diff": report.max_abs_diff,
        "tolerance": report.tolerance,
        "cases": report.cases,
    }
    (run.export_dir / "parity.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(
        f"exported ONNX; ONNX Runtime matches PyTorch to {report.max_abs_diff:.2g} "
        f"(limit {report.tolerance:g})"
    )
    return summary


def step_quantize(run: Run, console: Console) -> dict[str, Any]:
    fp32 = run.require(run.export_dir / "model.onnx", "export")
    _, val_ids = run.ids()
    context = load_model(run.require(run.weights, "train")).config.context_length
    int8 = quantize(fp32_path=fp32, int8_path=run.export_dir / "model.int8.onnx")
    metrics = compare_quantized(fp32_path=fp32, int8_path=int8, val_ids=val_ids, context=context)
    qdq = export_qdq(
        fp32_path=fp32, out_path=run.export_dir / "model.qdq.onnx", calibration_ids=val_ids
    )
    trt = build_tensorrt_engine(qdq_path=qdq, out_path=run.export_dir / "model.plan")
    summary = {**asdict(metrics), "tensorrt": asdict(trt)}
    (run.export_dir / "quantization.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(
        f"INT8: {metrics.size_ratio:.2f}x the size, "
        f"{metrics.decode_speed_ratio:.2f}x the decode speed, "
        f"perplexity {metrics.fp32_val_perplexity:.2f} -> {metrics.int8_val_perplexity:.2f} "
        f"({metrics.perplexity_change:+.2%})"
    )
    console.print(
        f"TensorRT engine built (TensorRT {trt.tensorrt_version}, "
        f"compute capability {trt.compute_capability})"
        if trt.built
        else f"TensorRT engine skipped: {trt.reason}"
    )
    return summary


def step_publish(
    run: Run, console: Console, *, db: RegistryDatabase, repository: Path
) -> VersionPublic:
    spec, preset = run.spec(), run.preset()
    result = json.loads(run.require(run.result, "train").read_text())
    parity = json.loads(run.require(run.export_dir / "parity.json", "export").read_text())
    quant = json.loads(run.require(run.export_dir / "quantization.json", "quantize").read_text())
    dataset = load_dataset(run.data_dir)
    files = {
        "model.onnx": ArtifactSource(run.export_dir / "model.onnx", "onnx"),
        "model.int8.onnx": ArtifactSource(run.export_dir / "model.int8.onnx", "onnx-int8"),
        "model.qdq.onnx": ArtifactSource(run.export_dir / "model.qdq.onnx", "onnx-qdq"),
        "model.pt": ArtifactSource(run.weights, "pytorch"),
        "tokenizer.json": ArtifactSource(run.tokenizer, "tokenizer"),
        "model.py": ArtifactSource(ENTRY_POINT, "triton-python"),
    }
    if quant["tensorrt"]["built"]:
        files["model.plan"] = ArtifactSource(run.export_dir / "model.plan", "tensorrt")
    vocab = load_tokenizer(run.tokenizer).get_vocab_size()
    hyperparameters = {
        **preset.to_dict(),
        "model": preset.model_config(vocab).to_dict(),
        "world_size": result["world_size"],
        "precision": result["precision"],
    }
    if spec.teacher:
        hyperparameters["distill"] = spec.teacher.get("distill", {})
    metrics = {
        "val_loss": result["val_loss"],
        "val_perplexity": result["val_perplexity"],
        "train_loss": result["train_loss"],
        "steps": result["steps"],
        "tokens_seen": result["tokens_seen"],
        "train_seconds": round(result["elapsed_s"], 2),
        "train_tokens_per_s": round(result["tokens_per_s"], 1),
        "stopped_by": result["stopped_by"],
        "parameters": result["parameters"],
        "onnx_max_abs_diff": parity["max_abs_diff"],
        **{f"quant_{k}": v for k, v in quant.items() if k != "tensorrt"},
        "tensorrt": quant["tensorrt"],
    }
    parent = (
        VersionRef(model=spec.teacher["model"], version=spec.teacher["version"])
        if spec.teacher
        else None
    )
    version = publish(
        db=db,
        repository=repository,
        request=PublishRequest(
            model=spec.model,
            files=files,
            dataset_sha256=dataset.sha256,
            dataset_uri=dataset.source_uri,
            data_report=dataset.report.model_dump(mode="json"),
            hyperparameters=hyperparameters,
            metrics=metrics,
            code_revision=code_revision(),
            parent=parent,
            tags={"preset": spec.preset, "run": run.path.name},
            created_by="trainer",
        ),
    )
    run.published.write_text(
        json.dumps({"model": version.model, "version": version.version}) + "\n"
    )
    where = repository / version.model / str(version.version)
    console.print(f"published {version.model} v{version.version} into {where}")
    return version
