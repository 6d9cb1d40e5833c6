"""LocalHub's Spaces: the settings huggingface_hub sets and reads (`hf-summary share`'s tests come with it)."""

from __future__ import annotations

import pytest

from hf_summary.testing import LocalHub


def test_local_hub_serves_the_spaces_api(hub: LocalHub, repo_id: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    space = repo_id
    api.create_repo(space, repo_type="space", space_sdk="docker", private=True,
                    space_variables=[{"key": "RUNS", "value": "tensorboard"}])
    api.create_repo(space, repo_type="space", space_sdk="docker", exist_ok=True)  # a second time: no error
    api.add_space_secret(space, "HF_TOKEN", "hf_secret_value")
    assert set(api.add_space_variable(space, "MODE", "live")) == {"RUNS", "MODE"}
    assert api.get_space_variables(space)["RUNS"].value == "tensorboard"
    secrets = api.get_space_secrets(space)
    assert set(secrets) == {"HF_TOKEN"}
    assert hub.space_settings(space)["secrets"]["HF_TOKEN"]["value"] == "hf_secret_value"
    info = api.space_info(space)
    assert (info.sdk, info.private) == ("docker", True)
    assert api.get_space_runtime(space).stage == "NO_APP_FILE"
    api.upload_file(path_or_fileobj=b"FROM python\n", path_in_repo="Dockerfile", repo_id=space, repo_type="space")
    assert api.get_space_runtime(space).stage == "SLEEPING"
    api.delete_space_secret(space, "HF_TOKEN")
    assert api.get_space_secrets(space) == {}
    with pytest.raises(HfHubHTTPError) as refused:  # secrets are set by those who can write to the Space
        api.add_space_secret(space, "OTHER", "value", token=False)
    assert refused.value.response.status_code in (401, 404)
    api.delete_repo(space, repo_type="space")
    assert hub.space_settings(space)["sdk"] is None  # a Space created again with this name starts afresh
