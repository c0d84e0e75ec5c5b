import shutil

import pytest

from rag.config import Settings
from rag.errors import ModelNotFound
from rag.registry import list_models, resolve_embedding, resolve_llm


def test_bundled_models_are_listed_and_installed():
    specs = {s.name: s for s in list_models(Settings())}
    assert specs["smollm2"].installed and specs["smollm2"].kind == "llm"
    assert specs["smollm2"].size_bytes > 50 * 2**20
    assert specs["gemma3-270m"].installed
    assert specs["all-minilm-l6-v2"].kind == "embedding"


def test_resolve_by_name_and_by_path():
    spec = resolve_llm("smollm2", Settings())
    assert spec.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.prompt_style == "chat"
    by_path = resolve_llm(str(spec.path), Settings())
    assert by_path.path == spec.path


def test_default_model_comes_from_the_registry():
    assert resolve_llm(None, Settings()).name == "smollm2"


def test_gemma_is_assembled_and_uses_completion_prompts():
    spec = resolve_llm("gemma3-270m", Settings())
    assert spec.prompt_style == "completion"
    with open(spec.path, "rb") as f:
        assert f.read(4) == b"GGUF"


def test_dropped_in_gguf_is_found(tmp_path):
    src = resolve_llm("smollm2", Settings()).path
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Settings().models_dir / "registry.toml", models / "registry.toml")
    (models / "my-model.gguf").symlink_to(src)
    settings = Settings(models_dir=models)
    assert "my-model" in {s.name for s in list_models(settings)}
    assert resolve_llm("my-model", settings).prompt_style == "auto"


def test_missing_model_path_names_the_fix():
    with pytest.raises(ModelNotFound, match="not found: put a GGUF file there"):
        resolve_llm("models/nothing-here.gguf", Settings())


def test_unknown_name_and_non_gguf_file(tmp_path):
    with pytest.raises(ModelNotFound, match="rag models"):
        resolve_llm("no-such-model", Settings())
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    with pytest.raises(ModelNotFound, match="not a GGUF file"):
        resolve_llm(str(fake), Settings())


def test_embedding_model_resolves_to_the_packaged_folder():
    spec = resolve_embedding("all-minilm-l6-v2", Settings())
    assert (spec.path / "model.safetensors").exists()


def test_a_models_folder_without_a_registry_uses_the_shipped_one(tmp_path):
    src = resolve_llm("smollm2", Settings()).path
    (tmp_path / "my-model.gguf").symlink_to(src)
    settings = Settings(models_dir=tmp_path)
    assert {"smollm2", "my-model"} <= {s.name for s in list_models(settings)}
    assert resolve_llm(None, settings).name == "smollm2"
