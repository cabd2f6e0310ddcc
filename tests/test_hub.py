"""Hub references, plans and downloads against the local stand-in for the Hugging Face Hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub_server import CHECKPOINT, DEFAULT_REPO, pointed_at, tiny_hub
from ltx_core import hub
from ltx_core.hub import HubError, HubRef, check_space, fetch, folder_patterns, parse_ref, plan


def test_references_in_every_form_users_copy(tmp_path, monkeypatch):
    file = HubRef(DEFAULT_REPO, CHECKPOINT)
    assert parse_ref(f"{DEFAULT_REPO}/{CHECKPOINT}") == file and parse_ref(f"{DEFAULT_REPO}/{CHECKPOINT}").bare
    assert parse_ref(f"hf://{DEFAULT_REPO}/{CHECKPOINT}") == file
    assert parse_ref(f"https://huggingface.co/{DEFAULT_REPO}/blob/main/{CHECKPOINT}") == file
    assert parse_ref(f"https://huggingface.co/{DEFAULT_REPO}/resolve/main/{CHECKPOINT}?download=true") != file
    assert parse_ref(f"hf://{DEFAULT_REPO}@refs%2Fpr%2F3/text_encoder") == HubRef(
        DEFAULT_REPO, "text_encoder", "refs/pr/3"
    )
    assert parse_ref(f"https://huggingface.co/{DEFAULT_REPO}/tree/v1/tokenizer/") == HubRef(
        DEFAULT_REPO, "tokenizer", "v1"
    )
    assert parse_ref(DEFAULT_REPO) == HubRef(DEFAULT_REPO)
    with pytest.raises(HubError, match="not a Hub reference"):
        parse_ref("hf://just-a-name")

    monkeypatch.chdir(tmp_path)
    assert parse_ref("t5xxl_fp16.safetensors") == Path("t5xxl_fp16.safetensors")  # no owner/: a local name
    assert parse_ref("./Lightricks/LTX-Video") == Path("Lightricks/LTX-Video")
    (tmp_path / "models").mkdir()
    assert parse_ref("models/ltx.safetensors") == Path("models/ltx.safetensors")  # a typo in a local folder
    (tmp_path / "Lightricks" / "LTX-Video").mkdir(parents=True)
    assert parse_ref(DEFAULT_REPO) == Path(DEFAULT_REPO)  # a local folder of that name wins


def test_folder_patterns_take_what_the_option_reads_and_the_tokenizer_beside():
    assert folder_patterns("text_encoder", "text_encoder")[:2] == [
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
    ]
    assert "tokenizer/*" in folder_patterns("text_encoder", "text_encoder")
    assert "sub/tokenizer/*" in folder_patterns("text_encoder", "sub/text_encoder")
    assert "transformer/*" in folder_patterns("checkpoint", "") and "*.safetensors" not in folder_patterns(
        "checkpoint", ""
    )


def test_plan_asks_before_anything_is_downloaded_then_fetch_survives_a_broken_download(tmp_path):
    server = tiny_hub()
    with pointed_at(server.url, tmp_path / "hf"):
        before = len(server.downloaded())
        file = plan(HubRef(DEFAULT_REPO, CHECKPOINT), "checkpoint")
        root = plan(HubRef(DEFAULT_REPO), "text_encoder")  # a diffusers repository as --text-encoder
        assert len(server.downloaded()) == before  # plans download nothing
        assert file.is_file and file.size == file.missing == server.repos[DEFAULT_REPO].files[CHECKPOINT].stat().st_size
        assert not root.is_file and all(f.startswith(("text_encoder/", "tokenizer/")) for f in root.files)
        assert len(root.files) == 7 and root.missing == root.size > 0

        server.interrupt.add(CHECKPOINT)  # the connection drops halfway: huggingface_hub tries again
        local = fetch(file)
        assert local.read_bytes() == server.repos[DEFAULT_REPO].files[CHECKPOINT].read_bytes()
        assert plan(HubRef(DEFAULT_REPO, CHECKPOINT), "checkpoint").missing == 0  # now in the cache
        folder = fetch(root)
        assert (folder / "text_encoder" / "config.json").is_file() and (folder / "tokenizer" / "spiece.model").is_file()
        assert not (folder / "model_index.json").exists()


def test_plans_that_do_not_fit_on_the_disk_are_refused(tmp_path, monkeypatch):
    with pointed_at(tiny_hub().url, tmp_path / "hf"):
        planned = plan(HubRef(DEFAULT_REPO, CHECKPOINT), "checkpoint")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
        with pytest.raises(HubError, match="only 0.00 MB is free there: free some space, or set HF_HOME"):
            check_space([planned])
    assert hub.gigabytes(5_720_000_000) == "5.72 GB"
