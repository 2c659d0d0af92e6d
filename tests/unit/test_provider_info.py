"""The provider info lists exactly what the package defines: every operator, sensor, trigger, hook and
extra link module (Airflow's providers list and the docs read it), and no module that is not there."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import mlops_provider
from mlops_provider.get_provider_info import get_provider_info


def _defined(base: type) -> dict[str, set[str]]:
    """module -> names of the classes defined in it that subclass ``base`` (abstract ones included)."""
    found: dict[str, set[str]] = {}
    for module_info in pkgutil.walk_packages(mlops_provider.__path__, "mlops_provider."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, base) and value.__module__ == module.__name__
                    and not name.startswith("_")):
                found.setdefault(module.__name__, set()).add(name)
    return found


def _listed(kind: str) -> set[str]:
    return {m for entry in get_provider_info()[kind] for m in entry["python-modules"]}


def test_every_operator_sensor_trigger_and_hook_module_is_listed() -> None:
    from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

    sensors = _defined(BaseSensorOperator)
    # operators.base holds the stages' base class (for custom stages), not an operator to use as is
    operators = {m: names for m, names in _defined(BaseOperator).items()
                 if m not in sensors and m != "mlops_provider.operators.base"}
    assert set(operators) == _listed("operators")
    assert set(sensors) == _listed("sensors")
    assert set(_defined(BaseTrigger)) == _listed("triggers")
    assert set(_defined(BaseHook)) == _listed("hooks")
    links = {f"{m}.{n}" for m, names in _defined(BaseOperatorLink).items() for n in names}
    assert links == set(get_provider_info()["extra-links"])
    (connection,) = get_provider_info()["connection-types"]
    module, _, hook = connection["hook-class-name"].rpartition(".")
    assert hook in _defined(BaseHook)[module]


def test_the_connection_form_is_the_hook_form() -> None:
    """One definition: the hook's widgets (Airflow < 3.2) and the provider info's fields (3.2+)."""
    from mlops_provider.hooks.mlflow import MLflowHook

    (connection,) = get_provider_info()["connection-types"]
    fields = connection["conn-fields"]
    widgets = MLflowHook.get_connection_form_widgets()
    assert set(fields) == set(widgets)
    for name, widget in widgets.items():
        assert str(widget.args[0]) == fields[name]["label"]
        assert widget.kwargs["description"] == fields[name]["description"]
    behaviour = MLflowHook.get_ui_field_behaviour()
    assert connection["ui-field-behaviour"] == {
        "hidden-fields": behaviour["hidden_fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }
