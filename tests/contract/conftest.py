"""Session fixtures of the contract suite: tiny folders, a tiny dataset and two-step trainings,
each made once and only when a test asks for it (running one contract builds only what it needs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.helpers import TinyModels, Trainings
from test_train_helpers import make_dataset


@pytest.fixture(scope="session")
def contract_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("contract-models"))


@pytest.fixture(scope="session")
def contract_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("contract-data"), images=3, videos=1)


@pytest.fixture(scope="session")
def trainings(tmp_path_factory, contract_models, contract_dataset) -> Trainings:
    return Trainings(tmp_path_factory.mktemp("contract-train"), contract_models, contract_dataset)
