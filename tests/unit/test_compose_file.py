"""docker-compose.yml is a valid Compose file whose product services speak the product's variables."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from streams.config import Settings
from tests.conftest import ROOT

INFRA_SERVICES = {"kafka", "postgres", "jaeger"}


def resolved_compose() -> dict:
    """The file as Debian's docker-compose resolves and validates it against the Compose schema."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is needed to validate the file; infra/test installs it"
    result = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_validates_against_the_compose_schema() -> None:
    config = resolved_compose()
    assert INFRA_SERVICES <= set(config["services"])


def test_every_variable_a_product_service_sets_is_one_the_configuration_knows() -> None:
    known = {name.upper() for name in Settings.model_fields}
    services = resolved_compose()["services"]
    product = {name: svc for name, svc in services.items() if name not in INFRA_SERVICES}
    assert product, "the product's own processes are in the file"
    for name, service in product.items():
        assert "build" in service, f"{name} is built from the repository's Dockerfile"
        for variable in service.get("environment", {}):
            assert variable in known or variable.startswith("OTEL_"), f"{name} sets unknown {variable}"


def test_every_long_running_service_has_a_health_check_that_runs_a_command() -> None:
    services = resolved_compose()["services"]
    for name, service in services.items():
        if name == "migrate":
            continue  # a one-shot job
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
